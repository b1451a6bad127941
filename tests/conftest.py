import os

import pytest

from lf_helpers import CIFAR_JPEG

# every cache folder the code reads from the environment (loaders/sources.py, loaders/cache.py)
CACHE_VARIABLES = {"LURE_FAST_DECODED_CACHE": "decoded", "LURE_FAST_BETON_CACHE": "beton"}


@pytest.fixture(scope="session", autouse=True)
def session_caches(tmp_path_factory):
    """Point the decoded-image and .beton caches at one temporary folder per test session, so tests never
    fill ~/.cache/lure-fast and the real CIFAR-10 copy is decoded once per session. A variable already
    set by the caller (scripts/gpu_session.sh shares /tmp caches between its steps) is kept; a test that
    sets its own with ``monkeypatch.setenv`` overrides this for itself."""
    root = tmp_path_factory.mktemp("lure-fast-cache")
    with pytest.MonkeyPatch.context() as mp:
        for name, folder in CACHE_VARIABLES.items():
            if not os.environ.get(name):
                mp.setenv(name, str(root / folder))
        yield root


@pytest.fixture
def cifar_jpeg():
    if not CIFAR_JPEG.is_dir():
        pytest.skip(f"real CIFAR-10 JPEG copy not found at {CIFAR_JPEG} (../shared is absent)")
    return CIFAR_JPEG


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is present")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
