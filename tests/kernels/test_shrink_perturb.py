"""shrink_perturb_: w = lam * w + sigma * noise, bit-identical to the reference."""

from __future__ import annotations

import pytest
import torch

from lure_fast.kernels import counter_uniform_reference, shrink_perturb_, shrink_perturb_reference_, use_triton

SHAPES = [(64, 3, 3, 3), (64,), (1,), (10, 7), (4099,)]
BOUNDS = [0.19, None, 0.5, 0.3, 0.01]


def make(dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).to(dtype).to(device) for s in SHAPES]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_matches_reference(device, assert_bitwise_equal, dtype):
    params = make(dtype, device)
    expected = [p.cpu().clone() for p in params]
    assert use_triton(params[0])
    shrink_perturb_(params, 0.4, 0.001, BOUNDS, seed=6)
    shrink_perturb_reference_(expected, 0.4, 0.001, BOUNDS, seed=6)
    for got, want in zip(params, expected):
        assert_bitwise_equal(got.cpu(), want)


def test_views_of_one_buffer_and_separate_tensors_agree(device, assert_bitwise_equal):
    params = make(torch.float32, device, seed=1)
    numels = [p.numel() for p in params]
    flat = torch.cat([p.reshape(-1) for p in params])
    shrink_perturb_(list(flat.split(numels)), 0.3, 0.01, BOUNDS, seed=2)
    shrink_perturb_(params, 0.3, 0.01, BOUNDS, seed=2)
    assert_bitwise_equal(flat, torch.cat([p.reshape(-1) for p in params]))


def test_rejects_bad_arguments(device):
    params = make(torch.float32, device)
    with pytest.raises(ValueError):
        shrink_perturb_(params, 0.5, 0.1, BOUNDS[:-1], seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        shrink_perturb_(params, 0.5, 0.1, BOUNDS, None)
    with pytest.raises(TypeError, match="bounds"):
        shrink_perturb_(params, 0.5, 0.1, None, 0)


def test_formula_and_none_bound(device):
    w = [torch.full((5,), 2.0, device=device), torch.full((3,), 2.0, device=device)]
    shrink_perturb_(w, 0.5, 0.1, [0.2, None], seed=4)  # None: noise bound 1.0
    u = counter_uniform_reference(8, 4)
    noise = torch.cat([(u[:5] * 2 - 1) * 0.2, (u[5:] * 2 - 1) * 1.0])
    assert torch.equal(torch.cat(w).cpu(), 2.0 * 0.5 + noise * 0.1)


def test_non_contiguous(device, assert_bitwise_equal):
    w = torch.randn(30, 20, device=device).t()
    ref = w.cpu().clone()
    shrink_perturb_([w], 0.4, 0.5, [1.0], seed=3)
    shrink_perturb_reference_([ref], 0.4, 0.5, [1.0], seed=3)
    assert_bitwise_equal(w.cpu(), ref)
