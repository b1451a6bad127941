"""Corruptions: the released CIFAR-10-C format checked, and the generated subset (lure_fast/corruptions.py)."""
from __future__ import annotations

import numpy as np
import pytest

from lure_fast import corruptions as K


def _images(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


# Not monotone in the generator's own parameters (each has its own test below): saturate, glass_blur (more
# blur at one pass changes less), motion_blur (a new angle per severity), frost (the image's weight falls as
# the frost's rises), elastic_transform (the affine jitter falls as the displacement field grows), spatter
# (water at 1-3, mud at 4-5).
OWN_ORDER = ("saturate", "glass_blur", "motion_blur", "frost", "elastic_transform", "spatter")
RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "elastic_transform", "spatter")


def _change(x, name, severities=range(1, 6), seed=lambda s: [7, s]):
    """Mean absolute change from the clean images at each severity."""
    return [np.abs(K.corrupt(x, name, s, np.random.default_rng(seed(s))).astype(float) - x).mean()
            for s in severities]


def _scene(n=6, seed=0):
    """Small natural-looking images: a smooth colour field, a flat rectangle, mild noise."""
    from scipy.ndimage import zoom
    r = np.random.default_rng(seed)
    x = zoom(r.uniform(0, 255, (n, 4, 4, 3)), (1, 8, 8, 1), order=1)
    for i in range(n):
        t, l = r.integers(2, 16, 2)
        x[i, t:t + 12, l:l + 10] = r.uniform(0, 255, 3)
    return np.uint8(np.clip(x + r.normal(0, 8, x.shape), 0, 255))


@pytest.mark.parametrize("name", K.GENERATED)
def test_each_generated_corruption_is_deterministic_for_a_seed_and_monotone_in_severity(name):
    x = _images()
    a = K.corrupt(x, name, 3, np.random.default_rng([7, 3]))
    b = K.corrupt(x, name, 3, np.random.default_rng([7, 3]))
    assert a.dtype == np.uint8 and a.shape == x.shape
    assert np.array_equal(a, b)
    assert np.array_equal(K.corrupt(x, name, 3, np.random.default_rng([8, 3])), a) == (name not in RANDOM)
    # grey images [N, H, W, 1] of another size too, as deterministic
    g = _images(3)[:, :8, :8, :1]
    ga = K.corrupt(g, name, 5, np.random.default_rng(1))
    assert ga.dtype == np.uint8 and ga.shape == g.shape and ga.any()
    assert np.array_equal(ga, K.corrupt(g, name, 5, np.random.default_rng(1)))
    if name in OWN_ORDER:
        return
    # the mean absolute change from the clean image grows with severity (one seed per severity, as generated)
    change = _change(x, name)
    assert all(c2 >= c1 for c1, c2 in zip(change, change[1:])), change
    assert change[4] > change[0]


def test_saturate_follows_the_generators_order():
    # the generator's own order: saturation x0.3, x0.1, then x1.5, x2 + 0.1, x2.5 + 0.2
    change = _change(_images(), "saturate")
    assert change[1] > change[0] and change[4] > change[3] > change[2]


def test_contrast_severity_one_matches_the_formula_on_a_hand_made_image():
    # contrast, severity 1, as make_cifar_c.py writes it: x / 255, (x - mean per channel) * 0.75 + mean,
    # clipped, x 255, truncated to uint8
    x = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    x[0, :16] = 200   # top half 200, bottom half 0 -> mean 100/255
    x[0, :, :, 2] = 40
    y = K.corrupt(x, "contrast", 1, np.random.default_rng(0))
    f = x[0] / 255.0
    m = f.mean(axis=(0, 1), keepdims=True)
    assert np.array_equal(y[0], np.uint8(np.clip((f - m) * 0.75 + m, 0, 1) * 255))
    assert y[0, 0, 0, 0] == 175 and y[0, 31, 0, 0] in (24, 25)  # 100 +- 75: the float rounding truncates
    assert np.isin(y[0, :, :, 2], (39, 40)).all()  # a flat channel stays (40/255*255 truncates to 39, as theirs)


def test_gaussian_noise_severity_one_matches_the_formula():
    x = np.full((1, 32, 32, 3), 128, dtype=np.uint8)
    y = K.corrupt(x, "gaussian_noise", 1, np.random.default_rng(5))
    noise = np.random.default_rng(5).normal(size=x.shape, scale=0.04)
    assert np.array_equal(y, np.uint8(np.clip(128 / 255 + noise, 0, 1) * 255))


def test_generated_files_are_cached(tmp_path):
    x = _images(3)
    a = K.generated(x, "shot_noise", 2, seed=1, cache_dir=str(tmp_path))
    files = list(tmp_path.rglob("*.npy"))
    assert len(files) == 1
    np.save(files[0], np.zeros_like(a))  # the cache is what is read back
    assert not K.generated(x, "shot_noise", 2, seed=1, cache_dir=str(tmp_path)).any()
    # another seed is another file, and the same seed in a fresh cache gives the same images
    assert np.array_equal(K.generated(x, "shot_noise", 2, seed=2, cache_dir=str(tmp_path / "b")),
                          K.generated(x, "shot_noise", 2, seed=2, cache_dir=str(tmp_path / "c")))
    assert len(list(tmp_path.rglob("*.npy"))) == 3


def _released(folder, names=("gaussian_noise",), n=50_000, shape=(32, 32, 3), labels=True):
    folder.mkdir(exist_ok=True)
    for c in names:
        np.lib.format.open_memmap(folder / f"{c}.npy", mode="w+", dtype=np.uint8, shape=(n, *shape))
    if labels:
        np.save(folder / "labels.npy", np.tile(np.arange(10, dtype=np.uint8), 5_000))
    return folder


def test_released_format_is_read_and_checked(tmp_path):
    d = _released(tmp_path / "ok", ("gaussian_noise", "fog"))
    assert K.check_corruptions(str(d)) == ["gaussian_noise", "fog"]
    imgs, labels = K.released(str(d), "fog", 2)
    assert imgs.shape == (10_000, 32, 32, 3) and labels.shape == (10_000,)
    with pytest.raises(K.CorruptionError, match="labels.npy is missing"):
        K.check_corruptions(str(_released(tmp_path / "nolabels", labels=False)))
    with pytest.raises(K.CorruptionError, match=r"expected \(50000, 32, 32, 3\)"):
        K.check_corruptions(str(_released(tmp_path / "short", n=40_000)))
    with pytest.raises(K.CorruptionError, match="no such folder"):
        K.check_corruptions(str(tmp_path / "absent"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "labels.npy").write_bytes(b"not a numpy file")
    with pytest.raises(K.CorruptionError, match="not a readable .npy"):
        K.check_corruptions(str(tmp_path / "junk"))


def test_all_nineteen_are_generated():
    assert K.GENERATED == K.ALL and len(K.ALL) == 19 and set(K.PARAMS) == set(K.ALL)
    assert all(len(v) == K.SEVERITIES for v in K.PARAMS.values())
    with pytest.raises(K.CorruptionError, match="unknown; choose from gaussian_noise"):
        K.corrupt(_images(1), "rain", 1, np.random.default_rng(0))


# ---- the nine added in version 2: formulas on hand-made images, and the order each follows in severity


def test_defocus_blur_severity_one_matches_the_formula_on_a_hand_made_image():
    # severity 1: the disk of radius 0.3 is the centre pixel alone, so the kernel is OpenCV's 3x3 Gaussian of
    # sigma 0.4: the outer product (in float32) of exp(-i^2 / (2 * 0.4^2)), i = -1, 0, 1, normalised.
    # cv2.filter2D correlates, reflecting at the border without repeating the edge (reflect-101).
    x = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    x[0, 1, 5, 0] = 200   # beside the top edge: row 0 reads it twice (once through the reflection)
    x[0, 20, 20, 1] = 255
    x[0, 31, 31, 2] = 90  # the corner
    y = K.corrupt(x, "defocus_blur", 1, np.random.default_rng(0))
    t = np.exp(-0.5 / 0.4 ** 2 * np.array([1.0, 0.0, 1.0]))
    g = (t * (1 / t.sum())).astype(np.float32)
    k = np.outer(g, g).astype(np.float64)
    f = np.pad(x[0] / 255.0, ((1, 1), (1, 1), (0, 0)), mode="reflect")  # NumPy's reflect is reflect-101
    out = np.zeros((32, 32, 3))
    for i in range(3):
        for j in range(3):
            out += k[i, j] * f[i:i + 32, j:j + 32]
    assert np.array_equal(y[0], np.uint8(np.clip(out, 0, 1) * 255))
    assert y[0, 0, 5, 0] == int(2 * k[0, 1] * (200 / 255) * 255) and y[0, 2, 5, 0] == int(k[0, 1] * 200)


def test_zoom_blur_severity_one_matches_the_formula_on_a_hand_made_image():
    from scipy.ndimage import zoom
    # the generator's clipped_zoom written out: the centre ceil(32 / z) pixels zoomed by z (SciPy, order 1),
    # the middle 32 kept; the image averaged with its zooms z in np.arange(1, 1.06, 0.01), in float32
    yy, xx = np.mgrid[:32, :32]
    img = np.stack([yy * 8, xx * 8, (yy // 4 + xx // 4) % 2 * 255], axis=2).astype(np.uint8)  # ramps, checkers
    y = K.corrupt(img[None], "zoom_blur", 1, np.random.default_rng(0))
    factors = np.arange(1, 1.06, 0.01)
    assert len(factors) == 7 and factors[-1] > 1.059  # np.arange's rounding takes 1.06 in
    f = (img / 255.0).astype(np.float32)
    out = np.zeros_like(f)
    for z in factors:
        ch = int(np.ceil(32 / z))
        top = (32 - ch) // 2
        zoomed = zoom(f[top:top + ch, top:top + ch], (z, z, 1), order=1)
        trim = (zoomed.shape[0] - 32) // 2
        out += zoomed[trim:trim + 32, trim:trim + 32]
    assert np.array_equal(y[0], np.uint8(np.clip((f + out) / 8, 0, 1) * 255))


class _Offsets:
    """glass_blur's draws replaced by a known pattern: offsets (dy, dx) in {-1, 0} as a function of the pass
    and the pixel, laid out as the module draws them: [2 (dy, dx), N, rows 2..H-1, columns 2..W-1]."""

    passes = 0

    @staticmethod
    def at(p, h, w):
        return -((h * 5 + w * 3 + p) % 2), -(((h + w * 7 + p) % 3 == 0) * 1)

    def integers(self, low, high, size):
        _, n, rows, cols = size
        h, w = np.mgrid[2:2 + rows, 2:2 + cols]
        dy, dx = self.at(self.passes, h, w)
        self.passes += 1
        return np.broadcast_to(np.stack([dy, dx])[:, None], size)


def test_glass_blur_equals_the_generators_pixel_walk():
    from scipy.ndimage import gaussian_filter
    # severity 4 (sigma 0.25, two passes), the generator's loop written out: blur, uint8, then for h and w
    # from 31 down to 2 its "swap" x[h, w], x[h', w'] = x[h', w'], x[h, w] of two NumPy views, blur again
    img = _scene(1)[0]

    def blur(a):
        return gaussian_filter(a, (0.25, 0.25, 0), mode="nearest", truncate=4.0)

    x = np.uint8(blur(img / 255.0) * 255)
    for p in range(2):
        for h in range(31, 1, -1):
            for w in range(31, 1, -1):
                dy, dx = _Offsets.at(p, h, w)
                x[h, w], x[h + dy, w + dx] = x[h + dy, w + dx], x[h, w]
    y = K.corrupt(img[None], "glass_blur", 4, _Offsets())
    assert np.array_equal(y[0], np.uint8(np.clip(blur(x / 255.0), 0, 1) * 255))


def test_glass_blur_two_passes_change_more_than_one():
    # severities 1-3 shuffle once (sigma 0.05, 0.25, 0.4), 4-5 twice (0.25, 0.4); at one pass a stronger blur
    # leaves less for the shuffle to move, so 3 changes a natural image less than 2 (so does the generator)
    change = _change(_scene(), "glass_blur")
    assert min(change[3:]) > max(change[:3]), change


class _Fixed:
    """A Generator whose uniform draws are a constant (motion_blur's angle)."""

    def __init__(self, value):
        self.value = value

    def uniform(self, low, high, size):
        return np.full(size, self.value, dtype=np.float64)


def test_motion_blur_follows_imagemagicks_kernel_at_zero_and_ninety_degrees():
    # severity 1 (radius 6, sigma 1): 13 taps weighted exp(-i^2 / 2) / sqrt(2 pi), normalised; at 0 degrees tap i
    # reads i pixels to the right, at 90 degrees i pixels down, the edge pixel past the border; the sum
    # rounded at 16 bits (x 257), then truncated to 8 (ImageMagick 6, Q16)
    img = _scene(1)[0]
    k = np.exp(-np.arange(13) ** 2 / 2.0) / np.sqrt(2 * np.pi)
    k /= k.sum()
    for angle, axis in ((0, 1), (90, 0)):
        y = K.corrupt(img[None], "motion_blur", 1, _Fixed(angle))[0]
        s = np.zeros(img.shape)
        for i in range(13):
            s += k[i] * np.take(img, np.minimum(np.arange(32) + i, 31), axis=axis)
        assert np.array_equal(y, np.uint8(np.floor(s * 257 + 0.5) // 257)), angle


def test_motion_blur_grows_with_severity_at_the_same_angles():
    # each severity draws its own angle when generated, so only at the same angles is it monotone
    for x in (_images(), _scene()):
        change = _change(x, "motion_blur", seed=lambda s: [7])
        assert all(c2 >= c1 for c1, c2 in zip(change, change[1:])) and change[4] > change[0], change


def test_frost_weighs_the_texture_more_with_severity():
    # frost = clip(a * image + b * texture): a falls (1, 1, 0.9, 0.85, 0.75) as b rises (0.2, 0.3, 0.4, 0.4,
    # 0.45), so on natural images the change is not monotone; on black ones only b acts (same crop: same seed)
    black = np.zeros((6, 32, 32, 3), dtype=np.uint8)
    change = _change(black, "frost", seed=lambda s: [7])
    assert change[0] < change[1] < change[2] == change[3] < change[4], change
    y = K.corrupt(black, "frost", 1, np.random.default_rng([7]))
    tex = K.frost_textures()
    assert len(tex) == 5 and all(t.dtype == np.uint8 and t.shape[2] == 3 and min(t.shape[:2]) > 32 for t in tex)
    assert y.max() <= int(0.2 * 255)


def test_frost_textures_are_checked(monkeypatch):
    with pytest.raises(K.CorruptionError, match="do not fit"):
        K.corrupt(np.zeros((1, 64, 64, 3), np.uint8), "frost", 1, np.random.default_rng(0))
    K.frost_textures.cache_clear()
    monkeypatch.setitem(K.FROST_FILES, "frost1.png", "0" * 64)
    try:
        with pytest.raises(K.CorruptionError, match="frost1.png: not the generator's frost1.png .SHA-256 differs"):
            K.corrupt(_images(1), "frost", 1, np.random.default_rng(0))
    finally:
        K.frost_textures.cache_clear()


class _ZeroDraws:
    """A Generator whose uniform draws with ``ndim`` dimensions come back as zeros: elastic_transform's affine
    jitter is [N, 3, 2] (ndim 3), its displacement field [2, N, H, W] (ndim 4)."""

    def __init__(self, ndim):
        self.rng, self.ndim = np.random.default_rng(7), ndim

    def uniform(self, low, high, size):
        a = self.rng.uniform(low, high, size)
        return np.zeros(size) if len(size) == self.ndim else a


def test_elastic_transform_trades_the_affine_jitter_for_the_displacement_field():
    # the generator's parameters: the affine jitter falls (0.08 .. 0.03 of the side) while the smooth
    # displacement grows (scale 0 .. 0.1, smoothing 0.2 .. 0.03), so the total change is not monotone
    x = _scene()
    field = [np.abs(K.corrupt(x, "elastic_transform", s, _ZeroDraws(3)).astype(float) - x).mean() for s in range(1, 6)]
    assert field[0] <= 1 and all(c2 > c1 for c1, c2 in zip(field, field[1:])), field  # severity 1: no field
    affine = [np.abs(K.corrupt(x, "elastic_transform", s, _ZeroDraws(4)).astype(float) - x).mean() for s in range(1, 6)]
    assert all(c2 < c1 for c1, c2 in zip(affine, affine[1:])), affine


def test_spatter_grows_with_severity_as_water_then_as_mud():
    change = _change(_scene(), "spatter")
    assert change[0] < change[1] < change[2] and change[3] < change[4], change
