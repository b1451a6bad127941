"""Dense non-row-major parts (channels-last conv weights, as the trainer keeps them on CUDA): every op
runs over them in place, in storage order, without a layout copy, and gives bit for bit the reference's
result on the same values in row-major layout; operands whose strides differ take the copy path."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from lure_fast.kernels import (
    accumulate_,
    accumulate_reference_,
    kth_smallest,
    kth_smallest_reference,
    saliency,
    saliency_reference,
    shrink_perturb_,
    shrink_perturb_reference_,
    unlearn_,
    unlearn_reference_,
)
from lure_fast.kernels import _layout

# 4-D parts channels-last (odd sizes; (7, 6, 1, 1) is channels-last and row-major at once), mixed with
# a row-major 4-D part, a 2-D and a 1-D part
SHAPES = [(5, 3, 3, 3), (11,), (7, 6, 1, 1), (4, 5, 2, 3), (3, 4), (2, 3, 2, 2)]
CHANNELS_LAST = [True, False, True, True, False, False]
BOUNDS = [0.19, None, 0.5, 1.0, 0.3, 0.05]
CL = torch.channels_last


def _layout_like(t: torch.Tensor, cl: bool) -> torch.Tensor:
    return t.contiguous(memory_format=CL) if cl else t


def make(dtype, device, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [_layout_like((torch.randn(s, generator=gen) * scale).to(dtype).to(device), cl)
            for s, cl in zip(SHAPES, CHANNELS_LAST)]


def row_major(parts):
    return [t.detach().cpu().contiguous() for t in parts]


def check_layouts(parts):
    for t, cl in zip(parts, CHANNELS_LAST):
        if cl:
            assert t.is_contiguous(memory_format=CL), f"{tuple(t.shape)} lost its channels-last layout"


@contextmanager
def no_copies():
    """Fail on any layout copy inside: the copy helpers of the ops, and ``Tensor.contiguous``
    returning new memory."""
    original = torch.Tensor.contiguous

    def guarded(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if out.data_ptr() != self.data_ptr():
            raise AssertionError(f"layout copy of a {tuple(self.shape)} tensor with strides {self.stride()}")
        return out

    def fail(t, *args, **kwargs):
        raise AssertionError(f"copy path taken for a {tuple(t.shape)} tensor with strides {t.stride()}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "contiguous", guarded)
        mp.setattr(_layout, "copied_operands", fail)  # the ops' fallback (part_operands)
        yield


def ptrs(parts):
    return [t.data_ptr() for t in parts]


@pytest.mark.parametrize("mode", ["abs", "sum", "square"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_accumulate_channels_last_in_place(device, assert_bitwise_equal, mode, dtype):
    acc = make(torch.float32, device, 1)
    grad = make(dtype, device, 2)
    want = accumulate_reference_(row_major(acc), row_major(grad), mode)
    before = ptrs(acc)
    with no_copies():
        assert accumulate_(acc, grad, mode) is acc
    assert ptrs(acc) == before
    check_layouts(acc)
    for a, w in zip(acc, want):
        assert_bitwise_equal(a.cpu(), w)


@pytest.mark.parametrize("kind", ["snip", "fim", "magnitude", "random"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_saliency_channels_last_without_copies(device, assert_bitwise_equal, kind, dtype):
    w = make(dtype, device, 3)
    acc = make(torch.float32, device, 4) if kind in ("snip", "fim") else None
    racc = None if acc is None else row_major(acc)
    ref_out = [torch.empty(t.shape) for t in w] if kind == "fim" else None
    want = saliency_reference(kind, row_major(w), racc, seed=7, out=ref_out)
    out = [torch.empty_like(a) for a in acc] if kind == "fim" else None  # empty_like keeps the layout
    with no_copies():
        got = saliency(kind, w, acc, seed=7, out=out)
    check_layouts(got)
    for g, r in zip(got, want):
        assert g.dtype == torch.float32
        assert_bitwise_equal(g.cpu().contiguous(), r)
    if kind == "snip":  # in place over a channels-last accumulator, as the trainer does
        before = ptrs(acc)
        with no_copies():
            assert saliency("snip", w, acc, out=acc) is acc
        assert ptrs(acc) == before
        check_layouts(acc)
        for a, r in zip(acc, want):
            assert_bitwise_equal(a.cpu().contiguous(), r)


def test_saliency_of_a_single_channels_last_tensor(device, assert_bitwise_equal):
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(4, 5, 2, 3, generator=gen).to(device).contiguous(memory_format=CL)
    acc = torch.randn(4, 5, 2, 3, generator=gen).to(device).contiguous(memory_format=CL)
    for kind in ("snip", "magnitude", "random"):
        with no_copies():
            (got,) = saliency(kind, w, acc if kind == "snip" else None, seed=2)  # a list of one
        ref_acc = acc.cpu().contiguous() if kind == "snip" else None
        (want,) = saliency_reference(kind, w.cpu().contiguous(), ref_acc, seed=2)
        assert got.is_contiguous(memory_format=CL)
        assert_bitwise_equal(got.cpu().contiguous(), want)
    out = torch.empty_like(acc)
    with no_copies():
        assert saliency("snip", w, acc, out=out) is out
    (want,) = saliency_reference("snip", w.cpu().contiguous(), acc.cpu().contiguous())
    assert_bitwise_equal(out.cpu().contiguous(), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kth_smallest_reads_channels_last_parts_in_place(device, assert_bitwise_equal, dtype):
    x = make(dtype, device, 6)
    # the same values, channels-last views laid back to back in one buffer (one pass over all of them)
    buf = torch.empty(sum(t.numel() for t in x), dtype=dtype, device=device)
    packed, offset = [], 0
    for t, cl in zip(x, CHANNELS_LAST):
        piece = buf[offset : offset + t.numel()]
        if cl:
            n, c, h, w_ = t.shape
            view = piece.view(n, h, w_, c).permute(0, 3, 1, 2)
        else:
            view = piece.view(t.shape)
        view.copy_(t)
        packed.append(view)
        offset += t.numel()
    assert _layout.adjacent_flat(packed) is not None and _layout.adjacent_flat(x) is None
    total = buf.numel()
    for k in (1, 17, total // 2, total - 3, total):
        want = kth_smallest_reference(row_major(x), k)
        with no_copies():
            a = kth_smallest(x, k)
            b = kth_smallest(packed, k)
            c = kth_smallest(x[0], k if k <= x[0].numel() else 1)
        assert_bitwise_equal(a.cpu(), want)
        assert_bitwise_equal(b.cpu(), want)
        assert_bitwise_equal(c.cpu(), kth_smallest_reference(x[0].cpu().contiguous(), k if k <= x[0].numel() else 1))


@pytest.mark.parametrize("pdtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fraction", [0.3, 1.0])
def test_unlearn_channels_last_in_place(device, assert_bitwise_equal, pdtype, sdtype, fraction):
    params = make(pdtype, device, 8)
    gen = torch.Generator().manual_seed(9)
    # quantised saliency (ties at the threshold), in the layout of its part
    sal = [_layout_like((torch.randint(0, 40, s, generator=gen).float() / 8).to(sdtype).to(device), cl)
           for s, cl in zip(SHAPES, CHANNELS_LAST)]
    ref = row_major(params)
    want = unlearn_reference_(ref, row_major(sal), fraction, BOUNDS, seed=11)
    before = ptrs(params)
    with no_copies():
        got = unlearn_(params, sal, fraction, BOUNDS, seed=11)
    assert got == want > 0
    assert ptrs(params) == before
    check_layouts(params)
    for p, r in zip(params, ref):
        assert_bitwise_equal(p.cpu().contiguous(), r)


def test_unlearn_with_channels_last_saliency_from_saliency(device, assert_bitwise_equal):
    """The trainer's chain: ``saliency`` allocates a saliency in the parameters' layout, ``unlearn_``
    takes it with no copy anywhere (random saliency: the reset values and the scores are both keyed
    by the row-major index)."""
    params = make(torch.float32, device, 12)
    ref = row_major(params)
    with no_copies():
        sal = saliency("random", params, seed=4)
        got = unlearn_(params, sal, 0.4, BOUNDS, seed=13)
    check_layouts(sal)
    want = unlearn_reference_(ref, saliency_reference("random", ref, seed=4), 0.4, BOUNDS, seed=13)
    assert got == want
    for p, r in zip(params, ref):
        assert_bitwise_equal(p.cpu().contiguous(), r)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_shrink_perturb_channels_last_in_place(device, assert_bitwise_equal, dtype):
    params = make(dtype, device, 14)
    ref = row_major(params)
    shrink_perturb_reference_(ref, 0.4, 0.1, BOUNDS, seed=15)
    before = ptrs(params)
    with no_copies():
        assert shrink_perturb_(params, 0.4, 0.1, BOUNDS, seed=15) is None
    assert ptrs(params) == before
    check_layouts(params)
    for p, r in zip(params, ref):
        assert_bitwise_equal(p.cpu().contiguous(), r)


def test_operands_with_different_strides_take_the_copy_path(device, assert_bitwise_equal):
    """Channels-last weights with row-major accumulators / saliencies (or a transposed part, whose
    row-major index the kernels do not recover): exact results through the copy path."""
    w = make(torch.float32, device, 16)
    w.append(torch.randn(6, 5, generator=torch.Generator().manual_seed(17)).to(device).t())  # dense, transposed
    bounds = BOUNDS + [0.7]
    acc = [t.contiguous() for t in make(torch.float32, device, 18)] + [torch.rand(5, 6).to(device)]
    grad = [t.contiguous() if i % 2 else t for i, t in enumerate(w)]  # alternate layouts
    ref_acc = accumulate_reference_(row_major(acc), row_major(grad), "square")
    accumulate_(acc, grad, "square")
    for a, r in zip(acc, ref_acc):
        assert_bitwise_equal(a.cpu().contiguous(), r)
    for kind in ("snip", "magnitude", "random"):
        got = saliency(kind, w, acc if kind == "snip" else None, seed=3)
        want = saliency_reference(kind, row_major(w), row_major(acc) if kind == "snip" else None, seed=3)
        for g, r in zip(got, want):
            assert_bitwise_equal(g.cpu().contiguous(), r)
    sal = saliency("snip", w, acc)
    sal_row_major = [s.contiguous() for s in sal]
    ref = row_major(w)
    want = unlearn_reference_(ref, row_major(sal), 0.5, bounds, seed=19)
    assert unlearn_(w, sal_row_major, 0.5, bounds, seed=19) == want
    shrink_perturb_reference_(ref, 0.9, 0.2, bounds, seed=20)
    shrink_perturb_(w, 0.9, 0.2, bounds, seed=20)
    for p, r in zip(w, ref):
        assert_bitwise_equal(p.cpu().contiguous(), r)
    assert not w[-1].is_contiguous()  # written back in place, layout kept


def test_part_views_plans():
    cl = torch.randn(4, 5, 2, 3).contiguous(memory_format=CL)
    row = cl.contiguous()
    tr = torch.randn(6, 5).t()
    gap = torch.randn(4, 6)[:, :3]
    assert _layout.part_views([row, row.view(-1)], indexed=True)[1:] == (_layout.ROW_MAJOR, False)
    views, chw, channels_last = _layout.part_views([cl, torch.empty_like(cl)], indexed=True)
    assert chw == (5, 2, 3) and channels_last and views[0].data_ptr() == cl.data_ptr()
    assert _layout.part_views([cl, row], indexed=False) is None  # strides differ: copy
    assert _layout.part_views([tr, torch.empty_like(tr)], indexed=False) is not None  # any dense layout
    assert _layout.part_views([tr], indexed=True) is None  # index not recoverable: copy
    assert _layout.part_views([gap, gap], indexed=False) is None  # not dense
    assert _layout.dense_flat(gap) is None and _layout.dense_flat(tr).is_contiguous()


def test_part_operands_copies_write_back_only_what_the_kernel_writes():
    cl = torch.randn(4, 5, 2, 3).contiguous(memory_format=CL)
    row = torch.randn(4, 5, 2, 3)
    before = cl.clone()
    with _layout.part_operands([cl, row], indexed=False) as (views, chw, channels_last):  # strides differ
        assert chw == _layout.ROW_MAJOR and not channels_last
        assert views[1].data_ptr() == row.data_ptr() and views[0].data_ptr() != cl.data_ptr()
        assert torch.equal(views[0], before.reshape(-1))  # filled from the operand (read_first)
        views[0].fill_(2.0)
    assert (cl == 2.0).all() and cl.is_contiguous(memory_format=CL)  # written back, layout kept
    other = torch.randn(4, 5, 2, 3).contiguous(memory_format=CL)
    kept = other.clone()
    with _layout.part_operands([row, other], indexed=False) as (views, _, _):  # a read operand: a copy
        views[1].fill_(3.0)
    assert torch.equal(other, kept)  # never written back


def test_snip_in_place_over_accumulators_of_another_layout(device, assert_bitwise_equal):
    """``out=acc`` (SNIP in place) when the weights are channels-last and the accumulators row-major:
    the copy path reads ``acc`` before it writes it."""
    w = make(torch.float32, device, 21)
    acc = [t.contiguous().abs() for t in make(torch.float32, device, 22)]
    want = saliency_reference("snip", row_major(w), row_major(acc), seed=0)
    got = saliency("snip", w, acc, out=acc)
    assert got is acc
    for g, r in zip(got, want):
        assert_bitwise_equal(g.cpu().contiguous(), r)
