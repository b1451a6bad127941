"""accumulate_: fused acc += f(grad), bit-identical to the reference."""

from __future__ import annotations

import pytest
import torch

from lure_fast.kernels import accumulate_, accumulate_reference_, use_triton

SHAPES = [(1,), (7,), (64, 3, 3, 3), (10, 7), (100_003,)]


def _grads(dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(s, generator=gen).to(dtype) for s in SHAPES]
    grads[1][:3] = torch.tensor([-0.0, 0.0, 1e-40])  # signed zeros and a float32 subnormal
    return [g.to(device) for g in grads]


@pytest.mark.parametrize("mode", ["abs", "sum", "square"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_matches_reference(device, assert_bitwise_equal, mode, dtype):
    grads = _grads(dtype, device)
    start = [torch.randn(s, generator=torch.Generator().manual_seed(9)) for s in SHAPES]
    accs = [a.clone().to(device) for a in start]
    assert use_triton(accs[0])
    for step in range(2):  # accumulating twice exercises the read-modify-write
        assert accumulate_(accs, grads, mode) is accs
    expected = [a.clone() for a in start]
    for step in range(2):
        accumulate_reference_(expected, [g.cpu() for g in grads], mode)
    for got, want in zip(accs, expected):
        assert_bitwise_equal(got.cpu(), want)


@pytest.mark.parametrize("mode", ["abs", "sum", "square"])
def test_views_of_one_buffer_and_separate_tensors_agree(device, assert_bitwise_equal, mode):
    grads = _grads(torch.float32, device, seed=1)
    numels = [g.numel() for g in grads]
    flat_grad = torch.cat([g.reshape(-1) for g in grads])
    grad_views = [v.view(g.shape) for v, g in zip(flat_grad.split(numels), grads)]
    flat_acc = torch.zeros(sum(numels), device=device)
    acc_views = [v.view(g.shape) for v, g in zip(flat_acc.split(numels), grads)]
    accumulate_(acc_views, grad_views, mode)
    separate = [torch.zeros(g.shape, device=device) for g in grads]
    accumulate_(separate, grads, mode)
    assert_bitwise_equal(flat_acc, torch.cat([s.reshape(-1) for s in separate]))
    # A single tensor pair is accepted too (a list of one).
    single = torch.zeros_like(flat_grad)
    accumulate_(single, flat_grad, mode)
    assert_bitwise_equal(single, flat_acc)


def test_mode_semantics(device):
    g = torch.tensor([-2.0, 0.5, -0.0, 3.0], device=device)
    for mode, want in [("abs", [2.0, 0.5, 0.0, 3.0]), ("sum", [-2.0, 0.5, 0.0, 3.0]), ("square", [4.0, 0.25, 0.0, 9.0])]:
        acc = torch.zeros(4, device=device)
        accumulate_(acc, g, mode)
        assert acc.tolist() == want


def test_none_grads_are_skipped_and_non_contiguous_works(device, assert_bitwise_equal):
    acc = [torch.ones(3, device=device), torch.ones(4, 5, device=device).t()]
    grad = [None, torch.full((5, 4), 2.0, device=device)]
    accumulate_(acc, grad, "sum")
    assert acc[0].tolist() == [1.0, 1.0, 1.0]
    assert_bitwise_equal(acc[1], torch.full((4, 5), 3.0, device=device).t())


def test_rejects_bad_arguments(device):
    acc = torch.zeros(4, device=device)
    with pytest.raises(ValueError):
        accumulate_(acc, torch.ones(4, device=device), "mean")
    with pytest.raises(ValueError):
        accumulate_(acc.half(), torch.ones(4, device=device), "sum")
    with pytest.raises(ValueError):
        accumulate_(acc, torch.ones(5, device=device), "sum")
    with pytest.raises(ValueError):
        accumulate_([acc, acc], [torch.ones(4, device=device)], "sum")
