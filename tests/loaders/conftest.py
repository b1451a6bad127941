"""Fixtures for the loader tests: small datasets whose images name themselves, and the shared data."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from lure_fast.loaders import Dataset

from loader_testing import CIFAR_JPEG, HAVE_FFCV, NO_FFCV, coded_dataset


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Loader tests move tiny tensors: torch's intra-op threads only add overhead, and on a shared 2-core
    machine their spin-waiting slows the per-sample torch backend some 30x. Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def coded() -> Dataset:
    return coded_dataset()


@pytest.fixture(scope="session")
def beton_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("beton-cache")


@pytest.fixture(scope="session")
def ffcv_backend(coded, beton_cache):
    """One FFCV backend for the session: its compiled FFCV loaders are pooled and reused by every test."""
    if not HAVE_FFCV:
        pytest.skip(NO_FFCV)
    from lure_fast.loaders import make_backend

    return make_backend("ffcv", coded, cache_dir=beton_cache)


@pytest.fixture(scope="session")
def cifar_sample(tmp_path_factory) -> Path:
    """A small real ImageFolder copied from the shared CIFAR-10 JPEGs: 12 train and 4 test images per class."""
    if not CIFAR_JPEG.is_dir():
        pytest.skip(f"shared CIFAR-10 JPEG copy not found at {CIFAR_JPEG}")
    root = tmp_path_factory.mktemp("cifar-sample")
    for split, k in (("train", 12), ("test", 4)):
        for cls in sorted(p.name for p in (CIFAR_JPEG / split).iterdir()):
            dst = root / split / cls
            dst.mkdir(parents=True)
            for f in sorted((CIFAR_JPEG / split / cls).iterdir())[:k]:
                shutil.copy(f, dst / f.name)
    return root
