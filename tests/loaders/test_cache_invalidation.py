"""A cache is keyed by what it was made from: edit, replace or touch one image of an ImageFolder (same size,
new content, even with its mtime set back) and the decoded cache and the .beton are made again."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image

from lure_fast.loaders import beton_for
from lure_fast.loaders.sources import read_imagefolder

from loader_testing import HAVE_FFCV, NO_FFCV


def write_bmp(path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path, format="BMP")  # uncompressed: the same size for any pixels


def imagefolder(root):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                write_bmp(root / split / c / f"{i}.bmp", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return root


NEW = np.full((8, 8, 3), 7, dtype=np.uint8)  # the new content of train/a/1.bmp


def edit_in_place_mtime_set_back(path):
    st = os.stat(path)
    write_bmp(path, NEW)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def replace_with_the_old_mtime(path):
    st = os.stat(path)
    other = path.with_name("incoming.tmp")
    write_bmp(other, NEW)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, path)


def touch(path):
    write_bmp(path, NEW)  # the new content...
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # ...and a touch


CHANGES = [edit_in_place_mtime_set_back, replace_with_the_old_mtime, touch]


def changed(root, change):
    path = root / "train" / "a" / "1.bmp"
    size = path.stat().st_size
    time.sleep(0.05)  # past the file system's timestamp tick (docs/safety.md: one tick is the limit)
    change(path)
    assert path.stat().st_size == size
    return 1  # its position in the train split (classes a, b; files 0, 1, 2 in order)


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__)
def test_the_decoded_cache_is_made_again_when_an_image_changes(tmp_path, change):
    root, cache = imagefolder(tmp_path / "data"), tmp_path / "decoded"
    before = read_imagefolder(str(root), cache_dir=cache).train.images.clone()
    assert len(list(cache.glob("*.npz"))) == 1
    assert np.array_equal(read_imagefolder(str(root), cache_dir=cache).train.images, before)  # reused
    assert len(list(cache.glob("*.npz"))) == 1
    i = changed(root, change)
    after = read_imagefolder(str(root), cache_dir=cache).train.images
    assert np.array_equal(after[i].numpy(), NEW), "served the cached pixels of the old image"
    assert np.array_equal(np.delete(after.numpy(), i, 0), np.delete(before.numpy(), i, 0))
    assert len(list(cache.glob("*.npz"))) == 2


@pytest.mark.skipif(not HAVE_FFCV, reason=NO_FFCV)
@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__)
def test_the_beton_is_written_again_when_an_image_changes(tmp_path, change):
    from lure_fast.loaders.read import read_beton

    root, cache = imagefolder(tmp_path / "data"), tmp_path / "beton"
    first = beton_for(read_imagefolder(str(root), cache_dir=False), "train", cache_dir=cache, workers=1)
    assert beton_for(read_imagefolder(str(root), cache_dir=False), "train", cache_dir=cache, workers=1) == first
    i = changed(root, change)
    again = beton_for(read_imagefolder(str(root), cache_dir=False), "train", cache_dir=cache, workers=1)
    assert again != first, "reused the .beton of the old image"
    assert np.array_equal(read_beton(again).images[i].numpy(), NEW)
