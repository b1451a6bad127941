"""Restricted ImageNet (balanced): the grouping constants, and reading a small made-up ImageNet tree
whose class folders carry real WordNet ids."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lure_fast.loaders import DataError
from lure_fast.loaders import restricted_imagenet as rin

# a few real ImageNet wnids outside the balanced grouping: tench (0), Chihuahua (151, a dog of the older
# 9-class grouping), lion (291), hen-of-the-woods' neighbour bolete (997)
OUTSIDE = ("n01440764", "n02085620", "n02129165", "n13054560")


def test_the_grouping_has_14_superclasses_over_69_imagenet_classes():
    assert len(rin.SUPERCLASSES) == len(rin.BALANCED_RANGES) == 14
    covered = [i for lo, hi in rin.BALANCED_RANGES for i in range(lo, hi + 1)]
    assert len(covered) == len(set(covered)) == 69 and sorted(covered) == sorted(rin.WNIDS)
    assert [hi - lo + 1 for lo, hi in rin.BALANCED_RANGES] == [5] * 10 + [4] + [5] * 3
    wnids = [rin.WNIDS[i] for i in sorted(rin.WNIDS)]
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert wnids == sorted(wnids)  # ImageNet's class index is the sorted position of the wnid
    assert rin.superclass_of_index(10) == 0 and rin.superclass_of_index(374) == 10
    assert rin.superclass_of_index(375) is None and rin.superclass_of_index(996) == 13


def write_tree(root: Path, wnids, train_per_class=2, val_per_class=1) -> Path:
    rng = np.random.default_rng(0)
    for split, k in (("train", train_per_class), ("val", val_per_class)):
        for w in wnids:
            (root / split / w).mkdir(parents=True)
            for j in range(k):
                size = (int(rng.integers(40, 90)), int(rng.integers(30, 70)))  # ImageNet sizes vary
                Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
                    root / split / w / f"{w}_{j}.JPEG", "JPEG")
    return root


def first_wnids(extra: int = 0) -> list[str]:
    """The first wnid of every superclass, plus the next ``extra`` of the first superclasses."""
    out = [rin.WNIDS[lo] for lo, _ in rin.BALANCED_RANGES]
    return out + [rin.WNIDS[lo + 1] for lo, _ in rin.BALANCED_RANGES[:extra]]


def test_class_folders_map_to_their_superclass(tmp_path):
    wnids = first_wnids(extra=3) + list(OUTSIDE)
    ds = rin.read_restricted_imagenet(str(write_tree(tmp_path / "in", wnids)), cache_dir=tmp_path / "cache")
    assert ds.classes == list(rin.SUPERCLASSES) and ds.num_classes == 14
    assert ds.train.images.shape == (2 * 17, 32, 32, 3) and ds.test.images.shape == (17, 32, 32, 3)
    mapped = ds.meta["wnids"]
    assert not set(OUTSIDE) & set(mapped)  # folders outside the grouping are ignored
    assert mapped["n01530575"] == mapped["n01531178"] == 0  # brambling, goldfinch: birds
    assert mapped["n02486261"] == 10 and mapped["n12998815"] == 13  # patas: monkey; agaric: fungus
    expected = [mapped[w] for w in sorted(mapped) for _ in range(2)]  # (wnid, file) order
    assert ds.train.labels.tolist() == expected
    assert np.bincount(ds.test.labels.numpy(), minlength=14).tolist() == [2, 2, 2] + [1] * 11


def test_decoded_splits_are_cached_and_a_larger_size_can_be_kept(tmp_path, monkeypatch):
    root = write_tree(tmp_path / "in", first_wnids())
    first = rin.read_restricted_imagenet(str(root), cache_dir=tmp_path / "cache")
    first.train.images, first.test.images  # file lists until read: decode (and cache) both splits now
    from lure_fast.loaders import sources
    monkeypatch.setattr(sources, "_decode_chunk", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    again = rin.read_restricted_imagenet(str(root), cache_dir=tmp_path / "cache")
    assert np.array_equal(first.train.images, again.train.images)
    assert np.array_equal(first.test.labels, again.test.labels)
    monkeypatch.undo()
    big = rin.read_restricted_imagenet(str(root), image_size=64, cache_dir=False)
    assert big.name == "restricted_imagenet64" and big.train.images.shape[1:] == (64, 64, 3)


def test_a_full_tree_must_be_standard_imagenet(tmp_path):
    for i in range(1000):
        (tmp_path / "train" / f"n{i:08d}").mkdir(parents=True)
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="not ImageNet's 'n01530575'"):
        rin.read_restricted_imagenet(str(tmp_path), cache_dir=False)


@pytest.mark.parametrize("case, pattern", [
    ("no-val", "no val/ \\(or test/\\) folder"),
    ("superclass-missing", "no class folder for superclass\\(es\\) fungus"),
    ("val-differs", "differ from train/'s"),
    ("empty-class", "class folder holds no images"),
    ("all-unreadable", "none of its 14 images could be decoded"),
])
def test_bad_trees_give_one_clear_error(tmp_path, case, pattern):
    wnids = first_wnids()
    root = write_tree(tmp_path, wnids[:-1] if case == "superclass-missing" else wnids)
    if case == "no-val":
        (root / "val").rename(root / "holdout")
    if case == "val-differs":
        (root / "val" / wnids[0]).rename(root / "val" / rin.WNIDS[11])
    if case == "empty-class":
        for f in (root / "train" / wnids[3]).iterdir():
            f.unlink()
    if case == "all-unreadable":
        for f in (root / "val").rglob("*.JPEG"):
            f.write_bytes(b"broken")
    with pytest.raises(DataError, match=pattern) as err:
        rin.read_restricted_imagenet(str(root), cache_dir=False)
    assert "\n" not in str(err.value)


def test_load_dataset_reads_it_by_name(tmp_path, monkeypatch):
    from lure_fast.loaders import load_dataset

    monkeypatch.setenv("LURE_FAST_BETON_CACHE", str(tmp_path / "cache" / "beton"))
    monkeypatch.setenv("LURE_FAST_DECODED_CACHE", str(tmp_path / "decoded"))  # the one ImageFolder uses too
    root = write_tree(tmp_path / "in", first_wnids())
    ds = load_dataset("restricted_imagenet", str(root))
    assert ds.name == "restricted_imagenet" and ds.num_classes == 14 and ds.train.images.shape[1:] == (32, 32, 3)
    assert any((tmp_path / "decoded").iterdir()) and not (tmp_path / "cache").exists()
    with pytest.raises(DataError, match="needs --data PATH"):
        load_dataset("restricted_imagenet")
