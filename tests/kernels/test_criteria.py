"""saliency: SNIP, Fisher, magnitude and random criteria, bit-identical to the reference."""

from __future__ import annotations

import pytest
import torch

from lure_fast.kernels import counter_uniform_reference, saliency, saliency_reference, use_triton

SHAPES = [(64, 3, 3, 3), (64,), (1,), (10, 7), (4097,)]


def _params(dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen).to(dtype) for s in SHAPES]
    params[1][:2] = torch.tensor([-0.0, 0.0])
    return [p.to(device) for p in params]


@pytest.mark.parametrize("kind", ["snip", "fim", "magnitude", "random"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_matches_reference(device, assert_bitwise_equal, kind, dtype):
    params = _params(dtype, device)
    acc = [torch.randn(s, generator=torch.Generator().manual_seed(1)).to(device) for s in SHAPES]
    assert use_triton(params[0])
    got = saliency(kind, params, acc, seed=4)
    want = saliency_reference(kind, [p.cpu() for p in params], [a.cpu() for a in acc], seed=4)
    assert isinstance(got, list) and len(got) == len(params)
    for g, w, p in zip(got, want, params):
        assert g.shape == p.shape and g.dtype == torch.float32
        assert_bitwise_equal(g.cpu(), w)


def test_values(device, assert_bitwise_equal):
    w = torch.tensor([-2.0, 0.5, -0.0, 3.0], device=device)
    acc = torch.tensor([1.0, -4.0, 5.0, 0.0], device=device)
    assert [s.tolist() for s in saliency("snip", [w], [acc])] == [[2.0, 2.0, 0.0, 0.0]]
    assert [s.tolist() for s in saliency("magnitude", [w])] == [[2.0, 0.5, 0.0, 3.0]]
    assert saliency("fim", [w], acc) is acc  # the accumulator itself, as passed: nothing allocated
    (random,) = saliency("random", w, seed=3)  # a single tensor is a list of one
    assert_bitwise_equal(random.cpu(), counter_uniform_reference(4, 3))


def test_sequence_output_is_one_buffer_and_random_uses_global_index(device, assert_bitwise_equal):
    params = _params(torch.float32, device)
    out = saliency("random", params, seed=8)
    total = sum(p.numel() for p in params)
    base = out[0].data_ptr()
    offset = 0
    for o in out:  # back-to-back views of one float32 buffer: unlearn_ reads its threshold in one pass
        assert o.data_ptr() == base + 4 * offset
        offset += o.numel()
    flat = torch.cat([o.reshape(-1) for o in out])
    assert_bitwise_equal(flat.cpu(), counter_uniform_reference(total, 8))
    # The same numbers however the entries are split into tensors.
    assert_bitwise_equal(saliency("random", [torch.cat([p.reshape(-1) for p in params])], seed=8)[0], flat)


@pytest.mark.parametrize("kind", ["snip", "fim", "magnitude", "random"])
def test_out_and_splits_agree(device, assert_bitwise_equal, kind):
    params = _params(torch.float16, device, seed=2)
    acc = [torch.randn(s, generator=torch.Generator().manual_seed(3)).to(device) for s in SHAPES]
    numels = [p.numel() for p in params]
    flat_w = torch.cat([p.reshape(-1) for p in params])
    flat_acc = torch.cat([a.reshape(-1) for a in acc])
    out = torch.full((sum(numels),), float("nan"), device=device)
    assert saliency(kind, [flat_w], [flat_acc], seed=5, out=[out])[0] is out
    listed = saliency(kind, params, acc, seed=5)
    assert_bitwise_equal(out, torch.cat([s.reshape(-1) for s in listed]))
    # Outputs that are separate tensors give the same numbers.
    split_outs = [torch.empty(p.shape, device=device) for p in params]
    saliency(kind, params, acc, seed=5, out=split_outs)
    assert_bitwise_equal(torch.cat([s.reshape(-1) for s in split_outs]), out)


def test_rejects_bad_arguments(device):
    w = torch.ones(4, device=device)
    with pytest.raises(ValueError):
        saliency("snip", w)  # needs acc
    with pytest.raises(ValueError):
        saliency("grasp", w)
    with pytest.raises(ValueError):
        saliency("snip", w, torch.ones(4, device=device, dtype=torch.float16))
    with pytest.raises(ValueError):
        saliency("magnitude", w, out=torch.empty(5, device=device))


@pytest.mark.gpu
def test_allocates_only_the_output_on_gpu(compiled_cuda):
    w = torch.randn(4_000_000, device="cuda")
    acc = torch.randn(4_000_000, device="cuda")
    saliency("snip", w, acc)  # warm-up: compile outside the measured window
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = saliency("snip", w, acc)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    assert extra <= out[0].numel() * 4 + (1 << 20)


def test_channels_last_params_give_the_reference_saliency(device, assert_bitwise_equal):
    import torch
    from lure_fast.kernels import saliency, saliency_reference
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, 3, 3, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    acc = torch.randn(6, 5, 3, 3, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    for kind in ("snip", "magnitude", "random"):
        out = saliency(kind, [w], acc=[acc] if kind == "snip" else None, seed=3)
        ref = saliency_reference(kind, [w.contiguous()], acc=[acc.contiguous()] if kind == "snip" else None, seed=3)
        assert_bitwise_equal(out[0], ref[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_snip_in_place_over_the_accumulator(device, assert_bitwise_equal, dtype):
    """``out=acc``: the saliency overwrites the accumulated gradients (what the trainer does, so the
    unlearn step needs no second parameter-sized buffer) and equals the out-of-place result."""
    params = _params(dtype, device, seed=5)
    flat = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(6)).to(device)
    acc = list(flat.split([p.numel() for p in params]))
    acc = [a.view(p.shape) for a, p in zip(acc, params)]
    want = [s.clone() for s in saliency("snip", params, acc)]
    got = saliency("snip", params, acc, out=acc)
    assert got is acc
    for g, w in zip(got, want):
        assert_bitwise_equal(g, w)
    # the reference (the CPU path), in place too
    refs = saliency_reference("snip", [p.cpu() for p in params], [a.cpu() for a in want])
    again = [a.cpu().clone() for a in want]
    assert saliency_reference("snip", [p.cpu() for p in params], again, out=again) is again
    for r, a in zip(refs, again):
        assert_bitwise_equal(r, a)
