"""Sources: read a dataset from where it lives into decoded uint8 arrays.

Layouts understood (``detect_layout``):
  * ``digits``      scikit-learn's handwritten digits (1,797 real 8x8 images, shipped inside the
                    installed scikit-learn package): the embedded default, needs no files.
  * ``cifar10``     torchvision's ``cifar-10-batches-py`` folder (or its parent).
  * ``cifar100``    torchvision's ``cifar-100-python`` folder (or its parent); fine labels.
  * ``imagefolder`` ``ROOT/train/<class>/*.{jpg,png,...}`` and ``ROOT/test/<class>/...``.

Every reader returns a :class:`Dataset` whose splits hold ``images`` as a uint8 tensor
``[N, H, W, C]`` and ``labels`` as an int64 tensor ``[N]``, in a fixed, documented order.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
LAYOUTS = ("digits", "cifar10", "cifar100", "imagefolder")
DIGITS_TEST_SIZE = 297  # 1,797 digits -> 1,500 train + 297 held-out test


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, H, W, C]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Dataset:
    name: str
    layout: str
    train: Split
    test: Split
    classes: list[str]
    source: str = ""  # absolute path, or "" for the embedded data
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, h, w, c = self.train.images.shape
        return int(c), int(h), int(w)


# --------------------------------------------------------------------------- detection

def _cifar_dir(path: str, folder: str) -> str | None:
    if os.path.basename(os.path.normpath(path)) == folder and os.path.isdir(path):
        return path
    inner = os.path.join(path, folder)
    return inner if os.path.isdir(inner) else None


def detect_layout(path: str) -> str:
    """Name the layout of the folder at ``path`` or raise :class:`DataError` saying what was expected."""
    if not os.path.exists(path):
        raise DataError(f"--data {path}: no such file or folder; pass the folder that holds the dataset")
    if not os.path.isdir(path):
        raise DataError(f"--data {path}: is a file, not a folder; pass the folder that holds the dataset")
    if _cifar_dir(path, "cifar-10-batches-py"):
        return "cifar10"
    if _cifar_dir(path, "cifar-100-python"):
        return "cifar100"
    entries = [e for e in os.listdir(path) if not e.startswith(".")]
    if not entries:
        raise DataError(f"--data {path}: the folder is empty; it should hold train/ and test/ class folders "
                        "(ImageFolder) or torchvision's cifar-10-batches-py / cifar-100-python")
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        return "imagefolder"
    raise DataError(f"--data {path}: unknown dataset layout (found {', '.join(sorted(entries)[:5])}); expected "
                    "train/<class>/ and test/<class>/ image folders, cifar-10-batches-py or cifar-100-python")


# --------------------------------------------------------------------------- readers

def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
                 torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def read_digits() -> Dataset:
    """scikit-learn's digits: 8x8 grey images with values 0..16, scaled to 0..255, one channel.
    A fixed permutation (seed 0) puts 297 images in the held-out test split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # [N, 8, 8, 1]
    order = np.random.default_rng(0).permutation(len(images))
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    return Dataset("digits", "digits", _split(images[train], d.target[train]),
                   _split(images[test], d.target[test]), [str(c) for c in range(10)])


def _unpickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise DataError(f"{path}: missing; the CIFAR folder is incomplete, download it again") from None
    except Exception as e:  # truncated or foreign file
        raise DataError(f"{path}: cannot be read ({type(e).__name__}); the CIFAR folder is damaged, download it again") from None


def _cifar_images(d: dict) -> np.ndarray:
    return np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _cifar_fields(path: str, d: dict, label_key: str) -> tuple[np.ndarray, list]:
    """Images and labels of one unpickled CIFAR batch, or one DataError line if it is malformed."""
    try:
        return _cifar_images(d), list(d[label_key])
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path}: not a CIFAR batch ({type(e).__name__}: {e}); download the dataset again") from None


def read_cifar10(path: str) -> Dataset:
    root = _cifar_dir(path, "cifar-10-batches-py")
    if root is None:
        raise DataError(f"--data {path}: no cifar-10-batches-py folder here")
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    parts = [_cifar_fields(n, _unpickle(os.path.join(root, n)), "labels") for n in names]
    meta = _unpickle(os.path.join(root, "batches.meta"))
    train = _split(np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]))
    return Dataset("cifar10", "cifar10", train, _split(*parts[5]), list(meta.get("label_names", range(10))),
                   os.path.abspath(root))


def read_cifar100(path: str) -> Dataset:
    root = _cifar_dir(path, "cifar-100-python")
    if root is None:
        raise DataError(f"--data {path}: no cifar-100-python folder here")
    train, test = (_cifar_fields(n, _unpickle(os.path.join(root, n)), "fine_labels") for n in ("train", "test"))
    meta = _unpickle(os.path.join(root, "meta"))
    return Dataset("cifar100", "cifar100", _split(*train), _split(*test),
                   list(meta.get("fine_label_names", range(100))), os.path.abspath(root))


def list_imagefolder(root: str, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names (sorted folder names) and (file, label) pairs of one ImageFolder split."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such folder; an ImageFolder dataset needs train/ and test/ class folders")
    found = sorted(e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)) and not e.startswith("."))
    if not found:
        raise DataError(f"{root}: holds no class folders; put each class's images in {root}/<class>/")
    if classes is not None and found != classes:
        only_here = sorted(set(found) - set(classes))
        missing = sorted(set(classes) - set(found))
        raise DataError(f"{root}: class folders differ from train/ (extra: {only_here or '-'}, missing: "
                        f"{missing or '-'}); train and test must hold the same classes")
    samples = []
    for label, c in enumerate(found):
        folder = os.path.join(root, c)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(f"{folder}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            "add images or remove the folder")
        samples += [(os.path.join(folder, f), label) for f in files]
    return found, samples


def decode_image(path: str, size: int | None = None, channels: int = 3) -> np.ndarray | None:
    """Decode one file to uint8 [H, W, C]; ``None`` if it is unreadable or truncated."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except Exception:
        return None
    return a if a.ndim == 3 else a[..., None]


def decoded_cache_root() -> Path:
    """Where decoded ImageFolder splits are cached: ``$LURE_FAST_DECODED_CACHE`` or ~/.cache/lure-fast/decoded."""
    env = os.environ.get("LURE_FAST_DECODED_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lure-fast" / "decoded"


def _decode_chunk(args) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    paths, size, shape = args
    out = np.zeros((len(paths), *shape), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    mismatch = None
    for k, p in enumerate(paths):
        a = decode_image(p, size, shape[2])
        if a is None:
            continue
        if a.shape != shape:
            mismatch = mismatch or (p, a.shape)
            continue
        out[k], ok[k] = a, True
    return out, ok, mismatch


def _fingerprint(tag: str, size: int | None, samples: list[tuple[str, int]], root: str) -> str:
    """Key of a decoded split: the real path of ``root`` (the split's folder), and each file's path
    relative to it, label, size and mtime; so every spelling of one folder (relative, ``..``, a symlink)
    gives one key. A file that cannot be stat-ed (a dangling link, deleted since listing) counts as missing."""
    real = os.path.realpath(root)
    h = hashlib.sha256(f"{tag} v2 {size} {real}".encode())
    prefix = os.path.join(root, "")
    for path, label in samples:
        rel = path[len(prefix):] if path.startswith(prefix) else os.path.realpath(path)
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}\0{st.st_mtime_ns}"
        except OSError:  # decode_image skips it too
            stamp = "missing"
        h.update(f"{rel}\0{label}\0{stamp}\n".encode())
    return h.hexdigest()[:16]


def _warn_skipped(where: str, skipped: int, first_bad: str) -> None:
    if skipped:
        warnings.warn(f"{where}: skipped {skipped} unreadable image(s), first {first_bad}", stacklevel=4)


def decode_samples(samples: list[tuple[str, int]], size: int | None, where: str, cache: Path | None = None,
                   tag: str = "imagefolder", workers: int | None = None, channels: int = 3) -> tuple[Split, int]:
    """Decode ``(path, label)`` samples of the split folder ``where`` into a :class:`Split`, in worker
    processes, and cache the result as ``.npz`` in ``cache`` keyed by ``where``'s real path and the
    files' relative paths, sizes and times (``None``: no cache). Unreadable or missing files are
    skipped with a warning, on a cache hit too; returns the split and how many were skipped.
    Without ``size`` every image must have the first one's shape."""
    cached = cache / f"{tag}-{_fingerprint(tag, size, samples, where)}.npz" if cache else None
    if cached is not None and cached.exists():
        try:
            with np.load(cached) as z:
                split, skipped, first_bad = (Split(torch.from_numpy(z["images"]), torch.from_numpy(z["labels"])),
                                             int(z["skipped"]), str(z["first_bad"]))
            _warn_skipped(where, skipped, first_bad)
            return split, skipped
        except Exception:  # truncated or foreign: decode again and overwrite
            pass
    first = next((a for a in (decode_image(p, size, channels) for p, _ in samples) if a is not None), None)
    if first is None:
        raise DataError(f"{where}: none of its {len(samples)} images could be decoded")
    chunks = [([p for p, _ in samples[i:i + 512]], size, first.shape) for i in range(0, len(samples), 512)]
    workers = workers or len(os.sched_getaffinity(0))
    if workers <= 1 or len(chunks) <= 1:
        parts = [_decode_chunk(c) for c in chunks]
    else:  # PIL decoding is CPU-bound and per file: one process per core
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(pool.map(_decode_chunk, chunks))
    bad = next((m for _, _, m in parts if m is not None), None)
    if bad is not None:
        (h, w, _), (h2, w2, _) = first.shape, bad[1]
        raise DataError(f"{bad[0]}: image is {w2}x{h2} but {w}x{h} before it; pass an image size "
                        "(--image-size) to resize them all")
    ok = np.concatenate([o for _, o, _ in parts])
    images = np.concatenate([im for im, _, _ in parts])[ok]
    labels = np.array([label for _, label in samples], dtype=np.int64)[ok]
    skipped = int((~ok).sum())
    first_bad = next((p for (p, _), good in zip(samples, ok) if not good), "")
    _warn_skipped(where, skipped, first_bad)
    if cached is not None:
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp.npz")
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, images=images, labels=labels, skipped=skipped, first_bad=first_bad)
            os.replace(tmp, cached)
        except OSError as e:  # the cache only saves time: go on without it
            warnings.warn(f"could not cache the decoded images in {cached.parent} ({e.strerror}); "
                          "the next run decodes them again", stacklevel=3)
            tmp.unlink(missing_ok=True)
    return Split(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)), skipped


def read_imagefolder(path: str, size: int | None = None, cache_dir: str | os.PathLike | bool | None = None,
                     workers: int | None = None) -> Dataset:
    """Unreadable or truncated images are skipped and counted (``meta['skipped']``) with a warning.
    Decoding runs on every core and is cached (see :func:`decode_samples`; ``cache_dir=False``: none)."""
    cache = None if cache_dir is False else (Path(cache_dir) if cache_dir else decoded_cache_root())
    classes, train_samples = list_imagefolder(os.path.join(path, "train"))
    _, test_samples = list_imagefolder(os.path.join(path, "test"), classes)
    tag = f"imagefolder-{os.path.basename(os.path.realpath(path))}"  # every spelling of the folder: one file
    train, s1 = decode_samples(train_samples, size, os.path.join(path, "train"), cache, tag + "-train", workers)
    test, s2 = decode_samples(test_samples, size, os.path.join(path, "test"), cache, tag + "-test", workers)
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(f"{path}: train images are {tuple(train.images.shape[1:])} but test images "
                        f"{tuple(test.images.shape[1:])}; pass an image size to resize both")
    name = os.path.basename(os.path.normpath(path))
    return Dataset(name, "imagefolder", train, test, classes, os.path.abspath(path),
                   {"skipped": {"train": s1, "test": s2}})


def download_cifar(name: str, root: str) -> str:
    """Fetch CIFAR-10/100 with torchvision into ``root``; a clear DataError where there is no network."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        cls(root, train=True, download=True)
        cls(root, train=False, download=True)
    except Exception as e:
        folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        raise DataError(f"could not download {name} ({type(e).__name__}); download it elsewhere and pass "
                        f"--data DIR, with DIR holding {folder} or an ImageFolder tree with train/ and test/") from None
    return root


def load_dataset(name: str | None = None, path: str | None = None, image_size: int | None = None,
                 cache_dir: str | None = None) -> Dataset:
    """Read a dataset by name and/or path (see the module docstring). ``name`` alone: ``digits`` reads
    the embedded data, ``cifar10``/``cifar100`` download through torchvision into ``cache_dir``.
    ``restricted_imagenet`` with the ImageNet folder as ``path``: see ``loaders.restricted_imagenet``."""
    if path is None:
        if name in (None, "digits"):
            return read_digits()
        if name in ("cifar10", "cifar100"):
            cache = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "lure-fast", "data")
            path = download_cifar(name, cache)
        else:
            raise DataError(f"--dataset {name}: needs --data PATH (known without a path: digits, cifar10, cifar100)")
    if name == "restricted_imagenet":
        from .restricted_imagenet import read_restricted_imagenet

        return read_restricted_imagenet(path, image_size or 32)
    layout = detect_layout(path)
    if name == "digits":
        raise DataError("--dataset digits is the embedded data and takes no --data; drop one of them")
    if name in ("cifar10", "cifar100") and layout in ("cifar10", "cifar100") and layout != name:
        raise DataError(f"--dataset {name} but --data {path} holds {layout}; make them agree")
    ds = {"cifar10": read_cifar10, "cifar100": read_cifar100}.get(layout)
    ds = ds(path) if ds else read_imagefolder(path, image_size)
    if name in ("cifar10", "cifar100") and layout == "imagefolder":
        expected = 10 if name == "cifar10" else 100
        if ds.num_classes != expected:
            raise DataError(f"--dataset {name} expects {expected} classes but {path} has {ds.num_classes}")
        ds.name = name
    return ds
