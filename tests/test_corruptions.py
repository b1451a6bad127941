"""Corruptions: the released CIFAR-10-C format checked, and the generated subset (lure_fast/corruptions.py)."""
from __future__ import annotations

import numpy as np
import pytest

from lure_fast import corruptions as K


def _images(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", K.GENERATED)
def test_each_generated_corruption_is_deterministic_for_a_seed_and_monotone_in_severity(name):
    x = _images()
    a = K.corrupt(x, name, 3, np.random.default_rng([7, 3]))
    b = K.corrupt(x, name, 3, np.random.default_rng([7, 3]))
    assert a.dtype == np.uint8 and a.shape == x.shape
    assert np.array_equal(a, b)
    # the mean absolute change from the clean image grows with severity (one seed per severity, as generated)
    change = [np.abs(K.corrupt(x, name, s, np.random.default_rng([7, s])).astype(float) - x).mean()
              for s in range(1, 6)]
    if name == "saturate":  # the generator's own order: saturation x0.3, x0.1, then x1.5, x2 + 0.1, x2.5 + 0.2
        assert change[1] > change[0] and change[4] > change[3] > change[2]
    else:
        assert all(c2 >= c1 for c1, c2 in zip(change, change[1:])), change
        assert change[4] > change[0]


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


def test_missing_corruptions_are_named():
    assert len(K.GENERATED) + len(K.MISSING) == 19
    for m in K.MISSING:
        assert m in K.MISSING_TEXT
    with pytest.raises(K.CorruptionError, match="not generated"):
        K.corrupt(_images(1), "fog", 1, np.random.default_rng(0))
