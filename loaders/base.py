"""The interface every backend implements, so the training loop never knows which one it reads.

A :class:`Backend` holds one dataset (train and test splits). ``backend.loader(...)`` returns an
:class:`EpochLoader` over a set of sample indices of one split; ``loader.epoch(e)`` yields
``(images, labels)`` batches: images float ``[B, C, H, W]`` in ``[0, 1]`` (channels-last memory
format where asked), labels int64 ``[B]``, both on the backend's device. The sample order and the
augmentations of epoch ``e`` depend only on ``(seed, e)``: reproducible and resumable.
``loader.set_indices(idx)`` reuses a loader for a new index set without rebuilding it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator, Sequence

import numpy as np
import torch

from .errors import DataError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator that fixes the order and augmentations of one epoch."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63))


def unit_divisor(device: torch.device) -> torch.Tensor:
    """255 as a 0-d tensor on ``device``, for ``uint8 -> [0, 1]``: ``x.div_(unit_divisor(dev))`` divides
    exactly (IEEE) on every device. A Python 255 would not on CUDA, which multiplies by a rounded 1/255
    there (126 of the 256 byte values then differ by one ulp from the CPU's x / 255)."""
    return torch.full((), 255.0, dtype=torch.float32, device=device)


def as_index_array(indices: Sequence[int] | np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):  # a bool mask or floats would be misread
        raise DataError(f"sample indices must be integers, got {idx.dtype}; pass np.flatnonzero(mask) for a mask")
    idx = idx.astype(np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise DataError(f"sample index out of range [0, {size}): {int(idx.min())}..{int(idx.max())}")
    return idx


class EpochLoader(ABC):
    def __init__(self, indices, split_size: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int):
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        self.split_size, self.batch_size = split_size, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.set_indices(indices)

    def set_indices(self, indices) -> None:
        """Point the loader at a new set of sample indices (no rebuild)."""
        self.indices = as_index_array(indices, self.split_size)

    def order(self, epoch: int, generator: torch.Generator) -> np.ndarray:
        """The sample indices of ``epoch`` in the order they are served."""
        if not self.shuffle:
            return self.indices
        return self.indices[torch.randperm(len(self.indices), generator=generator).numpy()]

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @abstractmethod
    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ...


class Backend(ABC):
    name: str = ""

    def __init__(self, dataset, device: torch.device | str = "cpu", channels_last: bool = False):
        self.dataset = dataset
        self.device = torch.device(device)
        self.channels_last = channels_last

    def split_size(self, split: str) -> int:
        """Samples in ``split``: final, as every backend resolves its splits' readable files when built."""
        if split not in ("train", "test"):
            raise DataError(f"split '{split}': unknown; choose train or test")
        return len(getattr(self.dataset, split))

    def channel_stats(self, split: str = "train") -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and unbiased std, in [0, 1], of every image of ``split``, from exact integer
        sums (``stats.channel_stats``): every backend gives the same numbers for the same pixels (the
        ffcv backend with storage 'jpg' counts the pixels its JPEGs decode to)."""
        from .stats import channel_stats

        self.split_size(split)  # names a bad split in one line
        return channel_stats(getattr(self.dataset, split).images)

    @abstractmethod
    def loader(self, split: str, indices, batch_size: int, augment: bool = False, shuffle: bool = False,
               drop_last: bool = False, seed: int = 0) -> EpochLoader:
        """An :class:`EpochLoader` over ``indices`` of ``split`` ('train' or 'test')."""

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """One memory format for every batch, augmented or not."""
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
