"""What only the FFCV backend does: compiled loaders pooled and re-pointed at new index sets (FFCV issues
152, 208, 344), per-batch verification of the served indices, the seeded flip/translate op, the
quasi-random order, one-channel data, and CUDA output."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lure_fast.loaders import make_backend
from lure_fast.stream import make_stream

from loader_testing import needs_ffcv, served

pytestmark = needs_ffcv


def ids_of(loader, epoch=0) -> list[int]:
    return torch.cat([served(x) for x, _ in loader.epoch(epoch)]).tolist()


def test_a_long_stream_reuses_one_compiled_loader_per_pipeline(ffcv_backend, coded):
    """t = 100 mega-batches: the sets grow from 11 to 1,100 samples; no FFCV loader is built after the first."""
    stream = make_stream(len(coded.train), megabatches=100, megabatch_size=12, replay="full", seed=2)
    train = ffcv_backend.loader("train", stream[0].train, batch_size=16, augment=True, shuffle=True, seed=0)
    val = ffcv_backend.loader("train", stream[0].val, batch_size=16)
    list(train.epoch(0)), list(val.epoch(0))
    pooled = {k: list(v) for k, v in ffcv_backend._idle.items()}
    for mb in stream.megabatches[1:]:
        train.set_indices(mb.train)
        val.set_indices(mb.val)
        assert sorted(ids_of(train, mb.index)) == sorted(mb.train.tolist())
        assert ids_of(val) == mb.val.tolist()
    assert {k: list(v) for k, v in ffcv_backend._idle.items()} == pooled  # the same loader objects, nothing new


def test_a_grown_index_set_is_served_whole(ffcv_backend):
    """FFCV sizes an epoch from its first order; a reused loader must still serve a larger set entirely."""
    loader = ffcv_backend.loader("train", np.arange(10), batch_size=16, augment=True, shuffle=True, seed=1)
    assert sorted(ids_of(loader)) == list(range(10))
    loader.set_indices(np.arange(1000, 0, -1) - 1)
    assert sorted(ids_of(loader, 1)) == list(range(1000))
    loader.set_indices([7, 3])
    assert sorted(ids_of(loader, 2)) == [3, 7]


def test_an_abandoned_epoch_leaves_the_loader_usable(ffcv_backend):
    loader = ffcv_backend.loader("train", np.arange(600), batch_size=16, augment=True, shuffle=True, seed=4)
    for k, _ in enumerate(loader.epoch(0)):
        if k == 2:
            break
    assert sorted(ids_of(loader, 1)) == list(range(600))


def test_interleaved_epochs_of_one_pipeline_do_not_share_a_loader(ffcv_backend):
    a = ffcv_backend.loader("train", np.arange(0, 400), batch_size=16, augment=True, shuffle=True, seed=1)
    b = ffcv_backend.loader("train", np.arange(400, 800), batch_size=16, augment=True, shuffle=True, seed=2)
    got_a, got_b = [], []
    for (xa, _), (xb, _) in zip(a.epoch(0), b.epoch(0), strict=True):
        got_a += served(xa).tolist()
        got_b += served(xb).tolist()
    assert sorted(got_a) == list(range(400)) and sorted(got_b) == list(range(400, 800))


def test_served_indices_are_checked_against_the_plan(ffcv_backend, monkeypatch):
    from lure_fast.loaders.backends import ffcv as backend_module

    plan = backend_module._Pooled.plan
    monkeypatch.setattr(backend_module._Pooled, "plan", lambda self, order, key: plan(self, order[::-1].copy(), key))
    loader = ffcv_backend.loader("train", np.arange(40), batch_size=16, shuffle=True, seed=0)
    with pytest.raises(RuntimeError, match="out of step"):
        list(loader.epoch(0))


def variants(image: np.ndarray, pad: int = 4) -> list[np.ndarray]:
    """All flip x pad-crop outputs of one HWC image (torchvision RandomCrop(padding) + RandomHorizontalFlip)."""
    h, w, _ = image.shape
    out = []
    for img in (image, image[:, ::-1]):
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        out += [padded[dy:dy + h, dx:dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return out


def test_flip_translate_is_a_flip_and_a_zero_padded_crop(ffcv_backend, coded):
    idx = np.arange(0, 1200, 4)
    loader = ffcv_backend.loader("train", idx, batch_size=100, augment=True)  # unshuffled: batch k holds idx[k*100:]
    x = torch.cat([x for x, _ in loader.epoch(0)])
    got = (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    kinds = []
    for k, i in enumerate(idx):
        matches = [v for v, ref in enumerate(variants(coded.train.images[i].numpy())) if np.array_equal(ref, got[k])]
        assert matches, f"sample {i}: not a flip/translate of its image"
        kinds.append(matches[0])
    kinds = np.array(kinds)
    flips, dy, dx = kinds >= 81, (kinds % 81) // 9, kinds % 9
    assert 0.4 < flips.mean() < 0.6
    assert set(dy.tolist()) == set(range(9)) and set(dx.tolist()) == set(range(9))


def test_quasi_random_order_serves_each_sample_once_per_epoch(coded, beton_cache):
    backend = make_backend("ffcv", coded, cache_dir=beton_cache, order="quasi_random")
    loader = backend.loader("train", np.arange(0, 1200, 2), batch_size=64, augment=True, shuffle=True, seed=3)
    e0 = ids_of(loader, 0)
    assert sorted(e0) == list(range(0, 1200, 2))
    assert ids_of(loader, 0) == e0 and ids_of(loader, 1) != e0
    loader.set_indices(np.arange(1, 1200, 3))  # FFCV issue 208: changed indices broke QUASI_RANDOM
    assert sorted(ids_of(loader, 2)) == list(range(1, 1200, 3))


def test_one_channel_data_comes_back_one_channel(beton_cache):
    from lure_fast.loaders import load_dataset

    digits = load_dataset("digits")
    ffcv = make_backend("ffcv", digits, cache_dir=beton_cache)
    memory = make_backend("memory", digits)
    idx = np.arange(0, len(digits.train), 7)
    (x, y), = list(ffcv.loader("train", idx, batch_size=len(idx)).epoch(0))
    (xm, ym), = list(memory.loader("train", idx, batch_size=len(idx)).epoch(0))
    assert x.shape == (len(idx), 1, 8, 8) and torch.equal(x, xm) and torch.equal(y, ym)
    x, _ = next(iter(ffcv.loader("train", idx, batch_size=32, augment=True, shuffle=True).epoch(0)))
    assert x.shape == (32, 1, 8, 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_the_cpu_batches(coded, beton_cache):
    gpu = make_backend("ffcv", coded, device="cuda", channels_last=True, cache_dir=beton_cache)
    cpu = make_backend("ffcv", coded, cache_dir=beton_cache)
    idx = np.arange(300)
    for augment in (False, True):
        on_gpu = gpu.loader("train", idx, 64, augment, shuffle=True, seed=1).epoch(3)
        on_cpu = cpu.loader("train", idx, 64, augment, shuffle=True, seed=1).epoch(3)
        for (xg, yg), (xc, yc) in zip(on_gpu, on_cpu, strict=True):
            assert xg.is_cuda and yg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)


def test_the_backend_leaves_torch_thread_count_alone(coded, beton_cache):
    """FFCV sets torch's intra-op thread count when imported, built and iterated; the backend undoes it."""
    torch.set_num_threads(2)
    backend = make_backend("ffcv", coded, cache_dir=beton_cache, workers=1)
    list(backend.loader("test", np.arange(50), batch_size=25, augment=True, shuffle=True).epoch(0))
    assert torch.get_num_threads() == 2


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's error, expected
def test_an_error_in_the_pipeline_thread_ends_the_epoch_instead_of_hanging(ffcv_backend, monkeypatch):
    from lure_fast.loaders.backends import ffcv as backend_module

    def broken(*args):
        raise ValueError("augmentation broke")

    loader = ffcv_backend.loader("train", np.arange(200), batch_size=16, augment=True, shuffle=True, seed=0)
    monkeypatch.setattr(backend_module, "_flip_translate", broken)
    with pytest.raises(RuntimeError, match="pipeline thread died"):
        list(loader.epoch(0))
    monkeypatch.undo()
    assert sorted(ids_of(loader, 1)) == list(range(200))  # the pooled loader still works


def test_ffcv_crop_padding_scales_with_the_image_like_the_other_backends(tmp_path, monkeypatch):
    """On the 8x8 digits an augmented image is a flip and a shift of at most 1 pixel (pad 1), as the
    memory and torch backends do, not the pad 4 meant for 32x32."""
    pytest.importorskip("ffcv")
    import torch.nn.functional as F
    from lure_fast.loaders import load_dataset
    monkeypatch.setenv("LURE_FAST_BETON_CACHE", str(tmp_path))
    ds = load_dataset("digits")
    b = make_backend("ffcv", ds)
    x, _ = next(iter(b.loader("train", np.arange(64), 64, augment=True, shuffle=False, seed=3).epoch(0)))
    src = ds.train.images[:64].permute(0, 3, 1, 2).float() / 255
    for i in range(64):
        candidates = [F.pad(img, (1, 1, 1, 1))[:, dy:dy + 8, dx:dx + 8]
                      for img in (src[i], src[i].flip(2)) for dy in range(3) for dx in range(3)]
        assert any(torch.allclose(x[i], c, atol=1e-6) for c in candidates), i
