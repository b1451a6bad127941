"""Natural corruptions (CIFAR-10-C, Hendrycks & Dietterich 2019): reading the released files, and
generating a subset of them from a run's own test images.

Released files (``--corruptions PATH``): ``<corruption>.npy`` of uint8 images [50000, 32, 32, 3] (severities
1-5, 10,000 images each, in that order) and ``labels.npy`` [50000]. Every file is checked before use.

Generated (no ``--corruptions``): the corruptions below, written from the formulas and per-severity
parameters of the released generator (hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py; its
code is not used), applied to the run's test images with a seeded generator, stored as uint8 like the
released files, and cached under ``~/.cache/lure-fast/corruptions`` (keyed by the images, the seed and
this module's version). Everything generated is labelled "generated".

Not generated yet (they need the released files): ``MISSING``.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings

import numpy as np

from .checkpoint import RunError

ALL = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
       "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
       "speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES = 5
PER_SEVERITY = 10_000
VERSION = 1  # of the generated files: change it when a formula changes, and the cache is rebuilt

# make_cifar_c.py's per-severity parameters (severity 1..5)
PARAMS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),      # std of additive noise
    "shot_noise": (500, 250, 100, 75, 50),                 # Poisson rate: poisson(x * c) / c
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),       # salt-and-pepper amount
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),         # x + x * N(0, c)
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),            # sigma
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),             # added to HSV value
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),               # (x - mean) * c + mean
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),  # HSV saturation * a + b
    "jpeg_compression": (80, 65, 58, 50, 40),              # JPEG quality
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),             # box-downscale factor, then box-upscale
}
GENERATED = tuple(c for c in ALL if c in PARAMS)
MISSING = tuple(c for c in ALL if c not in PARAMS)
MISSING_TEXT = ("generated corruptions cover " + ", ".join(GENERATED) + "; not generated yet (pass the released "
                "CIFAR-10-C with --corruptions PATH for them): " + ", ".join(MISSING))


class CorruptionError(RunError):
    """Bad corruption files: one line naming the file and the fix."""


# --------------------------------------------------------------------------- the released files


def check_corruptions(path: str) -> list[str]:
    """The corruptions present in the released-format folder ``path``, every file's shape and dtype checked
    (memory-mapped, nothing read whole). One line for a missing folder, missing labels, a wrong shape."""
    if not os.path.isdir(path):
        raise CorruptionError(f"--corruptions {path}: no such folder; pass the CIFAR-10-C folder "
                              "(<corruption>.npy and labels.npy)")
    n = SEVERITIES * PER_SEVERITY
    labels = os.path.join(path, "labels.npy")
    if not os.path.isfile(labels):
        raise CorruptionError(f"--corruptions {path}: labels.npy is missing; copy it from the CIFAR-10-C release")
    lab = _open(labels)
    if lab.shape != (n,):
        raise CorruptionError(f"{labels}: shape {lab.shape}, expected ({n},) (5 severities x 10,000 labels)")
    if lab.min() < 0 or lab.max() > 9:
        raise CorruptionError(f"{labels}: labels outside 0-9; this is not CIFAR-10-C's labels.npy")
    found = []
    for c in ALL:
        f = os.path.join(path, f"{c}.npy")
        if not os.path.isfile(f):
            continue
        a = _open(f)
        if a.shape != (n, 32, 32, 3) or a.dtype != np.uint8:
            raise CorruptionError(f"{f}: shape {a.shape} {a.dtype}, expected ({n}, 32, 32, 3) uint8 "
                                  "(5 severities x 10,000 images); replace it with the released file")
        found.append(c)
    if not found:
        raise CorruptionError(f"--corruptions {path}: no <corruption>.npy there (e.g. gaussian_noise.npy); "
                              "pass the CIFAR-10-C folder")
    return found


def _open(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise CorruptionError(f"{path}: not a readable .npy file ({e}); replace it with the released file") from None


def released(path: str, name: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """Images [10000, 32, 32, 3] uint8 and labels of ``name`` at ``severity`` from the released files."""
    sl = slice((severity - 1) * PER_SEVERITY, severity * PER_SEVERITY)
    return (np.asarray(_open(os.path.join(path, f"{name}.npy"))[sl]),
            np.asarray(_open(os.path.join(path, "labels.npy"))[sl]).astype(np.int64))


# --------------------------------------------------------------------------- generating them


def corrupt(images: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``images`` (uint8 [N, H, W, C], C = 3 or 1) corrupted by ``name`` at ``severity`` (1-5), as uint8
    (truncated, as the released generator saves them)."""
    if name not in PARAMS:
        raise CorruptionError(f"corruption {name}: not generated ({MISSING_TEXT})")
    if not 1 <= severity <= SEVERITIES:
        raise CorruptionError(f"severity {severity}: must be 1-5")
    c = PARAMS[name][severity - 1]
    x = images.astype(np.float64) / 255.0
    if name == "gaussian_noise":
        y = x + rng.normal(size=x.shape, scale=c)
    elif name == "shot_noise":
        y = rng.poisson(x * c) / c
    elif name == "impulse_noise":  # each value: with probability c, salt (1) or pepper (0), half each
        y = x.copy()
        hit = rng.random(x.shape) < c
        salt = rng.random(x.shape) < 0.5
        y[hit & salt], y[hit & ~salt] = 1.0, 0.0
    elif name == "speckle_noise":
        y = x + x * rng.normal(size=x.shape, scale=c)
    elif name == "gaussian_blur":  # scikit-image's gaussian: mode 'nearest', truncate 4, per channel
        from scipy.ndimage import gaussian_filter
        y = gaussian_filter(x, sigma=(0, c, c, 0), mode="nearest", truncate=4.0)
    elif name == "contrast":
        means = x.mean(axis=(1, 2), keepdims=True)
        y = (x - means) * c + means
    elif name in ("brightness", "saturate"):
        from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
        rgb = np.repeat(x, 3, axis=3) if x.shape[3] == 1 else x
        hsv = rgb_to_hsv(rgb)
        if name == "brightness":
            hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        else:
            hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
        y = hsv_to_rgb(hsv)
        if x.shape[3] == 1:
            y = y.mean(axis=3, keepdims=True)
    else:  # jpeg_compression, pixelate: through PIL, as the generator
        return np.stack([_pil(im, name, c) for im in images])
    return np.uint8(np.clip(y, 0, 1) * 255)


def _pil(im: np.ndarray, name: str, c) -> np.ndarray:
    from PIL import Image
    gray = im.shape[2] == 1
    img = Image.fromarray(im[..., 0] if gray else im)
    if name == "jpeg_compression":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=c)
        img = Image.open(buf)
        img.load()
    else:
        h, w = im.shape[:2]
        img = img.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
    a = np.asarray(img, dtype=np.uint8)
    return a[..., None] if gray else a


def generated(images: np.ndarray, name: str, severity: int, seed: int, cache_dir: str | None = None) -> np.ndarray:
    """``corrupt`` of ``images`` with a generator seeded by (seed, corruption, severity), cached on disk."""
    key = hashlib.sha256(images.tobytes()).hexdigest()[:16]
    cache = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "lure-fast", "corruptions")
    path = os.path.join(cache, f"v{VERSION}-{key}-seed{seed}", f"{name}-{severity}.npy")
    if os.path.isfile(path):
        try:
            a = np.load(path, allow_pickle=False)
            if a.shape == images.shape and a.dtype == np.uint8:
                return a
        except (ValueError, OSError):
            pass  # damaged: made again
    rng = np.random.default_rng([seed, ALL.index(name), severity])
    a = corrupt(images, name, severity, rng)
    from .loaders import DataError
    from .loaders.space import require_space
    try:
        require_space(cache, a.nbytes + (1 << 16), f"caching the generated corruption {name}-{severity}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npy"
        np.save(tmp, a)
        os.replace(tmp, path)
    except DataError as e:  # no room: go on without the cache
        warnings.warn(f"{e}; not cached, the next evaluation generates it again", stacklevel=2)
    except OSError:
        pass  # a cache that cannot be written: the next evaluation generates again
    return a


# --------------------------------------------------------------------------- accuracy


def corruption_accuracy(subject, dataset, backend, path: str | None, seed: int, batch_size: int,
                        progress: bool = True) -> dict:
    """Accuracy (percent) per corruption and severity, and the mean over all of them: on the released
    files when ``path`` is given, else on corruptions generated from the run's test images."""
    import torch
    from .evaluate import bar, counts
    dev = subject.device
    if path is not None:
        names, source = check_corruptions(path), "released"
        if subject.meta["image_shape"] != [3, 32, 32] or subject.meta["classes"] != 10:
            raise CorruptionError(f"--corruptions {path}: CIFAR-10-C is 10 classes of 3x32x32 images; the model "
                                  f"in {subject.folder} is not")
    else:
        names, source = list(GENERATED), "generated"
        imgs_t, labels_t = backend.tensors["test"]
        clean = imgs_t.permute(0, 2, 3, 1).cpu().numpy()
        labels = labels_t.cpu().numpy().astype(np.int64)
    acc = {}
    with bar(len(names) * SEVERITIES, f"corruptions {subject.method} seed {subject.seed}") as pb:
        for name in names:
            acc[name] = {}
            for s in range(1, SEVERITIES + 1):
                if path is not None:
                    imgs, labels = released(path, name, s)
                else:
                    imgs = generated(clean, name, s, seed)
                x_all = torch.from_numpy(imgs).permute(0, 3, 1, 2)
                y_all = torch.from_numpy(labels)

                def batches():
                    for i in range(0, len(y_all), batch_size):
                        yield (x_all[i:i + batch_size].to(dev).float().div_(255),
                               y_all[i:i + batch_size].to(dev))
                acc[name][str(s)] = counts(subject.model, batches(), subject.autocast, dev)["acc"]
                pb.update(1)
    mean = float(np.mean([v for d in acc.values() for v in d.values()]))
    return {"source": source, "accuracy": acc, "mean": mean, "corruptions": names,
            "missing": [] if path is not None else list(MISSING)}
