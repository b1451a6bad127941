"""kth_smallest: radix select == torch.kthvalue, bit for bit (zeros: see the sign policy)."""

from __future__ import annotations

import pytest
import torch

from lure_fast.kernels import kth_smallest, kth_smallest_reference, use_triton

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INT_OF = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
# Bit patterns: sign, largest subnormal mantissa, exponent field of inf.
LAYOUT = {
    torch.float32: (0x80000000, 0x007FFFFF, 0x7F800000),
    torch.float16: (0x8000, 0x03FF, 0x7C00),
    torch.bfloat16: (0x8000, 0x007F, 0x7F80),
}


def from_bits(bits: torch.Tensor, dtype) -> torch.Tensor:
    # int64 bit patterns -> floats of dtype (two's-complement wrap for the sign bit).
    width = 32 if dtype == torch.float32 else 16
    bits = torch.where(bits >= 2 ** (width - 1), bits - 2**width, bits)
    return bits.to(INT_OF[dtype]).view(dtype)


def sample(kind: str, n: int, dtype, gen: torch.Generator) -> torch.Tensor:
    sign, sub_max, inf = LAYOUT[dtype]
    if kind == "randn":
        return torch.randn(n, generator=gen).to(dtype)
    if kind == "equal":
        return torch.full((n,), 0.3, dtype=dtype)
    if kind == "ties":  # a handful of distinct values: many ties at every rank
        return (torch.randint(-3, 4, (n,), generator=gen).float() * 0.25).to(dtype)
    if kind == "negative":
        return (-torch.rand(n, generator=gen) - 1e-3).to(dtype)
    if kind == "zeros":  # -0.0 and +0.0 mixed with a few signed values
        choice = torch.randint(0, 4, (n,), generator=gen)
        values = torch.tensor([-0.0, 0.0, -1.5, 2.0])
        return values[choice].to(dtype)
    if kind == "subnormal":  # signed subnormals, zeros and the smallest normals
        mag = torch.randint(0, sub_max + 3, (n,), generator=gen)
        neg = torch.randint(0, 2, (n,), generator=gen).bool()
        return from_bits(torch.where(neg, mag | sign, mag), dtype)
    if kind == "bits":  # any finite or infinite pattern: the whole key space
        mag = torch.randint(0, inf + 1, (n,), generator=gen)
        neg = torch.randint(0, 2, (n,), generator=gen).bool()
        return from_bits(torch.where(neg, mag | sign, mag), dtype)
    raise ValueError(kind)


def expected(x: torch.Tensor, k: int) -> torch.Tensor:
    """torch.kthvalue, with the sign of a zero result set by the order -0.0 < +0.0 (CUDA's)."""
    flat = x.reshape(-1).cpu()
    value = torch.kthvalue(flat, k).values
    if value == 0:
        sign = LAYOUT[x.dtype][0]
        bits = flat.view(INT_OF[x.dtype]).to(torch.int64) & (2 ** (8 * x.element_size()) - 1)
        below_or_neg_zero = int((flat < 0).sum()) + int((bits == sign).sum())
        value = torch.tensor(-0.0 if k <= below_or_neg_zero else 0.0, dtype=x.dtype)
    return value


def check(x, k, assert_bitwise_equal, parts=None):
    got = kth_smallest(x if parts is None else parts, k)
    want = expected(x, k)
    assert got.shape == () and got.dtype == x.dtype and got.device == x.device
    if torch.isnan(want):
        assert torch.isnan(got).item()
    else:
        assert_bitwise_equal(got.cpu(), want, f"k={k}:")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["randn", "equal", "ties", "negative", "zeros", "subnormal", "bits"])
@pytest.mark.parametrize("n", [1, 7, 1000, 4097])
def test_matches_kthvalue(device, assert_bitwise_equal, dtype, kind, n):
    gen = torch.Generator().manual_seed(n)
    x = sample(kind, n, dtype, gen).to(device)
    assert use_triton(x)
    ks = sorted({1, n, (n + 1) // 2, int(torch.randint(1, n + 1, (1,), generator=gen))})
    for k in ks:
        check(x, k, assert_bitwise_equal)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_odd_size(device, assert_bitwise_equal, dtype):
    gen = torch.Generator().manual_seed(0)
    x = sample("bits", 200_003, dtype, gen).to(device)
    for k in (1, 40_000, 200_003):
        check(x, k, assert_bitwise_equal)


def test_ties_at_the_threshold(device, assert_bitwise_equal):
    # 60 % of the entries share the value at rank k: the answer is that value, whatever k inside the run.
    x = torch.cat([torch.full((300,), -1.0), torch.full((600,), 0.5), torch.full((100,), 2.0)])
    x = x[torch.randperm(1000, generator=torch.Generator().manual_seed(1))].to(device)
    for k in (300, 301, 700, 900, 901):
        check(x, k, assert_bitwise_equal)


@pytest.mark.parametrize("dtype", DTYPES)
def test_signed_zero_policy(device, dtype):
    # -0.0 ranks before +0.0 (CUDA kthvalue's order); CPU kthvalue only promises a zero.
    x = torch.tensor([0.0, -0.0, 1.0, -0.0, 0.0, -2.0], dtype=dtype, device=device)
    signs = [torch.signbit(kth_smallest(x, k)).item() for k in range(1, 7)]
    assert signs == [True, True, True, False, False, False]
    assert [kth_smallest(x, k).item() for k in range(1, 7)] == [-2.0, 0.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_ranks_last(device, assert_bitwise_equal, dtype):
    sign, _, inf = LAYOUT[dtype]
    x = torch.randn(1000, generator=torch.Generator().manual_seed(2)).to(dtype)
    nan_bits = torch.tensor([inf | 1, inf | (inf >> 1), sign | inf | 3])  # payloads, and a negative NaN
    x[::100] = from_bits(nan_bits.repeat(4)[:10], dtype)
    x[5] = float("inf")
    x = x.to(device)
    for k in (1, 500, 989, 990):  # 989 finite entries + inf, then 10 NaNs
        check(x, k, assert_bitwise_equal)
    assert kth_smallest(x, 990).item() == float("inf")
    for k in (991, 1000):
        assert torch.isnan(kth_smallest(x, k)).item()
    assert torch.isnan(kth_smallest(torch.full((5,), float("nan"), dtype=dtype, device=device), 1)).item()


def test_sequence_is_global(device, assert_bitwise_equal):
    gen = torch.Generator().manual_seed(3)
    parts = [torch.randn(shape, generator=gen).to(device) for shape in [(64, 3, 3, 3), (64,), (0,), (10, 7), (1,)]]
    cat = torch.cat([p.reshape(-1) for p in parts])
    for k in (1, 17, cat.numel() // 5, cat.numel()):
        check(cat, k, assert_bitwise_equal, parts=parts)
    # Non-contiguous members are read through a contiguous copy.
    t = torch.randn(33, 17, generator=gen).to(device).t()
    check(torch.cat([t.reshape(-1), parts[0].reshape(-1)]), 100, assert_bitwise_equal, parts=[t, parts[0]])


def test_adjacent_views_take_one_pass(device, assert_bitwise_equal):
    flat = torch.randn(5000, generator=torch.Generator().manual_seed(4)).to(device)
    views = [flat[:1000].view(10, 100), flat[1000:1001], flat[1001:]]
    for k in (1, 2500, 5000):
        check(flat, k, assert_bitwise_equal, parts=views)


def test_digit_bins_count_past_int32(device):
    # 2**31 entries do not fit here: seed the global histogram near 2**31 and let a real pass add to
    # it; the bin, the scan's running counts and its rank must all go past 2**31 without wrapping.
    from lure_fast.kernels import radix_select as rs
    from lure_fast.kernels._dispatch import launch_options

    shift, bits = rs.PASSES[32][0]
    x = torch.full((100,), 1.0, device=device)
    digit = (0x3F800000 | 0x80000000) >> shift  # order key of 1.0 (sign bit set), top digit
    hist = torch.zeros(rs.MAX_BINS, dtype=rs.HIST_DTYPE, device=device)
    hist[0] = 2**31 + 7  # entries below 1.0's bin
    hist[digit] = 2**31 - 10
    state = torch.empty(2, dtype=torch.int64, device=device)
    rs._radix_histogram_kernel[(1,)](
        x, x.numel(), state, hist, SHIFT=shift, BITS=bits, FIRST=True, BLOCK=rs.HIST_BLOCK, CHUNKS=1, **launch_options()
    )
    assert hist[digit].item() == 2**31 + 90 and hist.sum().item() == 2**32 + 97
    out_bits = torch.empty((), dtype=torch.int32, device=device)
    k = (2**31 + 7) + (2**31 + 50)
    rs._radix_scan_kernel[(1,)](
        hist, state, out_bits, k, BITS=bits, FIRST=True, LAST=False, KEY_BITS=32, **launch_options()
    )
    assert state.tolist() == [digit, 2**31 + 50]  # (prefix, rank within the bin)


def test_reference_path_without_interpreter(monkeypatch, assert_bitwise_equal):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(999, generator=torch.Generator().manual_seed(5))
    assert not use_triton(x)
    assert_bitwise_equal(kth_smallest(x, 123), torch.kthvalue(x, 123).values)
    assert_bitwise_equal(kth_smallest([x[:500], x[500:]], 600), kth_smallest_reference(x, 600))


def test_float64_falls_back_to_reference(device, assert_bitwise_equal):
    x = torch.randn(100, dtype=torch.float64, generator=torch.Generator().manual_seed(6)).to(device)
    assert_bitwise_equal(kth_smallest(x, 10).cpu(), torch.kthvalue(x.cpu(), 10).values)


def test_rejects_bad_arguments(device):
    x = torch.randn(10, device=device)
    for k in (0, 11, -1):
        with pytest.raises(ValueError):
            kth_smallest(x, k)
    with pytest.raises(TypeError):
        kth_smallest(x, 2.5)
    with pytest.raises(ValueError):
        kth_smallest([x, x.half()], 3)
    with pytest.raises(ValueError):
        kth_smallest([], 1)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_on_gpu_matches_cuda_kthvalue_bitwise(compiled_cuda, assert_bitwise_equal, dtype):
    # Same order as CUDA's radix select, zeros included: bit-identical without the sign fix-up.
    gen = torch.Generator().manual_seed(7)
    x = sample("bits", 11_173_962, dtype, gen).cuda()
    x[: x.numel() // 10] = 0.0
    x[x.numel() // 10 : x.numel() // 5] = -0.0
    for k in (1, 1_000_000, 2_234_792, 11_173_962):
        assert_bitwise_equal(kth_smallest(x, k), torch.kthvalue(x, k).values)
    parts = list(x.split([1728, 64, 64, 36864, 11_173_962 - 1728 - 128 - 36864]))
    assert_bitwise_equal(kth_smallest([p.clone() for p in parts], 2_234_792), torch.kthvalue(x, 2_234_792).values)
