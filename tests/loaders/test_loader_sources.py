"""The readers every backend shares (``loaders.sources``): what they return, and one clear error per bad input."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lure_fast.loaders import DataError, detect_layout, load_dataset

from loader_testing import CIFAR_JPEG, needs_cifar


def image(path: Path, w: int = 12, h: int = 10, seed: int = 0, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, fmt)
    return path


def tree(root: Path, classes=("a", "b"), per_class: int = 2, **kw) -> Path:
    for split in ("train", "test"):
        for c in classes:
            for k in range(per_class):
                image(root / split / c / f"{k}.png", seed=k, **kw)
    return root


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_digits_are_the_embedded_default():
    ds = load_dataset()
    assert ds.name == "digits" and ds.source == "" and ds.image_shape == (1, 8, 8)
    assert len(ds.train) == 1500 and len(ds.test) == 297
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert set(ds.train.labels.tolist()) == set(range(10))


def test_imagefolder_reads_sorted_classes_and_files(tmp_path):
    ds = load_dataset(path=str(tree(tmp_path, classes=("zebra", "ant"), per_class=3)))
    assert ds.layout == "imagefolder" and ds.classes == ["ant", "zebra"]
    assert ds.train.images.shape == (6, 10, 12, 3) and ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(ds.train.images[3], torch.from_numpy(np.array(Image.open(tmp_path / "train/zebra/0.png"))))
    assert load_dataset(path=str(tmp_path), image_size=16).train.images.shape == (6, 16, 16, 3)


@needs_cifar
def test_the_shared_cifar_copy_has_the_documented_layout():
    assert detect_layout(str(CIFAR_JPEG)) == "imagefolder"
    classes = sorted(p.name for p in (CIFAR_JPEG / "train").iterdir())
    assert classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_cifar_pickles_are_read_in_their_order(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    batches = [{"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [i, i, i, 9]} for i in range(6)]
    for i, b in enumerate(batches[:5], 1):
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(b))
    (root / "test_batch").write_bytes(pickle.dumps(batches[5]))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(c) for c in range(10)]}))
    ds = load_dataset(path=str(tmp_path))
    assert ds.layout == "cifar10" and len(ds.train) == 20 and len(ds.test) == 4
    second_of_batch_2 = batches[1]["data"][1].reshape(3, 32, 32).transpose(1, 2, 0).copy()
    assert torch.equal(ds.train.images[5], torch.from_numpy(second_of_batch_2))
    (root / "data_batch_3").write_bytes(b"\x80\x04 truncated")
    with pytest.raises(DataError, match="data_batch_3: cannot be read .*download it again") as err:
        load_dataset(path=str(tmp_path))
    one_line(err)
    (root / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: missing"):
        load_dataset(path=str(tmp_path))


@pytest.mark.parametrize("make, pattern", [
    (lambda p: p / "nowhere", "no such file or folder"),
    (lambda p: image(p / "x.png"), "is a file, not a folder"),
    (lambda p: p, "the folder is empty"),
    (lambda p: (p / "images").mkdir() or p, "unknown dataset layout"),
], ids=["missing", "a-file", "empty", "unknown"])
def test_a_bad_data_path_gives_one_clear_error(tmp_path, make, pattern):
    with pytest.raises(DataError, match=pattern) as err:
        load_dataset(path=str(make(tmp_path)))
    one_line(err)


def test_a_class_folder_without_images_is_refused(tmp_path):
    tree(tmp_path)
    (tmp_path / "train" / "c").mkdir()
    (tmp_path / "train" / "c" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"train/c: class folder holds no images") as err:
        load_dataset(path=str(tmp_path))
    one_line(err)


def test_train_and_test_must_hold_the_same_classes(tmp_path):
    tree(tmp_path)
    image(tmp_path / "test" / "c" / "0.png")
    with pytest.raises(DataError, match=r"extra: \['c'\].*same classes") as err:
        load_dataset(path=str(tmp_path))
    one_line(err)


def test_unreadable_truncated_and_missing_images_are_skipped_with_a_warning_cached_or_not(tmp_path, monkeypatch):
    from lure_fast.loaders import sources

    root = tree(tmp_path / "ds", per_class=3)
    (root / "train" / "a" / "1.png").write_bytes(b"not an image at all")
    good = image(root / "train" / "b" / "2.jpg", fmt="JPEG").read_bytes()
    (root / "train" / "b" / "2.jpg").write_bytes(good[: len(good) // 2])
    (root / "train" / "b" / "3.png").symlink_to(tmp_path / "deleted.png")  # dangling
    ds = load_dataset(path=str(root))  # lists the files; the split is decoded when first read
    assert len(ds.train) == 8  # the listed files: a length never decodes
    with pytest.warns(UserWarning, match="skipped 3 unreadable image.*first .*a/1.png"):
        assert ds.skipped == {"train": 3, "test": 0}
    assert len(ds.train) == 5
    monkeypatch.setattr(sources, "_decode_chunk", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    again = load_dataset(path=str(root))
    with pytest.warns(UserWarning, match="skipped 3 unreadable image.*first .*a/1.png"):  # a cache hit says so too
        assert torch.equal(again.train.images, ds.train.images)
    assert again.skipped == {"train": 3, "test": 0}


def test_every_spelling_of_a_folder_shares_one_decoded_cache_entry(tmp_path, monkeypatch):
    from lure_fast.loaders import sources

    root = tree(tmp_path / "data" / "ds")
    (tmp_path / "link").symlink_to(tmp_path / "data")
    (tmp_path / "alias").symlink_to(root)
    cache = tmp_path / "cache"
    first = sources.read_imagefolder(str(root), cache_dir=cache)
    first.train.images, first.test.images  # file lists until read: decode (and cache) both splits now
    monkeypatch.setattr(sources, "_decode_chunk", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    monkeypatch.chdir(tmp_path / "data")
    for spelling in ("ds", "./ds/", f"{tmp_path}/data/../data/ds", str(tmp_path / "link" / "ds"), "../alias"):
        again = sources.read_imagefolder(spelling, cache_dir=cache)
        assert torch.equal(again.train.images, first.train.images) and torch.equal(again.test.labels, first.test.labels)
    assert len(list(cache.iterdir())) == 2  # one file per split


def test_every_split_type_offers_the_split_interface(tmp_path):
    from lure_fast.loaders import FileSplit, Split, SplitLike

    files = load_dataset(path=str(tree(tmp_path))).train
    memory = Split(files.images, files.labels)
    for split in (files, files.subset(np.array([1, 0])), memory, memory.subset(np.array([1, 0]))):
        assert isinstance(split, (FileSplit, Split)) and isinstance(split, SplitLike), type(split)


def test_a_split_of_only_unreadable_images_is_refused(tmp_path):
    tree(tmp_path, classes=("a",), per_class=1)
    (tmp_path / "test" / "a" / "0.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="none of its 1 images could be decoded"):
        load_dataset(path=str(tmp_path))


def test_images_of_different_sizes_need_an_image_size(tmp_path):
    tree(tmp_path)
    image(tmp_path / "train" / "a" / "9.png", w=30, h=30)
    with pytest.raises(DataError, match="pass an image size"):
        load_dataset(path=str(tmp_path)).train.images
    assert load_dataset(path=str(tmp_path), image_size=8).train.images.shape == (5, 8, 8, 3)


def test_dataset_name_and_path_must_agree(tmp_path):
    with pytest.raises(DataError, match="embedded data and takes no --data"):
        load_dataset("digits", str(tree(tmp_path)))
    with pytest.raises(DataError, match="expects 10 classes but"):
        load_dataset("cifar10", str(tmp_path))


def test_imagefolder_decoding_is_cached_and_parallel_results_equal_serial(tmp_path, monkeypatch):
    from PIL import Image
    from lure_fast.loaders import sources
    rng = np.random.default_rng(0)
    for split, n in (("train", 700), ("test", 20)):  # 700: more than one decode chunk
        for c in ("a", "b"):
            d = tmp_path / "ds" / split / c
            d.mkdir(parents=True)
            for i in range(n // 2):
                Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(d / f"{i:04d}.png")
    serial = sources.read_imagefolder(str(tmp_path / "ds"), cache_dir=False, workers=1)
    first = sources.read_imagefolder(str(tmp_path / "ds"), cache_dir=tmp_path / "cache", workers=2)
    first.train.images, first.test.images  # file lists until read: decode (and cache) both splits now
    assert torch.equal(serial.train.images, first.train.images) and torch.equal(serial.train.labels, first.train.labels)
    monkeypatch.setattr(sources, "_decode_chunk", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    again = sources.read_imagefolder(str(tmp_path / "ds"), cache_dir=tmp_path / "cache")
    assert torch.equal(first.test.images, again.test.images) and torch.equal(first.test.labels, again.test.labels)
