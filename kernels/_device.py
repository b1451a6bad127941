"""Triton device functions shared by the kernels: the counter-based generator and the
order-preserving integer key of a float. Their PyTorch twins live in ``reference.py``."""

from __future__ import annotations

from ._dispatch import jit, tl


@jit
def fmix32(x):
    """murmur3-style finalizer on uint32 (multiplications wrap modulo 2**32)."""
    x ^= x >> 16
    x *= 0x7FEB352D
    x ^= x >> 15
    x *= 0x846CA68B
    x ^= x >> 16
    return x


@jit
def counter_uniform(index, k0, k1):
    """float32 uniform in [0, 1) for int64 global indices ``index``; ``k0``, ``k1``: uint32 seed keys."""
    lo = (index & 0xFFFFFFFF).to(tl.uint32)
    hi = (index >> 32).to(tl.uint32)
    h = fmix32(lo ^ k0)
    h = fmix32(h ^ k1 ^ (hi * 0x9E3779B9))
    # 24 random bits times 2**-24: exact in float32, never 1.0.
    return (h >> 8).to(tl.float32) * 5.9604644775390625e-08


@jit
def logical_index(offs, C, H, W, CHANNELS_LAST: tl.constexpr):
    """Row-major index, within its part, of the entry at storage offset ``offs`` (int64).

    Row-major parts: ``offs`` itself. Channels-last ``(N, C, H, W)`` parts (memory order N, H, W, C):
    ``o -> (n, h, w, c) -> ((n * C + c) * H + h) * W + w``, in int64 arithmetic.
    """
    if CHANNELS_LAST:
        c = C.to(tl.int64)
        h = H.to(tl.int64)
        w = W.to(tl.int64)
        wc = w * c
        hwc = h * wc
        n_i = offs // hwc
        r = offs % hwc
        h_i = r // wc
        r2 = r % wc
        w_i = r2 // c
        c_i = r2 % c
        return ((n_i * c + c_i) * h + h_i) * w + w_i
    else:
        return offs


@jit
def seed_key(k):
    """A seed key passed as a signed int32 scalar, reinterpreted as uint32."""
    return k.to(tl.uint32, bitcast=True)


@jit
def order_key(x, MERGE_ZEROS: tl.constexpr):
    """Unsigned key (in uint32) whose integer order is the float order of ``x``.

    ``x``: float32 (32-bit keys), float16 or bfloat16 (16-bit keys). Negative floats have all bits
    flipped, non-negative ones only the sign bit, so -inf < ... < -0.0 < +0.0 < ... < +inf (the
    order of CUDA's ``kthvalue``); every NaN, whatever its sign and payload, gets the largest key,
    as ``torch.sort`` ranks NaN last. NaN is recognised on the bits: Triton's interpreter holds
    bfloat16 as uint16, where ``x != x`` is never true.
    ``MERGE_ZEROS``: give -0.0 the key of +0.0, so that key comparisons equal float comparisons.
    """
    if x.dtype == tl.float32:
        bits = x.to(tl.uint32, bitcast=True)
        sign = tl.full((), 0x80000000, tl.uint32)
        ones = tl.full((), 0xFFFFFFFF, tl.uint32)
        inf = tl.full((), 0x7F800000, tl.uint32)
    else:
        bits = x.to(tl.uint16, bitcast=True).to(tl.uint32)
        sign = tl.full((), 0x8000, tl.uint32)
        ones = tl.full((), 0xFFFF, tl.uint32)
        if x.dtype == tl.float16:
            inf = tl.full((), 0x7C00, tl.uint32)
        else:
            inf = tl.full((), 0x7F80, tl.uint32)
    if MERGE_ZEROS:
        bits = tl.where(bits == sign, bits ^ sign, bits)
    key = tl.where((bits & sign) != 0, bits ^ ones, bits | sign)
    return tl.where((bits & (ones ^ sign)) > inf, ones, key)


@jit
def round_to(x, DTYPE: tl.constexpr):
    """float32 ``x`` rounded to ``DTYPE`` to nearest, ties to even (as ``torch.Tensor.to`` does).

    float32 -> bfloat16 is done on the bits: Triton's interpreter truncates that conversion
    instead of rounding, and the result must be the same on GPU and in the interpreter.
    NaN becomes bfloat16's canonical quiet NaN, like PyTorch's conversion.
    """
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        bits = tl.where(x != x, 0x7FC0, bits)
        return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(DTYPE)


@jit
def to_float32(x):
    """Exact widening to float32; bfloat16 is widened on the bits, since Triton's interpreter
    converts bfloat16 subnormals inexactly."""
    if x.dtype == tl.bfloat16:
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        return x.to(tl.float32)
