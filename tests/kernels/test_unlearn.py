"""unlearn_: global threshold + masked re-initialisation, bit-identical to the reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lure_fast.kernels import (
    counter_uniform_reference,
    flatten_parameters,
    kth_smallest_reference,
    saliency,
    shrink_perturb_,
    unlearn_,
    unlearn_reference_,
    use_triton,
)

SHAPES = [(64, 3, 3, 3), (64,), (64,), (10, 7), (10,), (1,), (33, 17)]
BOUNDS = [0.19, 1.0, None, 0.3, None, 0.5, 0.05]


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


def test_flat_buffer_and_list_agree(device, assert_bitwise_equal):
    params, sal = make(torch.float32, torch.float32, device, seed=1)
    numels = [p.numel() for p in params]
    flat = torch.cat([p.reshape(-1) for p in params])
    flat_sal = torch.cat([s.reshape(-1) for s in sal])
    segments = [(sum(numels[:i]), n) for i, n in enumerate(numels)]
    n_flat = unlearn_(flat, flat_sal, 0.3, BOUNDS, seed=11, segments=segments)  # one launch
    n_list = unlearn_(params, sal, 0.3, BOUNDS, seed=11)  # one launch per part
    assert n_flat == n_list
    assert_bitwise_equal(flat, torch.cat([p.reshape(-1) for p in params]))
    # Views of the flat buffer passed as a list are recognised as flat and give the same result.
    flat2 = torch.cat([p.reshape(-1) for p in make(torch.float32, torch.float32, device, seed=1)[0]])
    views = [v.view(s) for v, s in zip(flat2.split(numels), SHAPES)]
    assert unlearn_(views, list(flat_sal.split(numels)), 0.3, BOUNDS, seed=11) == n_flat
    assert_bitwise_equal(flat2, flat)


def test_flat_parameters_of_a_module(device, assert_bitwise_equal):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).to(device)
    flat = flatten_parameters(model)
    bounds = [0.2 if name.endswith("weight") else None for name in flat.names]
    sal = saliency("magnitude", flat.data)
    before = flat.data.clone()
    twin = [p.detach().cpu().clone() for p in flat.params]
    ptrs = [p.data_ptr() for p in flat.params]
    count = unlearn_(flat, sal, 0.2, bounds, seed=5)
    assert count == unlearn_reference_(twin, [s.cpu() for s in sal.split([s.length for s in flat.segments])], 0.2, bounds, 5)
    assert_bitwise_equal(flat.data.cpu(), torch.cat([t.reshape(-1) for t in twin]))
    assert [p.data_ptr() for p in flat.params] == ptrs  # in place: the buffer never moves
    assert not torch.equal(before, flat.data)


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
    flat = torch.zeros(10, device=device)
    with pytest.raises(ValueError):
        unlearn_(flat, torch.zeros(10, device=device), 0.5, [1.0, 1.0], seed=0, segments=[(0, 4), (5, 5)])
    with pytest.raises(TypeError, match="seed"):
        unlearn_(params, sal, 0.2, BOUNDS)
    with pytest.raises(ValueError, match="segment table records no reinit bound"):
        unlearn_(params, sal, 0.2, seed=0)  # a list has no segment table


def _module(device):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).to(device)


def test_bounds_come_from_the_segment_table(device, assert_bitwise_equal):
    recorded, explicit = flatten_parameters(_module(device)), flatten_parameters(_module(device))
    bounds = [0.2 if name.endswith("weight") else None for name in recorded.names]
    with pytest.raises(ValueError, match="segment table records no reinit bound"):
        unlearn_(recorded, saliency("magnitude", recorded.data), 0.2, seed=5)
    recorded.bounds = bounds
    sal = saliency("magnitude", recorded.data)
    count = unlearn_(recorded, sal, 0.2, seed=5)
    assert count > 0 and count == unlearn_(explicit, sal.clone(), 0.2, bounds, 5)
    assert_bitwise_equal(recorded.data, explicit.data)
    shrink_perturb_(recorded, 0.5, 0.1, seed=7)
    shrink_perturb_(explicit, 0.5, 0.1, bounds, seed=7)
    assert_bitwise_equal(recorded.data, explicit.data)
    # explicit bounds override the table; a raw buffer takes (offset, length, bound) rows as well
    assert unlearn_(recorded, sal, 0.2, [None] * len(bounds), 5) == 0
    buffer = explicit.data.clone()
    assert unlearn_(buffer, sal, 0.2, seed=6, segments=recorded.segments) == unlearn_(explicit, sal, 0.2, bounds, 6)
    assert_bitwise_equal(buffer, explicit.data)


@pytest.mark.parametrize("path", ["triton", "reference"])
def test_stale_flat_parameters_raise_instead_of_writing(monkeypatch, assert_bitwise_equal, path):
    if path == "reference":
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    model = _module("cpu")
    flat = flatten_parameters(model, bounds=[0.5] * len(list(model.parameters())))
    assert use_triton(flat.data) == (path == "triton")
    sal = saliency("magnitude", flat.data)
    model.to(torch.float64)  # new storage: flat.data is no longer what the model uses
    before = flat.data.clone()
    with pytest.raises(ValueError, match=r"0\.weight no longer lives in the flat buffer"):
        unlearn_(flat, sal, 0.5, seed=0)
    with pytest.raises(ValueError, match="flatten_parameters"):
        shrink_perturb_(flat, 0.5, 0.1, seed=0)
    assert_bitwise_equal(flat.data, before)


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
            op(torch.cat(params), torch.cat(sal), fraction, [1.0, 1.0], seed=0, segments=[(0, 10), (10, 5)])


def test_reference_path_without_interpreter(monkeypatch, assert_bitwise_equal):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    params, sal = make(torch.float32, torch.float32, "cpu")
    expected = [p.clone() for p in params]
    assert not use_triton(params[0])
    assert unlearn_(params, sal, 0.2, BOUNDS, seed=1) == unlearn_reference_(expected, sal, 0.2, BOUNDS, seed=1)
    for p, e in zip(params, expected):
        assert_bitwise_equal(p, e)


@pytest.mark.gpu
def test_resnet18_sized_flat_buffer_on_gpu(compiled_cuda, assert_bitwise_equal):
    gen = torch.Generator(device="cuda").manual_seed(0)
    numels = [1728, 64, 64, 36864, 64, 64] * 50 + [5120, 10]
    total = sum(numels)
    w = torch.randn(total, device="cuda", generator=gen)
    s = torch.randn(total, device="cuda", generator=gen).abs()
    segments = [(sum(numels[:i]), n) for i, n in enumerate(numels)]
    bounds = [0.1 if i % 3 else None for i in range(len(numels))]
    ref = w.clone()
    n = unlearn_(w, s, 0.2, bounds, seed=7, segments=segments)
    assert n == unlearn_reference_(ref, s, 0.2, bounds, seed=7, segments=segments)
    assert_bitwise_equal(w, ref)
