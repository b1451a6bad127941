"""k-th smallest value by radix select: a few histogram passes over the order-preserving integer
key of the float bit patterns, each pass narrowing the prefix of the answer by one digit.

No sort and no copy of the input: pass ``p`` reads every entry once, histograms the ``p``-th digit
of the keys that share the prefix found so far, and a one-program scan picks the digit bucket that
holds the k-th key. float32 keys take three passes (11 + 11 + 10 bits), float16/bfloat16 two
(8 + 8). All state (prefix, remaining rank, result) stays on the device: no host synchronisation.
"""

from __future__ import annotations

import torch

from ._device import order_key
from ._dispatch import cdiv, interpreting, jit, launch_options, tl, use_triton
from ._layout import adjacent_flat, as_tensors, read_flat, same_dtype
from .reference import SALIENCY_DTYPES, check_k, kth_smallest_reference

KEY_BITS = {d: torch.finfo(d).bits for d in SALIENCY_DTYPES}  # float32: 32, float16 and bfloat16: 16
# (shift, bits) of each digit, most significant first.
PASSES = {32: ((21, 11), (10, 11), (0, 10)), 16: ((8, 8), (0, 8))}
_BITS_STORE = {32: torch.int32, 16: torch.int16}
HIST_BLOCK = 2048
MAX_BINS = 2048
# One digit bin may receive every entry, and inputs may hold 2**31 entries or more.
HIST_DTYPE = torch.int64


@jit
def _radix_histogram_kernel(
    x_ptr,
    n,
    state_ptr,
    hist_ptr,
    SHIFT: tl.constexpr,
    BITS: tl.constexpr,
    FIRST: tl.constexpr,
    BLOCK: tl.constexpr,
    CHUNKS: tl.constexpr,
):
    # One program histograms CHUNKS blocks, then adds its counts to the global int64 histogram:
    # one atomic per non-empty bin per program instead of one per entry.
    NBINS: tl.constexpr = 1 << BITS
    pid = tl.program_id(0).to(tl.int64)
    counts = tl.zeros((NBINS,), dtype=tl.int32)
    if not FIRST:
        prefix = tl.load(state_ptr)
    for c in range(CHUNKS):
        offs = (pid * CHUNKS + c) * BLOCK + tl.arange(0, BLOCK)
        inb = offs < n
        key = order_key(tl.load(x_ptr + offs, mask=inb, other=0.0), False)
        digit = ((key >> SHIFT) & (NBINS - 1)).to(tl.int32)
        keep = inb
        if not FIRST:
            keep = keep & ((key >> (SHIFT + BITS)).to(tl.int64) == prefix)
        counts += tl.histogram(digit, NBINS, mask=keep)
    bins = tl.arange(0, NBINS)
    # int32 is exact per program (CHUNKS * BLOCK entries at most); the global bins need int64.
    tl.atomic_add(hist_ptr + bins, counts.to(tl.int64), mask=counts > 0, sem="relaxed")


@jit
def _radix_scan_kernel(
    hist_ptr,
    state_ptr,
    out_bits_ptr,
    k,
    BITS: tl.constexpr,
    FIRST: tl.constexpr,
    LAST: tl.constexpr,
    KEY_BITS: tl.constexpr,
):
    # state = (prefix of the answer's key, rank of the answer among keys sharing that prefix).
    NBINS: tl.constexpr = 1 << BITS
    bins = tl.arange(0, NBINS)
    counts = tl.load(hist_ptr + bins)
    if FIRST:
        prefix = tl.zeros((), tl.int64)
        rank = tl.zeros((), tl.int64) + k
    else:
        prefix = tl.load(state_ptr)
        rank = tl.load(state_ptr + 1)
    running = tl.cumsum(counts, 0)
    # The answer's digit: the first bin whose running count reaches the rank.
    digit = tl.min(tl.where(running >= rank, bins, NBINS), 0).to(tl.int64)
    rank -= tl.sum(tl.where(bins.to(tl.int64) < digit, counts, 0), 0)
    prefix = (prefix << BITS) | digit
    tl.store(state_ptr, prefix)
    tl.store(state_ptr + 1, rank)
    if LAST:
        # Invert order_key: keys with the top bit set came from non-negative floats.
        sign: tl.constexpr = 1 << (KEY_BITS - 1)
        ones: tl.constexpr = (1 << KEY_BITS) - 1
        bits = tl.where((prefix & sign) != 0, prefix ^ sign, prefix ^ ones)
        tl.store(out_bits_ptr, bits.to(out_bits_ptr.dtype.element_ty))


def _chunks(n: int) -> int:
    # Few large programs for big inputs (fewer atomics); many small ones otherwise (and under the
    # interpreter, where a program's cost is its element count anyway).
    if interpreting() or n <= (1 << 20):
        return 1
    return 8


def radix_select(parts: list[torch.Tensor], k: int) -> torch.Tensor:
    """k-th smallest (1-based) over contiguous 1-D tensors ``parts`` of one float dtype and device,
    as a 0-d tensor of that dtype. Any total size (int64 histograms and ranks); launches
    ``passes * (len(parts) + 1)`` kernels; no host sync."""
    dtype, device = parts[0].dtype, parts[0].device
    key_bits = KEY_BITS[dtype]
    passes = PASSES[key_bits]
    hist = torch.zeros(len(passes), MAX_BINS, dtype=HIST_DTYPE, device=device)
    state = torch.empty(2, dtype=torch.int64, device=device)
    out = torch.empty((), dtype=dtype, device=device)
    out_bits = out.view(_BITS_STORE[key_bits])
    options = launch_options()
    for i, (shift, bits) in enumerate(passes):
        for x in parts:
            n = x.numel()
            if n == 0:
                continue
            chunks = _chunks(n)
            _radix_histogram_kernel[(cdiv(n, HIST_BLOCK * chunks),)](
                x, n, state, hist[i], SHIFT=shift, BITS=bits, FIRST=i == 0,
                BLOCK=HIST_BLOCK, CHUNKS=chunks, **options,
            )
        _radix_scan_kernel[(1,)](
            hist[i], state, out_bits, k, BITS=bits, FIRST=i == 0, LAST=i == len(passes) - 1,
            KEY_BITS=key_bits, **options,
        )
    return out


def kth_smallest(x, k: int) -> torch.Tensor:
    """The k-th smallest entry (1-based) over tensors ``x`` (a single tensor counts as a list of
    one): the global k-th of their concatenation, without concatenating. One dtype, one device.

    Returns a 0-d tensor of that dtype and device, equal to
    ``torch.kthvalue(torch.cat([t.flatten() for t in x]), k).values``:

    - bit-identical for every non-zero, non-NaN result (ties, infinities and subnormals included);
    - zeros: the Triton path orders -0.0 before +0.0 and returns the k-th in that order, exactly as
      CUDA's ``kthvalue`` does; CPU ``kthvalue`` treats them as equal and may return either sign
      (the values compare equal, and ``<=``-thresholds select the same entries);
    - NaN ranks above +inf (like ``torch.sort``); when the k-th falls among the NaNs the result is
      a NaN (Triton path: the all-ones-payload NaN, as CUDA's ``kthvalue`` returns).

    Triton path (CUDA tensors, or CPU tensors with ``TRITON_INTERPRET=1``) for float32, float16 and
    bfloat16: radix select, no host sync, and no copy of contiguous or otherwise dense inputs (e.g.
    channels-last: they are read in storage order, which a k-th smallest does not depend on); only
    non-dense views (slices with gaps, overlapping strides) are copied. Other dtypes and plain CPU
    tensors: ``kth_smallest_reference`` (``torch.kthvalue`` over a concatenation).

    Example::

        >>> threshold = kth_smallest([p.abs() for p in params], 5)  # the 5th smallest |w| of them all
    """
    parts = as_tensors(x, "x")
    if not parts:
        raise ValueError("x: no tensors")
    dtype = same_dtype(parts, "x")
    k = check_k(k, sum(t.numel() for t in parts))
    if not use_triton(parts[0]) or dtype not in KEY_BITS:
        return kth_smallest_reference(parts, k)
    # order-independent: dense parts (channels-last included) are read in storage order, no copy
    flat = adjacent_flat(parts)
    if flat is not None:
        return radix_select([flat], k)
    return radix_select([read_flat(t) for t in parts if t.numel() > 0], k)
