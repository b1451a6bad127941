import pytest

from lf_helpers import CIFAR_JPEG


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
