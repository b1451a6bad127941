"""The ``ffcv`` backend: each split is one FFCV ``.beton`` file (``loaders.cache``), read by FFCV's
compiled, multi-threaded pipeline.

One batch flows through FFCV's stages:

  traversal order  planned (``ffcv_adapter.plan_order``): the order ``EpochLoader.order`` drew from
                   ``epoch_generator(seed, e)``, the same permutation the memory and torch backends serve
                   ('quasi_random': FFCV's page-local order, drawn from the same generator);
  decode           ``SimpleRGBImageDecoder``: memcpy (raw) or libjpeg-turbo (jpg), parallel over the batch;
  augment          ``FlipTranslate`` (training only): horizontal flip and pad-4 random translate with zero
                   fill, drawn per (seed, epoch, sample), so an epoch's augmentations are reproducible;
  to the device    on CUDA: ``ToTensor``, ``ToDevice(non_blocking)``, ``ToTorchImage`` (a free NHWC view);
  to [0, 1]        ``UnitFloat``: float32 / 255 on the device, channels-last or contiguous NCHW (on the CPU
                   a compiled kernel straight from the uint8 arrays).

FFCV compiles a pipeline with numba the first time a ``Loader`` runs (seconds per loader), so this
backend keeps a pool of compiled FFCV loaders per (split, augment, batch size) and points a pooled
loader at each epoch's planned order. That sidesteps FFCV's own index handling, whose pitfalls
(FFCV issues 152, 208, 344) are: ``Loader.indices`` is copied into the traversal order at
construction, so assigning it later changes nothing; ``len(loader)`` and the slice of the order an
epoch serves come from the *first* epoch's order, so a grown index set is silently cut short;
QUASI_RANDOM's page tables are built once from the first indices and fail ("empty range for
randrange") or serve the old set when they change; and buffers are sized by the batch size given at
construction. A pooled loader gets a new ``first_traversal_order`` with every plan (``ffcv_adapter``, which
holds every use of FFCV's internals), its batch size is part of the pool key, and each batch's ``index``
field is checked against the plan (``verify``).

FFCV's own orders would not do either: RANDOM seeds numpy with ``seed + epoch`` (seed 1's epoch 0 is
seed 0's epoch 1) and counts epochs itself (``next_epoch``), so a resumed run would see other orders.
FFCV's stock ``RandomHorizontalFlip``/``RandomTranslate`` draw from numba's unseeded per-thread
generators; ``FlipTranslate`` replaces them so that ``(seed, epoch)`` fixes the augmentations too.
"""
from __future__ import annotations

import os
import threading
from dataclasses import replace

import numpy as np
import torch

from ..augment import crop_padding
from ..base import Backend, EpochLoader, epoch_generator, unit_divisor
from ..cache import beton_for, beton_stats
from ..check import check_beton
from ..errors import DataError
from ..ffcv_adapter import epoch_batches, plan_order, quasi_random_fill, require_ffcv, serve_planned_orders, stop_epoch

require_ffcv()
from ffcv.fields.basics import IntDecoder  # noqa: E402
from ffcv.fields.rgb_image import SimpleRGBImageDecoder  # noqa: E402
from ffcv.loader import Loader, OrderOption  # noqa: E402
from ffcv.pipeline.allocation_query import AllocationQuery  # noqa: E402
from ffcv.pipeline.operation import Operation  # noqa: E402
from ffcv.pipeline.state import State  # noqa: E402
from ffcv.transforms import ToDevice, ToTensor, ToTorchImage  # noqa: E402
from numba import njit, prange  # noqa: E402  (installed with ffcv)

ORDERS = ("random", "quasi_random")

# --------------------------------------------------------------------------- augment

_GOLDEN, _M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


@njit(cache=True, inline="always")
def _splitmix64(x):
    z = x + _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(parallel=True, nogil=True, cache=True)
def _flip_translate(images, out, sample_ids, key, pad, flip):
    """out[i] = images[i] flipped (p = 1/2, if ``flip``) then shifted by (dy, dx) in [-pad, pad]^2 with zero
    fill; the draws are a hash of (key, sample id). images/out: uint8 [B, H, W, C]; sample_ids: int64 [B]."""
    n, h, w, c = images.shape
    span = np.uint64(2 * pad + 1)
    for i in prange(n):
        r = _splitmix64(key ^ _splitmix64(np.uint64(sample_ids[i])))
        mirror = flip and (r & np.uint64(1)) == np.uint64(1)
        dy = np.int64((r >> np.uint64(8)) % span) - pad
        dx = np.int64((r >> np.uint64(32)) % span) - pad
        for y in range(h):
            sy = y + dy
            for x in range(w):
                sx = x + dx
                if 0 <= sy < h and 0 <= sx < w:
                    src = w - 1 - sx if mirror else sx
                    for ch in range(c):
                        out[i, y, x, ch] = images[i, sy, src, ch]
                else:
                    for ch in range(c):
                        out[i, y, x, ch] = 0
    return out


class FlipTranslate(Operation):
    """Random horizontal flip and ``padding``-pixel random translate (torchvision's ``RandomCrop(size,
    padding)`` + ``RandomHorizontalFlip``), on uint8 NHWC arrays; the draws depend only on ``key`` (set per
    epoch by the loader) and the sample index, never on the thread that runs them."""

    def __init__(self, padding: int = 4, flip: bool = True):
        super().__init__()
        self.padding, self.flip = int(padding), bool(flip)
        self.key = np.zeros(1, dtype=np.uint64)

    def generate_code(self):
        key, pad, flip = self.key, self.padding, self.flip

        def flip_translate(images, dst, indices):
            return _flip_translate(images, dst[:len(images)], indices, key[0], pad, flip)

        flip_translate.with_indices = True
        return flip_translate

    def declare_state_and_memory(self, previous_state: State):
        # jit_mode=False: runs as Python (calling the compiled kernel above) so ``key`` is read live
        return replace(previous_state, jit_mode=False), AllocationQuery(previous_state.shape, previous_state.dtype)


@njit(parallel=True, nogil=True, cache=True)
def _unit_float(images, out, channels_last):
    """out = images / 255 as float32, channels 0..C-1 of uint8 [B, H, W, C_in]; out is [B, H, W, C] when
    ``channels_last`` (a channels-last NCHW tensor once permuted), else [B, C, H, W]."""
    n, h, w, _ = images.shape
    c = out.shape[3] if channels_last else out.shape[1]
    d = np.float32(255)
    for i in prange(n):
        if channels_last:
            for y in range(h):
                for x in range(w):
                    for ch in range(c):
                        out[i, y, x, ch] = np.float32(images[i, y, x, ch]) / d
        else:
            for ch in range(c):
                for y in range(h):
                    for x in range(w):
                        out[i, ch, y, x] = np.float32(images[i, y, x, ch]) / d
    return out


class UnitFloat(Operation):
    """Images to float32 [B, channels, H, W] in [0, 1], channels-last or contiguous, every batch a fresh
    tensor (callers may keep it). On the CPU: uint8 NHWC arrays in, a compiled kernel (no torch
    intra-op threads, which would spin against FFCV's on the same cores). On CUDA: the uint8
    [B, 3, H, W] tensor ``ToTorchImage`` made, converted on the device."""

    def __init__(self, channels: int, channels_last: bool, device: torch.device):
        super().__init__()
        self.channels, self.channels_last, self.device = channels, channels_last, device

    def generate_code(self):
        channels, channels_last = self.channels, self.channels_last
        if self.device.type == "cuda":
            memory_format = torch.channels_last if channels_last else torch.contiguous_format
            d = unit_divisor(self.device)

            def unit_float(images, _):
                return images[:, :channels].to(dtype=torch.float32, memory_format=memory_format).div_(d)
        else:
            def unit_float(images, _):
                n, h, w, _ = images.shape
                out = np.empty((n, h, w, channels) if channels_last else (n, channels, h, w), dtype=np.float32)
                out = torch.from_numpy(_unit_float(images, out, channels_last))
                return out.permute(0, 3, 1, 2) if channels_last else out

        return unit_float

    def declare_state_and_memory(self, previous_state: State):
        h, w = previous_state.shape[-2:] if self.device.type == "cuda" else previous_state.shape[:2]
        return replace(previous_state, jit_mode=False, dtype=torch.float32, shape=(self.channels, h, w)), None


# --------------------------------------------------------------------------- traversal order

def quasi_random_order(indices: np.ndarray, pages: np.ndarray, batch_size: int,
                       generator: torch.Generator) -> np.ndarray:
    """FFCV's QUASI_RANDOM order of ``indices`` (each served once): pages in random order, samples drawn at
    random from a window of ``2 * batch_size`` open pages, so a batch reads few pages. ``pages``: int64 [N],
    the file page of every sample of the split. Seeded from ``generator``."""
    if len(indices) == 0:
        return indices
    page_of = pages[indices]
    by_page = np.argsort(page_of, kind="stable")
    _, starts, counts = np.unique(page_of[by_page], return_index=True, return_counts=True)
    table = np.zeros((len(counts), int(counts.max())), dtype=np.int64)
    for row, (s, k) in enumerate(zip(starts, counts, strict=True)):
        table[row, :k] = indices[by_page[s:s + k]]
    result = np.zeros(len(indices), dtype=np.int64)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    quasi_random_fill(seed, table, counts.astype(np.int64), result, 2 * batch_size)
    return result


# --------------------------------------------------------------------------- loaders

class _Pooled:
    """One compiled FFCV ``Loader`` of ``split`` and the augmentation op whose key it reads."""

    def __init__(self, split: str, loader: Loader, augment: FlipTranslate | None):
        self.split, self.loader, self.augment = split, loader, augment
        serve_planned_orders(loader)

    def plan(self, order: np.ndarray, key: int) -> None:
        plan_order(self.loader, order)
        if self.augment is not None:
            self.augment.key[0] = np.uint64(key)


class FFCVLoader(EpochLoader):
    def __init__(self, backend: "FFCVBackend", split, indices, batch_size, augment, shuffle, drop_last, seed):
        self.backend, self.split, self.augment = backend, split, augment
        super().__init__(indices, backend.split_size(split), batch_size, shuffle, drop_last, seed)

    def order(self, epoch: int, generator: torch.Generator) -> np.ndarray:
        if self.shuffle and self.backend.order_mode == "quasi_random":
            return quasi_random_order(self.indices, self.backend.pages(self.split), self.batch_size, generator)
        return super().order(epoch, generator)

    def epoch(self, epoch: int = 0):
        """Yield (images float32 [B, C, H, W] in [0, 1], labels int64 [B]) on the backend's device; images
        channels-last if the backend was built so. The order and augmentations depend only on (seed, epoch)
        (a sample listed twice gets the same augmentation twice). Run the epoch to its end or ``close()`` the
        generator: that returns its compiled FFCV loader to the pool (an open one makes the next epoch
        build and compile another)."""
        g = epoch_generator(self.seed, epoch)
        order = np.ascontiguousarray(self.order(epoch, g)[:len(self) * self.batch_size], dtype=np.int64)
        key = int(torch.randint(0, 2**62, (1,), generator=g))
        if len(order) == 0:
            return
        pooled = self.backend._acquire(self.split, self.augment, self.batch_size)
        try:
            pooled.plan(order, key)
            threads = torch.get_num_threads()
            iterator = iter(pooled.loader)
            torch.set_num_threads(threads)  # FFCV sets torch's thread count to its worker count; keep the caller's
            try:
                for b, batch in enumerate(epoch_batches(iterator)):
                    if self.backend.verify:
                        served = batch[2].numpy().reshape(-1)
                        planned = order[b * self.batch_size:(b + 1) * self.batch_size]
                        if not np.array_equal(served, planned):
                            raise RuntimeError(f"ffcv served samples {served[:4]}... in batch {b} of epoch {epoch}, "
                                               f"planned {planned[:4]}...; the pooled FFCV loader is out of step")
                    images, labels = batch[0], batch[1].reshape(-1).clone()  # FFCV reuses label buffers
                    if images.is_cuda:  # made on FFCV's side stream: keep it alive for the consumer's stream
                        images.record_stream(torch.cuda.current_stream())
                    yield images, labels
            finally:
                stop_epoch(iterator)
        finally:
            self.backend._release(pooled)


class FFCVBackend(Backend):
    """Serves both splits of ``dataset`` from cached ``.beton`` files (written on first use).

    Options: ``storage`` 'raw' (exact pixels, default) or 'jpg' (``jpeg_quality``); ``cache_dir`` for the
    files; ``betons`` {'train': path, 'test': path} to read given files instead (checked, against their
    ``.sha256`` files too where there are some; never rewritten);
    ``workers`` threads (default: the usable cores); ``order`` 'random' (the other backends' permutation)
    or 'quasi_random' (FFCV's page-local order, for data larger than RAM with ``os_cache=False``);
    ``os_cache`` (mmap the file, default) ; ``batches_ahead`` prefetched batches; ``verify`` checks
    every batch's sample indices against the plan (cheap; default on).
    """

    name = "ffcv"

    def __init__(self, dataset, device="cpu", channels_last: bool = False, storage: str = "raw",
                 jpeg_quality: int = 90, cache_dir=None, betons: dict | None = None, workers: int | None = None,
                 order: str = "random", os_cache: bool = True, batches_ahead: int = 3, verify: bool = True):
        super().__init__(dataset, device, channels_last)
        if order not in ORDERS:
            raise DataError(f"ffcv order '{order}': unknown; choose one of {', '.join(ORDERS)}")
        if self.device.type not in ("cpu", "cuda"):
            raise DataError(f"the ffcv backend runs on cpu or cuda, not {self.device.type}; use --loader memory")
        import numba

        cores = len(os.sched_getaffinity(0))
        self.workers = max(1, min(workers or cores, numba.config.NUMBA_NUM_THREADS))
        self.order_mode, self.os_cache, self.verify = order, os_cache, verify
        self.batches_ahead = max(1, batches_ahead)
        if betons is not None:
            for split in ("train", "test"):
                if split not in betons:
                    raise DataError(f"betons= needs a 'train' and a 'test' file, got {sorted(betons)}")
                check_beton(betons[split], getattr(dataset, split))
            self.paths = {s: str(betons[s]) for s in ("train", "test")}
        else:
            self.paths = {s: beton_for(dataset, s, storage, jpeg_quality, cache_dir) for s in ("train", "test")}
        self._idle: dict[tuple, list[_Pooled]] = {}
        self._pages: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def channel_stats(self, split: str = "train"):
        """As ``Backend.channel_stats``, counted from the split's .beton (cached beside it), not from memory."""
        self.split_size(split)
        return beton_stats(self.paths[split], self.dataset.image_shape[0])

    def loader(self, split, indices, batch_size, augment=False, shuffle=False, drop_last=False, seed=0):
        if split not in self.paths:
            raise DataError(f"split '{split}': unknown; choose train or test")
        return FFCVLoader(self, split, indices, batch_size, augment, shuffle, drop_last, seed)

    def _acquire(self, split: str, augment: bool, batch_size: int) -> _Pooled:
        """An idle compiled loader for (split, augment, batch size), or a new one (compiled on first use)."""
        with self._lock:
            idle = self._idle.get((split, augment, batch_size))
            if idle:
                return idle.pop()
        return self._build(split, augment, batch_size)

    def _release(self, pooled: _Pooled) -> None:
        key = (pooled.split, pooled.augment is not None, pooled.loader.batch_size)
        with self._lock:
            self._idle.setdefault(key, []).append(pooled)

    def _build(self, split: str, augment: bool, batch_size: int) -> _Pooled:
        cuda = self.device.type == "cuda"
        to_device = [ToDevice(self.device, non_blocking=True)] if cuda else []
        flip_translate = FlipTranslate(padding=crop_padding(self.dataset.image_shape[1])) if augment else None
        to_float = UnitFloat(self.dataset.image_shape[0], self.channels_last, self.device)
        on_device = [ToTensor(), *to_device, ToTorchImage(channels_last=True)] if cuda else []
        image = [SimpleRGBImageDecoder(), *([flip_translate] if augment else []), *on_device, to_float]
        pipelines = {"image": image, "label": [IntDecoder(), ToTensor(), *to_device],
                     "index": [IntDecoder(), ToTensor()] if self.verify else None}
        threads = torch.get_num_threads()
        try:
            loader = Loader(self.paths[split], batch_size=batch_size, num_workers=self.workers,
                            os_cache=self.os_cache, order=OrderOption.SEQUENTIAL, seed=0, pipelines=pipelines,
                            drop_last=False, batches_ahead=self.batches_ahead)
        finally:
            torch.set_num_threads(threads)
        return _Pooled(split, loader, flip_translate)

    def pages(self, split: str) -> np.ndarray:
        """int64 [N]: the file page that holds each sample of ``split`` (for the quasi-random order)."""
        if split not in self._pages:
            from ffcv.reader import Reader

            reader = Reader(self.paths[split])
            table = reader.alloc_table
            pages = np.zeros(int(reader.num_samples), dtype=np.int64)
            pages[table["sample_id"].astype(np.int64)] = (table["ptr"] // np.uint64(reader.page_size)).astype(np.int64)
            self._pages[split] = pages
        return self._pages[split]
