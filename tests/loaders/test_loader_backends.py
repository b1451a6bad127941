"""The loader interface (``loaders.base``), checked the same way on every backend: which samples an epoch
serves, in which order, with which labels, shapes, dtypes and augmentations."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lure_fast.loaders import DataError, make_backend
from lure_fast.stream import REPLAYS, make_stream

from loader_testing import HAVE_FFCV, NO_FFCV, needs_ffcv, served

BACKENDS = ["memory", "torch", pytest.param("ffcv", marks=needs_ffcv)]


@pytest.fixture(params=BACKENDS)
def backend(request, coded):
    if request.param == "ffcv":
        return request.getfixturevalue("ffcv_backend")
    if request.param == "torch":
        return make_backend("torch", coded, workers=0)  # workers: see test_torch_workers_* below
    return make_backend("memory", coded)


def epoch_samples(loader, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids, labels = [], []
    for x, y in loader.epoch(epoch):
        ids.append(served(x))
        labels.append(y.cpu())
    return (torch.cat(ids), torch.cat(labels)) if ids else (torch.zeros(0, dtype=torch.long),) * 2


def test_batches_have_the_promised_shapes_dtypes_and_range(backend, coded):
    loader = backend.loader("train", np.arange(150), batch_size=64, augment=True, shuffle=True, seed=0)
    batches = list(loader.epoch(0))
    assert [len(y) for _, y in batches] == [64, 64, 22] and len(loader) == 3
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and x.device == backend.device
        assert y.dtype == torch.int64 and y.ndim == 1
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    drop = backend.loader("train", np.arange(150), batch_size=64, drop_last=True)
    assert [len(y) for _, y in drop.epoch(0)] == [64, 64] and len(drop) == 2


@pytest.mark.parametrize("replay", REPLAYS)
@pytest.mark.parametrize("reuse", [True, False], ids=["reused-loader", "new-loader"])
def test_every_megabatch_serves_exactly_its_index_set(backend, coded, replay, reuse):
    stream = make_stream(len(coded.train), megabatches=4, megabatch_size=300, replay=replay, buffer_size=20, seed=1)
    labels = coded.train.labels
    train = val = None
    for mb in stream:
        if reuse and train is not None:
            train.set_indices(mb.train)
            val.set_indices(mb.val)
        else:
            train = backend.loader("train", mb.train, batch_size=64, augment=True, shuffle=True, seed=5)
            val = backend.loader("train", mb.val, batch_size=50)
        for epoch in (0, 1):
            ids, y = epoch_samples(train, epoch)
            assert sorted(ids.tolist()) == sorted(mb.train.tolist())
            assert torch.equal(y, labels[ids])
        ids, y = epoch_samples(val, 0)
        assert ids.tolist() == mb.val.tolist()  # unshuffled: in the given order
        assert torch.equal(y, labels[ids])


def test_order_differs_between_epochs_and_repeats_for_a_seed(backend):
    idx = np.arange(0, 1200, 3)
    a = backend.loader("train", idx, batch_size=64, augment=True, shuffle=True, seed=11)
    b = backend.loader("train", idx, batch_size=64, augment=True, shuffle=True, seed=11)
    c = backend.loader("train", idx, batch_size=64, augment=True, shuffle=True, seed=12)
    e0, e1 = epoch_samples(a, 0)[0], epoch_samples(a, 1)[0]
    assert not torch.equal(e0, e1)
    assert torch.equal(epoch_samples(b, 1)[0], e1)  # a resumed run (fresh loader, same seed, epoch 1)
    assert torch.equal(epoch_samples(a, 0)[0], e0)
    assert not torch.equal(epoch_samples(c, 0)[0], e0)


def test_augmentations_repeat_for_a_seed_and_epoch(backend):
    if backend.name == "torch":
        pytest.skip("the torch backend's augmentations are checked in test_torch_workers_*")
    loader = backend.loader("train", np.arange(200), batch_size=100, augment=True, shuffle=True, seed=3)
    first = [x.clone() for x, _ in loader.epoch(4)]
    again = [x for x, _ in loader.epoch(4)]
    other = [x for x, _ in loader.epoch(5)]
    assert all(torch.equal(p, q) for p, q in zip(first, again, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(first, other, strict=True))


def test_evaluation_batches_hold_the_exact_pixels(backend, coded):
    idx = np.array([5, 0, 1199, 640, 77])
    (x, y), = list(backend.loader("train", idx, batch_size=8).epoch(0))
    want = coded.train.images[idx].permute(0, 3, 1, 2).float() / 255
    assert torch.equal(x.cpu(), want) and torch.equal(y.cpu(), coded.train.labels[idx])
    (x, y), = list(backend.loader("test", [3, 2], batch_size=8).epoch(0))
    assert torch.equal(x.cpu(), coded.test.images[[3, 2]].permute(0, 3, 1, 2).float() / 255)


def test_empty_index_set_serves_nothing_and_bad_indices_are_refused(backend):
    assert list(backend.loader("train", [], batch_size=8).epoch(0)) == []
    with pytest.raises(DataError, match="out of range"):
        backend.loader("train", [0, 1200], batch_size=8)
    with pytest.raises(DataError, match="batch size"):
        backend.loader("train", [0], batch_size=0)


@pytest.mark.parametrize("name", ["memory", "torch", "ffcv"])
def test_channels_last_backends_hand_channels_last_batches(name, coded, beton_cache):
    if name == "ffcv" and not HAVE_FFCV:
        pytest.skip(NO_FFCV)
    options = {"workers": 0} if name == "torch" else {"cache_dir": beton_cache} if name == "ffcv" else {}
    b = make_backend(name, coded, channels_last=True, **options)
    for augment in (False, True):
        x, _ = next(iter(b.loader("train", np.arange(70), batch_size=32, augment=augment, shuffle=True).epoch(0)))
        assert x.is_contiguous(memory_format=torch.channels_last)


def test_torch_workers_draw_new_augmentations_every_epoch(coded):
    b = make_backend("torch", coded, workers=2)
    loader = b.loader("train", np.arange(64), batch_size=64, augment=True, shuffle=False, seed=0)
    e0, again, e1 = (next(iter(loader.epoch(e)))[0] for e in (0, 0, 1))
    assert torch.equal(e0, again) and not torch.equal(e0, e1)


def test_torch_workers_0_draws_new_augmentations_every_epoch(coded):
    b = make_backend("torch", coded, workers=0)
    loader = b.loader("train", np.arange(64), batch_size=64, augment=True, shuffle=False, seed=0)
    e0, e1 = (next(iter(loader.epoch(e)))[0] for e in (0, 1))
    assert not torch.equal(e0, e1)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_built_backend_knows_the_split_lengths_without_the_unreadable_files(name, tmp_path, monkeypatch):
    """The product sizes its stream from ``listed`` before it builds the backend (nothing decoded) and from
    ``len`` after: on every backend the second counts only the readable files (ffcv: those it wrote)."""
    from PIL import Image

    from lure_fast.loaders import load_dataset

    monkeypatch.setenv("LURE_FAST_BETON_CACHE", str(tmp_path / "beton"))
    root, rng = tmp_path / "ds", np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / c / f"{k}.png")
    (root / "train" / "b" / "3.png").write_bytes(b"not an image")
    ds = load_dataset(path=str(root))
    assert ds.train.listed == len(ds.train) == 12  # a length never decodes: the listed files until then
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = make_backend(name, ds, **({"workers": 0} if name == "torch" else {}))
    assert len(ds.train) == backend.split_size("train") == len(ds.train.labels) == 11 and ds.train.listed == 12
    assert [str(w.message) for w in caught if "unreadable" in str(w.message)] == [
        f"{root / 'train'}: skipped 1 unreadable image(s), first {root / 'train' / 'b' / '3.png'}"]
    (x, y), = list(backend.loader("train", np.arange(len(ds.train)), batch_size=11).epoch(0))
    assert len(x) == 11 and torch.equal(y, ds.train.labels)
