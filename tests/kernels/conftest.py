"""Shared fixtures of the kernel tests.

Every test that takes ``device`` runs on CPU under Triton's interpreter (``TRITON_INTERPRET=1``,
set per test, so the Triton path really runs) and, where a GPU is present, on CUDA compiled.
Results are compared with the PyTorch references bit for bit. Nothing here times anything.
"""

from __future__ import annotations

import pytest
import torch

from lure_fast.kernels._dispatch import compiled_available

# the CUDA case carries the gpu mark: `pytest -m gpu` (the GPU session) selects it, and without a GPU it
# is reported skipped with the reason rather than silently absent
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
INT_OF = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float64: torch.int64}


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    if request.param == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # the Triton path on CPU tensors
    elif compiled_available():
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # compiled kernels on the GPU
    return torch.device(request.param)


@pytest.fixture
def compiled_cuda(monkeypatch):
    """For the large GPU-only tests: compiled kernels on CUDA, or a skip saying why not."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")
    if not compiled_available():
        pytest.skip("Triton was imported under TRITON_INTERPRET=1, so nothing can be compiled; run GPU tests without it")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return torch.device("cuda")


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(INT_OF[t.dtype])


def _assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor, msg: str = "") -> None:
    assert a.dtype == b.dtype, f"{msg} dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{msg} shape {tuple(a.shape)} != {tuple(b.shape)}"
    diff = _bits(a).cpu() != _bits(b).cpu()
    if diff.any():
        i = int(diff.reshape(-1).nonzero()[0])
        raise AssertionError(
            f"{msg} {int(diff.sum())} of {a.numel()} entries differ, first at flat index {i}: "
            f"{a.reshape(-1)[i].item()!r} vs {b.reshape(-1)[i].item()!r}"
        )


@pytest.fixture
def assert_bitwise_equal():
    """``assert_bitwise_equal(a, b)``: same dtype, shape and bit pattern in every entry."""
    return _assert_bitwise_equal


@pytest.fixture
def bits():
    """``bits(t)``: the integer view of a float tensor's bit patterns."""
    return _bits
