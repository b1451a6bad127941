"""Natural corruptions (CIFAR-10-C, Hendrycks & Dietterich 2019): reading the released files, and
generating all 19 of them from a run's own test images.

Released files (``--corruptions PATH``): ``<corruption>.npy`` of uint8 images [50000, 32, 32, 3] (severities
1-5, 10,000 images each, in that order) and ``labels.npy`` [50000]. Every file is checked before use.

Generated (no ``--corruptions``): every corruption, written from the formulas and per-severity parameters
of the released generator (hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py; its code is not
used), applied to the run's test images with a NumPy generator seeded per (seed, corruption, severity)
(never the global one), stored as uint8 like the released files, and cached under
``~/.cache/lure-fast/corruptions`` (keyed by the images, the seed and this module's version). Everything
generated is labelled "generated". The same processes, not the same samples: the generator drew from
NumPy's global RandomState image by image, here one seeded Generator draws for the whole batch.

Where a generated corruption is not the generator's computation exactly:

- motion_blur, and snow's snow layer: the generator blurs with ImageMagick (Wand's MotionImage,
  MagickMotionBlurImage). ImageMagick is not used here; ``_motion_blur`` approximates it with the kernel of
  MagickCore's MotionBlurImage, as the imagecorruptions package does: 2*ceil(radius)+1 taps at offsets
  (ceil(i cos a - 1/2), ceil(i sin a - 1/2)) for i = 0, 1, ..., weighted by exp(-i^2 / 2 sigma^2)
  normalised, pixels past the border repeating the edge (ImageMagick's default), rounded to 8 bits as
  ImageMagick writes them. ImageMagick's 16-bit quantum arithmetic can still move a value by one level.
- frost: the generator's own frost textures, read from the imagecorruptions package (byte-identical
  files, checked by SHA-256; its code is never imported), resized by 0.2 with OpenCV as the generator does.
- impulse noise draws salt/pepper per value with our generator (scikit-image's ``random_noise`` draws
  differently), and the HSV conversion is matplotlib's (the same formula as scikit-image's ``rgb2hsv``).
- spatter (water): where a drawn liquid layer leaves nothing after the edge filters (the generator then
  divides by zero and writes NaN), the image is left as it is.

Exact otherwise, including the generator's quirks: glass_blur's "swap" of two NumPy views copies the
neighbour into the pixel and leaves the neighbour as it was (so each pass is one gather, below); its
offsets are drawn in [-1, 0]; frost picks among the first five textures; zoom_blur's factors are
``np.arange(1, stop, 0.01)`` (7 of them at severity 1, up to 1.06); spatter's layer wraps past 255 where
the generator's uint8 cast does. Grayscale images (C = 1) go through the colour-dependent ones (frost,
spatter, brightness, saturate) as three equal channels, averaged back; snow's grey is the image itself.
Images of another size keep the CIFAR parameters in pixels (elastic_transform's are fractions of the side,
as the generator writes them: 32 x fraction); fog's fractal is the next power of two >= max(32, H, W).
"""
from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import warnings

import numpy as np

from .checkpoint import RunError

ALL = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
       "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
       "speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES = 5
PER_SEVERITY = 10_000
VERSION = 2  # of the generated files: change it when a formula changes, and the cache is rebuilt

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
    # disk kernel radius, its anti-aliasing Gaussian's sigma
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # Gaussian sigma, max_delta of the pixel shuffle, its passes
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    # motion-blur radius, sigma (the angle is drawn in [-45, 45] degrees)
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    # zoom factors np.arange(1, c, 0.01), each zoom of the centre averaged with the image
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    # snow layer N(mean, std), its zoom, threshold, motion-blur radius and sigma, the image's weight
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    # weight of the image, weight of the frost texture
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    # weight of the plasma fractal, its wibble decay
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    # displacement scale, its smoothing sigma, the affine jitter: fractions of the side (x 32 for CIFAR)
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                          (0.1, 0.03, 0.03)),
    # liquid layer N(mean, std), its smoothing sigma, threshold, intensity (mud: sigma), 0 water / 1 mud
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
}
GENERATED = ALL  # every corruption is generated; each name has its parameters above

# The generator's frost textures (ImageNet-C/create_c/frost*.{png,jpg}), as the imagecorruptions package ships
# them; frost draws from the first five (np.random.randint(5)), so frost6 is never used.
FROST_PACKAGE = "imagecorruptions==1.1.2"
FROST_FILES = {
    "frost1.png": "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    "frost2.png": "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    "frost3.png": "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    "frost4.jpg": "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    "frost5.jpg": "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
}


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
    (truncated, as the released generator saves them; motion_blur rounded, as ImageMagick writes it). Every
    random draw comes from ``rng``."""
    if name not in PARAMS:
        raise CorruptionError(f"corruption {name}: unknown; choose from {', '.join(ALL)}")
    if not 1 <= severity <= SEVERITIES:
        raise CorruptionError(f"severity {severity}: must be 1-5")
    c = PARAMS[name][severity - 1]
    if name in _BATCHED:
        return _BATCHED[name](images, c, rng)
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


# ---- the nine that the generator computes with OpenCV, SciPy's zoom, ImageMagick or its own loops, done
# for the whole batch at once. Each takes uint8 [N, H, W, C] and returns uint8.


def _u8(y: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 as the generator saves them: clipped, x 255, truncated."""
    return np.uint8(np.clip(y, 0, 1) * 255)


def _as_rgb(images: np.ndarray) -> np.ndarray:
    return np.repeat(images, 3, axis=3) if images.shape[3] == 1 else images


def _back(y: np.ndarray, channels: int) -> np.ndarray:
    """A colour result back to the input's channels: a grey input's three equal channels averaged."""
    return y.mean(axis=3, keepdims=True) if channels == 1 else y


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """The generator's defocus kernel for a radius <= 8 (every severity's): the disk x^2 + y^2 <= radius^2
    on a 17 x 17 grid, normalised, then OpenCV's 3 x 3 Gaussian of sigma ``alias_blur``, in float32; cut
    to its non-zero centre (the same filter)."""
    import cv2
    g = np.arange(-8, 9)
    xx, yy = np.meshgrid(g, g)
    d = np.array(xx ** 2 + yy ** 2 <= radius ** 2, dtype=np.float32)
    d /= d.sum()
    d = cv2.GaussianBlur(d, ksize=(3, 3), sigmaX=alias_blur)
    m = int(np.abs(np.argwhere(d != 0) - 8).max())
    return d[8 - m:8 + m + 1, 8 - m:8 + m + 1]


def _defocus_blur(images, c, rng):
    # cv2.filter2D per channel: correlation, border reflect-101 (SciPy's 'mirror')
    from scipy.ndimage import correlate
    k = _disk(*c).astype(np.float64)
    return _u8(correlate(images / 255.0, k[None, :, :, None], mode="mirror"))


def _glass_blur(images, c, rng):
    """Gaussian blur, uint8, the pixel shuffle, Gaussian blur. The generator walks h, w from the far
    corner down to max_delta + 1 and 'swaps' x[h, w] with x[h + dy, w + dx] (dy, dx drawn in [-1, 0]),
    but a swap of NumPy views only copies: x[h, w] takes its neighbour's value. That neighbour lies above
    or left of (h, w), so the walk reaches it later in the pass and every read sees the pass's input:
    one pass is one gather, the same as the walk."""
    from scipy.ndimage import gaussian_filter
    sigma, delta, passes = c
    assert delta == 1, "the gather equals the generator's walk for max_delta 1 (every severity's)"
    n, h, w, _ = images.shape
    x = np.uint8(gaussian_filter(images / 255.0, (0, sigma, sigma, 0), mode="nearest", truncate=4.0) * 255)
    rows, cols = np.arange(delta + 1, h - delta + 1), np.arange(delta + 1, w - delta + 1)
    at = np.arange(n)[:, None, None]
    for _ in range(passes if len(rows) and len(cols) else 0):
        dy, dx = rng.integers(-delta, delta, size=(2, n, len(rows), len(cols)))
        x[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = x[at, rows[:, None] + dy, cols[None, :] + dx]
    return _u8(gaussian_filter(x / 255.0, (0, sigma, sigma, 0), mode="nearest", truncate=4.0))


def _motion_blur_kernel(radius: float, sigma: float, angle: np.ndarray):
    """MagickCore's MotionBlurImage kernel: weights [taps] and integer offsets (dx, dy) [N, taps] for
    each image's angle (degrees)."""
    taps = 2 * math.ceil(radius) + 1
    i = np.arange(taps)
    k = np.exp(-(i * i) / (2.0 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)
    a = np.pi * np.asarray(angle, dtype=np.float64)[:, None] / 180.0
    px, py = taps * np.sin(a), taps * np.cos(a)
    hyp = np.hypot(px, py)
    dx = np.ceil(i * py / hyp - 0.5).astype(np.int64)
    dy = np.ceil(i * px / hyp - 0.5).astype(np.int64)
    return k / k.sum(), dx, dy


def _motion_blur(images: np.ndarray, radius: float, sigma: float, angle: np.ndarray) -> np.ndarray:
    """Approximates Wand's MotionImage.motion_blur(radius, sigma, angle) on uint8 images [N, H, W, C], one
    angle per image: s = sum_i k_i * image[y + dy_i, x + dx_i], the edge repeated past the border, then
    ImageMagick's 8 bits: s rounded at 16 bits (x 257), then truncated back to 8 (ImageMagick 6.9 Q16)."""
    k, dx, dy = _motion_blur_kernel(radius, sigma, angle)
    n, h, w, _ = images.shape
    at, ys, xs = np.arange(n)[:, None, None], np.arange(h), np.arange(w)
    out = np.zeros(images.shape)
    for i in range(len(k)):
        r = np.clip(ys[None, :] + dy[:, i, None], 0, h - 1)
        q = np.clip(xs[None, :] + dx[:, i, None], 0, w - 1)
        out += k[i] * images[at, r[:, :, None], q[:, None, :]]
    return np.uint8(np.clip(np.floor(out * 257 + 0.5), 0, 65535) // 257)


def _motion(images, c, rng):
    return _motion_blur(images, c[0], c[1], rng.uniform(-45, 45, len(images)))


def _zoom_matrix(size: int, factor: float) -> np.ndarray:
    """The generator's clipped_zoom along one axis as a matrix [size, size]: the centre ceil(size / factor)
    pixels zoomed by SciPy's order-1 zoom (the matrix is that zoom of the identity, so SciPy's own grid
    and rounding), the middle ``size`` pixels kept."""
    from scipy.ndimage import zoom
    ch = int(np.ceil(size / factor))
    top = (size - ch) // 2
    z = zoom(np.eye(ch), (factor, 1), order=1)
    trim = (z.shape[0] - size) // 2
    m = np.zeros((size, size))
    m[:, top:top + ch] = z[trim:trim + size]
    return m


def _clipped_zoom(planes: np.ndarray, factor: float) -> np.ndarray:
    """clipped_zoom of float64 planes [..., H, W] (one per image and channel), as SciPy's zoom computes it."""
    return _zoom_matrix(planes.shape[-2], factor) @ planes @ _zoom_matrix(planes.shape[-1], factor).T


def _zoom_blur(images, c, rng):
    x = (images / 255.0).astype(np.float32)
    planes = x.transpose(0, 3, 1, 2).astype(np.float64)
    factors = np.arange(1, c, 0.01)
    out = np.zeros(planes.shape, np.float32)
    for f in factors:
        out += _clipped_zoom(planes, f).astype(np.float32)  # float32, as SciPy's zoom returns it
    return _u8((x + out.transpose(0, 2, 3, 1)) / (len(factors) + 1))


def _snow(images, c, rng):
    import cv2
    mean, std, zoom, threshold, radius, sigma, weight = c
    n, h, w, ch = images.shape
    x = (images / 255.0).astype(np.float32)
    layer = _clipped_zoom(rng.normal(size=(n, h, w), loc=mean, scale=std), zoom)[..., None]
    layer[layer < threshold] = 0
    layer = _motion_blur((np.clip(layer, 0, 1) * 255).astype(np.uint8), radius, sigma,
                         rng.uniform(-135, -45, n)) / 255.0
    grey = x if ch == 1 else cv2.cvtColor(x.reshape(n * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(n, h, w, 1)
    x = weight * x + (1 - weight) * np.maximum(x, grey * 1.5 + 0.5)
    return _u8(x + layer + np.rot90(layer, k=2, axes=(1, 2)))


@functools.lru_cache(maxsize=None)
def frost_textures() -> tuple[np.ndarray, ...]:
    """The five frost textures frost draws from, RGB uint8, resized by 0.2 as make_cifar_c.py does (OpenCV,
    bilinear). Read from the installed imagecorruptions package without importing it (its __init__
    imports its own dependencies, which the lock leaves out); each file's SHA-256 checked."""
    import importlib.util
    import cv2
    spec = importlib.util.find_spec("imagecorruptions")
    where = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None
    out = []
    for fname, digest in FROST_FILES.items():
        path = os.path.join(where or "", "frost", fname)
        if where is None or not os.path.isfile(path):
            raise CorruptionError(f"frost: the frost textures are missing ({fname}); install them with "
                                  f"pip install --no-deps {FROST_PACKAGE} (requirements/lock.txt has it)")
        with open(path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise CorruptionError(f"{path}: not the generator's {fname} (SHA-256 differs); reinstall "
                                  f"{FROST_PACKAGE}")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        out.append(np.ascontiguousarray(cv2.resize(bgr, (0, 0), fx=0.2, fy=0.2)[..., ::-1]))
    return tuple(out)


def _frost(images, c, rng):
    n, h, w, ch = images.shape
    tex = frost_textures()
    small = min(min(t.shape[:2]) for t in tex)
    if h >= small or w >= small:
        raise CorruptionError(f"frost: images of {h}x{w} do not fit in the generator's frost textures at "
                              f"CIFAR's scale (under {small}x{small} pixels)")
    pick = rng.integers(0, len(tex), n)
    top = rng.integers(0, np.array([t.shape[0] - h for t in tex])[pick])
    left = rng.integers(0, np.array([t.shape[1] - w for t in tex])[pick])
    crops = np.stack([tex[p][t:t + h, s:s + w] for p, t, s in zip(pick, top, left)])
    y = np.clip(c[0] * _as_rgb(images).astype(np.float64) + c[1] * crops, 0, 255)
    return np.uint8(_back(y, ch))


def _plasma_fractal(n: int, size: int, decay: float, rng) -> np.ndarray:
    """The generator's diamond-square height maps [n, size, size] in [0, 1] (size a power of two), one per
    image: each new point the mean of its four neighbours + wibble * U(-wibble, wibble), wibble falling by
    ``decay`` a level."""
    m = np.zeros((n, size, size))
    step, wibble = size, 100.0

    def wibbled(a):
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        squares = corners + np.roll(corners, -1, axis=1)
        squares += np.roll(squares, -1, axis=2)
        m[:, half::step, half::step] = wibbled(squares)
        dr, ul = m[:, half::step, half::step], m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled((dr + np.roll(dr, 1, axis=1)) + (ul + np.roll(ul, -1, axis=2)))
        m[:, half::step, 0::step] = wibbled((dr + np.roll(dr, 1, axis=2)) + (ul + np.roll(ul, -1, axis=1)))
        step //= 2
        wibble /= decay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def _fog(images, c, rng):
    n, h, w, _ = images.shape
    x = images / 255.0
    size = 1 << (max(32, h, w) - 1).bit_length()
    top = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + c[0] * _plasma_fractal(n, size, c[1], rng)[:, :h, :w, None]
    return _u8(x * top / (top + c[0]))


def _elastic_transform(images, c, rng):
    """A random affine warp (three points jittered, OpenCV, border reflect-101), then a smooth random
    displacement field (SciPy map_coordinates, order 1, mode 'reflect')."""
    import cv2
    from scipy.ndimage import gaussian_filter, map_coordinates
    n, h, w, ch = images.shape
    side = min(h, w)
    alpha, sigma, jitter = side * c[0], side * c[1], side * c[2]
    x = (images / 255.0).astype(np.float32)
    centre, square = np.float32((h, w)) // 2, side // 3
    pts = np.float32([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    moved = pts + rng.uniform(-jitter, jitter, size=(n, 3, 2)).astype(np.float32)
    for i in range(n):
        m = cv2.getAffineTransform(pts, moved[i])
        x[i] = cv2.warpAffine(x[i], m, (w, h), borderMode=cv2.BORDER_REFLECT_101).reshape(h, w, ch)
    field = gaussian_filter(rng.uniform(-1, 1, size=(2, n, h, w)), (0, 0, sigma, sigma), mode="reflect",
                            truncate=3)
    dx, dy = (field * alpha).astype(np.float32)
    at = np.empty((3, n, h, w))  # per channel (the same field for each): image, row, column
    at[0], at[1], at[2] = np.arange(n)[:, None, None], np.arange(h)[:, None] + dy, np.arange(w) + dx
    out = np.empty_like(x)
    for k in range(ch):
        out[..., k] = map_coordinates(x[..., k], at, order=1, mode="reflect")
    return _u8(out)


def _spatter(images, c, rng):
    import cv2
    from scipy.ndimage import gaussian_filter
    mean, std, sigma, threshold, intensity, mud = c
    n, h, w, ch = images.shape
    x = (_as_rgb(images) / 255.0).astype(np.float32)
    liquid = gaussian_filter(rng.normal(size=(n, h, w), loc=mean, scale=std), (0, sigma, sigma),
                             mode="nearest", truncate=4.0)
    liquid[liquid < threshold] = 0
    if mud:
        m = gaussian_filter((liquid > threshold).astype(np.float32), (0, intensity, intensity), mode="nearest",
                            truncate=4.0)
        m[m < 0.8] = 0
        m = m[..., None]
        y = x * (1 - m) + (np.array([63, 42, 20]) / 255.0).astype(np.float32) * m  # mud brown
        return _u8(_back(np.clip(y, 0, 1), ch))
    # water: the liquid's edges (Canny), their distance map, equalised, embossed, times the liquid
    layer = (liquid * 255).astype(np.int64).astype(np.uint8)  # the generator's uint8 cast wraps past 255
    emboss = np.float32([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    m = np.empty((n, h, w), np.float32)
    for i in range(n):
        d = cv2.distanceTransform(255 - cv2.Canny(layer[i], 50, 150), cv2.DIST_L2, 5)
        d = cv2.blur(np.minimum(d, np.float32(20)), (3, 3)).astype(np.uint8)
        d = cv2.filter2D(cv2.equalizeHist(d), cv2.CV_8U, emboss)
        m[i] = layer[i] * cv2.blur(d, (3, 3)).astype(np.float32)
    top = m.max(axis=(1, 2), keepdims=True)
    m = np.divide(m, top, out=np.zeros_like(m), where=top > 0) * np.float32(intensity)
    y = x + m[..., None] * (np.array([175, 238, 238]) / 255.0).astype(np.float32)  # pale turquoise
    return _u8(_back(np.clip(y, 0, 1), ch))


_BATCHED = {"defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion,
            "zoom_blur": _zoom_blur, "snow": _snow, "frost": _frost, "fog": _fog,
            "elastic_transform": _elastic_transform, "spatter": _spatter}


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
                        progress: bool = True, images: int | None = None) -> dict:
    """Accuracy (percent) per corruption and severity, and the mean over all of them: on the released
    files when ``path`` is given, else on corruptions generated from the run's test images; ``images``:
    only the first that many of each severity (the same images for every corruption)."""
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
        clean = imgs_t.permute(0, 2, 3, 1).cpu().numpy()[:images]
        labels = labels_t.cpu().numpy().astype(np.int64)[:images]
    acc = {}
    with bar(len(names) * SEVERITIES, f"corruptions {subject.method} seed {subject.seed}") as pb:
        for name in names:
            acc[name] = {}
            for s in range(1, SEVERITIES + 1):
                if path is not None:
                    imgs, labels = released(path, name, s)
                    imgs, labels = imgs[:images], labels[:images]
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
    return {"source": source, "accuracy": acc, "mean": mean, "corruptions": names, "images": int(len(labels))}
