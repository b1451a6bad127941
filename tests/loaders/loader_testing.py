"""Helpers for the loader tests (a uniquely named module: tests/loaders has no __init__.py).

Every synthetic image is seeded noise with a flat 12x12 centre block whose colour encodes the sample
index (red = i % 256, green = i // 256), so any backend's batch, augmented or not, tells which samples it
holds (a pad-4 translate or a flip keeps the centre pixel inside the block), and the noise shows
exactly which flip and shift an augmentation applied.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lure_fast.loaders import Dataset, Split

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
CIFAR_JPEG = Path(os.environ["LURE_FAST_CIFAR"]) if os.environ.get("LURE_FAST_CIFAR") else SHARED / "data" / "cifar10-jpeg"


def ffcv_importable() -> bool:
    try:
        from lure_fast.loaders import require_ffcv

        require_ffcv()
        return True
    except Exception:
        return False


HAVE_FFCV = ffcv_importable()
NO_FFCV = "ffcv is not importable here; run scripts/install_ffcv.sh .venv/bin/python"
needs_ffcv = pytest.mark.skipif(not HAVE_FFCV, reason=NO_FFCV)
needs_cifar = pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason=f"shared CIFAR-10 JPEG copy not found at {CIFAR_JPEG}")


def coded_split(n: int, offset: int = 0, num_classes: int = 10, size: int = 32) -> Split:
    i = np.arange(offset, offset + n)
    images = np.random.default_rng(offset).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    c = size // 2
    block = (slice(None), slice(c - 6, c + 6), slice(c - 6, c + 6))
    images[block + (0,)] = (i % 256)[:, None, None]
    images[block + (1,)] = (i // 256)[:, None, None]
    images[block + (2,)] = 200
    labels = (i * 7 + 3) % num_classes
    return Split(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


def coded_dataset(n_train: int = 1200, n_test: int = 300) -> Dataset:
    return Dataset("coded", "synthetic", coded_split(n_train), coded_split(n_test), [str(c) for c in range(10)])


def served(images: torch.Tensor) -> torch.Tensor:
    """Sample indices encoded in a batch of coded images (float [B, C, H, W] in [0, 1], any device)."""
    h, w = images.shape[2] // 2, images.shape[3] // 2
    px = (images[:, :2, h, w].float().cpu() * 255).round().long()
    return px[:, 0] + 256 * px[:, 1]
