"""unlearn_: global threshold + masked re-initialisation, bit-identical to the reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lure_fast.kernels import (
    counter_uniform_reference,
    kth_smallest_reference,
    saliency,
    shrink_perturb_,
    unlearn_,
    unlearn_reference_,
    use_triton,
)

SHAPES = [(64, 3, 3, 3), (64,), (64,), (10, 7), (10,), (1,), (33, 17)]
BOUNDS = [0.19, 1.0, None, 0.3, None, 0.5, 0.05]


def _module(device):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).to(device)


def make(pdtype, sdtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen).to(pdtype).to(device) for s in SHAPES]
    # Quantised saliency: many ties, also at the threshold.
    sal = [(torch.randint(0, 50, s, generator=gen).float() / 8).to(sdtype).to(device) for s in SHAPES]
    return params, sal


def reset_mask(sal, fraction):
    total = sum(s.numel() for s in sal)
    t = kth_smallest_reference([s.cpu() for s in sal], int(fraction * total))
    return [(s.cpu() <= t) for s in sal]


@pytest.mark.parametrize("pdtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fraction", [0.2, 0.55])
def test_matches_reference(device, assert_bitwise_equal, pdtype, sdtype, fraction):
    params, sal = make(pdtype, sdtype, device)
    original = [p.cpu().clone() for p in params]
    expected = [p.clone() for p in original]
    assert use_triton(params[0])
    count = unlearn_(params, sal, fraction, BOUNDS, seed=3)
    want_count = unlearn_reference_(expected, [s.cpu() for s in sal], fraction, BOUNDS, seed=3)
    assert count == want_count
    for got, want in zip(params, expected):
        assert_bitwise_equal(got.cpu(), want)
    # The promised effect, checked directly.
    masks = reset_mask(sal, fraction)
    assert count == sum(int(m.sum()) for m, b in zip(masks, BOUNDS) if b is not None)
    assert count > 0
    for got, orig, mask, bound in zip(params, original, masks, BOUNDS):
        got = got.cpu()
        if bound is None:
            assert_bitwise_equal(got, orig)  # counts towards the threshold, never reset
            continue
        assert_bitwise_equal(got[~mask], orig[~mask])  # untouched entries: same bits
        # [-bound, bound) in float32; a 16-bit dtype may round onto its nearest value of bound.
        assert (got[mask].abs() <= torch.tensor(bound).to(pdtype)).all()


def test_reset_values_follow_the_generator(device):
    params = [torch.zeros(5, 7, device=device), torch.zeros(11, device=device)]
    sal = [torch.zeros(5, 7, device=device), torch.ones(11, device=device)]
    count = unlearn_(params, sal, 35 / 46, [0.25, 1.0], seed=9)
    assert count == 35  # every entry of the first part, none of the second
    u = counter_uniform_reference(35, 9)
    assert torch.equal(params[0].cpu().reshape(-1), (u * 2 - 1) * 0.25)
    assert not params[1].any()


def test_views_of_one_buffer_and_separate_tensors_agree(device, assert_bitwise_equal):
    params, sal = make(torch.float32, torch.float32, device, seed=1)
    numels = [p.numel() for p in params]
    flat = torch.cat([p.reshape(-1) for p in params])
    flat_sal = torch.cat([s.reshape(-1) for s in sal])
    views = [v.view(s) for v, s in zip(flat.split(numels), SHAPES)]
    n_views = unlearn_(views, list(flat_sal.split(numels)), 0.3, BOUNDS, seed=11)  # threshold: one pass
    n_list = unlearn_(params, sal, 0.3, BOUNDS, seed=11)  # threshold: one pass per tensor
    assert n_views == n_list > 0
    assert_bitwise_equal(flat, torch.cat([p.reshape(-1) for p in params]))


def test_parameters_of_a_module(device, assert_bitwise_equal):
    model = _module(device)
    names, params = zip(*model.named_parameters())
    bounds = [0.2 if name.endswith("weight") else None for name in names]
    sal = saliency("magnitude", params)
    twin = [p.detach().cpu().clone() for p in params]
    ptrs = [p.data_ptr() for p in params]
    count = unlearn_(params, sal, 0.2, bounds, seed=5)
    assert count > 0 and count == unlearn_reference_(twin, [s.cpu() for s in sal], 0.2, bounds, 5)
    for p, t in zip(params, twin):
        assert_bitwise_equal(p.detach().cpu(), t)
    assert [p.data_ptr() for p in params] == ptrs  # in place


def test_seed_reproducible_and_different(device, assert_bitwise_equal):
    runs = {}
    for seed in (1, 1, 2):
        params, sal = make(torch.float32, torch.float32, device, seed=4)
        unlearn_(params, sal, 0.2, BOUNDS, seed=seed)
        runs.setdefault(seed, []).append(torch.cat([p.reshape(-1) for p in params]))
    assert_bitwise_equal(runs[1][0], runs[1][1])
    changed = runs[1][0] != runs[2][0]
    assert changed.float().mean().item() > 0.1  # same mask, fresh values differ


def test_all_equal_saliency_resets_every_bounded_entry(device):
    params, _ = make(torch.float32, torch.float32, device)
    sal = [torch.full(s, 0.7, device=device) for s in SHAPES]
    bounded = sum(p.numel() for p, b in zip(params, BOUNDS) if b is not None)
    assert unlearn_(params, sal, 0.2, BOUNDS, seed=0) == bounded


@pytest.mark.parametrize("fraction", [0.0, 1e-5])
def test_k_zero_resets_nothing(device, assert_bitwise_equal, fraction):
    params, sal = make(torch.float32, torch.float32, device)
    before = [p.clone() for p in params]
    assert unlearn_(params, sal, fraction, BOUNDS, seed=0) == 0
    for p, b in zip(params, before):
        assert_bitwise_equal(p, b)


def test_fraction_one_resets_all_bounded(device):
    params, sal = make(torch.float32, torch.float32, device)
    bounded = sum(p.numel() for p, b in zip(params, BOUNDS) if b is not None)
    assert unlearn_(params, sal, 1.0, BOUNDS, seed=0) == bounded


def test_unbounded_parts_count_towards_the_threshold(device, assert_bitwise_equal):
    # The never-reset part holds the 100 smallest saliencies: k = 100 sets the threshold inside it.
    params = [torch.randn(100, device=device), torch.randn(300, device=device)]
    before = [p.clone() for p in params]
    sal = [torch.rand(100, device=device), 1.0 + torch.rand(300, device=device)]
    assert unlearn_(params, sal, 0.25, [None, 1.0], seed=0) == 0
    assert_bitwise_equal(params[1], before[1])
    assert unlearn_(params, sal, 0.5, [None, 1.0], seed=0) == 100


def test_signed_zero_saliency_compares_equal(device):
    # Threshold at rank 1 is a zero; -0.0 and +0.0 entries are both <= it.
    sal = torch.tensor([0.0, 3.0, -0.0, 1.0, 2.0, 0.0, 4.0, 5.0, 6.0, 7.0], device=device)
    w = torch.full((10,), 9.0, device=device)
    assert unlearn_(w, sal, 0.1, [1.0], seed=0) == 3
    assert (w[[0, 2, 5]].abs() < 1).all() and (w[[1, 3, 4, 6, 7, 8, 9]] == 9).all()


def test_nan_saliency_policy(device, assert_bitwise_equal):
    sal = torch.tensor([float("nan"), 0.5, 0.1, float("nan"), 0.3, 0.2, 0.9, 0.4, 0.6, 0.7], device=device)
    w = torch.full((10,), 9.0, device=device)
    ref = w.cpu().clone()
    # NaN ranks last: never at or below a finite threshold.
    assert unlearn_(w, sal, 0.5, [1.0], seed=0) == 5
    assert unlearn_reference_(ref, sal.cpu(), 0.5, [1.0], seed=0) == 5
    assert_bitwise_equal(w.cpu(), ref)
    assert (w[[0, 3]] == 9).all()
    # k reaching the NaNs makes the threshold NaN: everything is reset.
    assert unlearn_(w, sal, 1.0, [1.0], seed=0) == 10


def test_non_contiguous_parts(device, assert_bitwise_equal):
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(20, 30, generator=gen).to(device).t()
    s = torch.rand(20, 30, generator=gen).to(device).t()
    ref = w.cpu().clone()
    n = unlearn_([w], [s], 0.4, [0.5], seed=2)
    assert n == unlearn_reference_([ref], [s.cpu()], 0.4, [0.5], seed=2)
    assert_bitwise_equal(w.cpu(), ref)


def test_rejects_bad_arguments(device):
    params, sal = make(torch.float32, torch.float32, device)
    with pytest.raises(ValueError):
        unlearn_(params, sal, 0.2, BOUNDS[:-1], seed=0)
    with pytest.raises(ValueError):
        unlearn_(params, sal[:-1], 0.2, BOUNDS, seed=0)
    with pytest.raises(ValueError):
        unlearn_(params, sal, 1.5, BOUNDS, seed=0)
    with pytest.raises(ValueError):  # a saliency tensor of another size
        unlearn_(params, sal[:-1] + [torch.zeros(3, device=device)], 0.2, BOUNDS, seed=0)
    with pytest.raises(TypeError, match="seed"):
        unlearn_(params, sal, 0.2, BOUNDS)
    for seed in (None, 1.5, "0"):
        with pytest.raises(TypeError, match="seed must be an int"):
            unlearn_(params, sal, 0.2, BOUNDS, seed)
    with pytest.raises(TypeError, match="bounds"):
        unlearn_(params, sal, 0.2, None, 0)
    with pytest.raises(TypeError, match="expected tensors"):
        unlearn_([params[0], params[1].tolist()], sal[:2], 0.2, BOUNDS[:2], 0)


@pytest.mark.parametrize("path", ["triton", "reference"])
@pytest.mark.parametrize("fraction", [0.5, 0.0])
def test_float64_saliency_is_a_type_error_on_every_path(monkeypatch, path, fraction):
    if path == "reference":
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    params = [torch.randn(10), torch.randn(5)]
    assert use_triton(params[0]) == (path == "triton")
    sal = [torch.rand(10, dtype=torch.float64), torch.rand(5, dtype=torch.float64)]
    for op in (unlearn_, unlearn_reference_):
        with pytest.raises(TypeError, match="float64.*saliency.float"):
            op(params, sal, fraction, [1.0, 1.0], seed=0)
        with pytest.raises(TypeError, match="float64"):
            op(torch.cat(params), torch.cat(sal), fraction, [1.0], seed=0)  # a list of one


def test_reference_path_without_interpreter(monkeypatch, assert_bitwise_equal):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    params, sal = make(torch.float32, torch.float32, "cpu")
    expected = [p.clone() for p in params]
    assert not use_triton(params[0])
    assert unlearn_(params, sal, 0.2, BOUNDS, seed=1) == unlearn_reference_(expected, sal, 0.2, BOUNDS, seed=1)
    for p, e in zip(params, expected):
        assert_bitwise_equal(p, e)


@pytest.mark.gpu
def test_resnet18_sized_on_gpu(compiled_cuda, assert_bitwise_equal):
    gen = torch.Generator(device="cuda").manual_seed(0)
    numels = [1728, 64, 64, 36864, 64, 64] * 50 + [5120, 10]
    total = sum(numels)
    w = torch.randn(total, device="cuda", generator=gen)
    s = torch.randn(total, device="cuda", generator=gen).abs()
    bounds = [0.1 if i % 3 else None for i in range(len(numels))]
    ref = w.clone()
    n = unlearn_(list(w.split(numels)), list(s.split(numels)), 0.2, bounds, seed=7)
    assert n == unlearn_reference_(list(ref.split(numels)), list(s.split(numels)), 0.2, bounds, seed=7)
    assert_bitwise_equal(w, ref)
