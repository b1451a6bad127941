"""Exact PyTorch references for the fused unlearn kernels.

Each function here is the specification of its Triton twin: the Triton path must return
bit-identical results (``kth_smallest``: see its note on the sign of zero and NaN payloads).
These functions also serve every call that does not take the Triton path (CPU tensors without
``TRITON_INTERPRET``, or no Triton installed). They favour clarity over memory: they materialise
concatenations, masks and random tensors that the fused kernels never allocate.

The counter-based generator
---------------------------
A uniform number is a pure function of ``(seed, i)`` where ``i`` is the entry's global flat index
(its offset in the row-major concatenation of all tensors of the list), so results do not depend on
block sizes, launch order, layouts, or how the entries are split into tensors::

    k0, k1 = seed_keys(seed)                       # host side, Python ints
    lo, hi = i & 0xFFFFFFFF, i >> 32
    h = fmix32(fmix32(lo ^ k0) ^ k1 ^ (hi * 0x9E3779B9 mod 2**32))
    u = (h >> 8) * 2**-24                          # float32, exactly representable, in [0, 1)

``fmix32`` is the murmur3-style 32-bit finalizer (shifts 16/15/16, multipliers 0x7feb352d and
0x846ca68b, the "lowbias32" constants). Reinitialised values are ``(2u - 1) * bound`` computed in
float32 (``2u - 1`` is exact; the product rounds once) and then cast to the parameter dtype
(round to nearest even).
"""

from __future__ import annotations

import operator
import struct
from typing import Optional

import torch

from ._layout import as_tensors, check_bounds, dense_flat, like, offsets, same_dtype

MASK32 = 0xFFFFFFFF
_MUL1 = 0x7FEB352D
_MUL2 = 0x846CA68B
GOLDEN32 = 0x9E3779B9
_KEY1_SALT = 0x85EBCA6B
U24 = 2.0**-24

ACCUMULATE_MODES = ("abs", "sum", "square")
SALIENCY_KINDS = ("snip", "fim", "magnitude", "random")
# what unlearn_ ranks: the dtypes whose bit patterns the radix select orders
SALIENCY_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- generator


def fmix32(x: int) -> int:
    """The 32-bit finalizer on a Python int (host side)."""
    x &= MASK32
    x ^= x >> 16
    x = (x * _MUL1) & MASK32
    x ^= x >> 15
    x = (x * _MUL2) & MASK32
    x ^= x >> 16
    return x


def seed_keys(seed: int) -> tuple[int, int]:
    """The two 32-bit keys derived from a seed (any Python int, taken modulo 2**64)."""
    s = int(seed) & 0xFFFFFFFFFFFFFFFF
    k0 = fmix32((s & MASK32) ^ fmix32((s >> 32) ^ GOLDEN32))
    k1 = fmix32(k0 ^ _KEY1_SALT)
    return k0, k1


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    # (x * c) mod 2**32 for int64 x in [0, 2**32) without int64 overflow: split c into 16-bit halves.
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def _fmix32_tensor(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, _MUL1)
    x = x ^ (x >> 15)
    x = _mul32(x, _MUL2)
    return x ^ (x >> 16)


def counter_hash_reference(index: torch.Tensor, seed: int) -> torch.Tensor:
    """32-bit hash of ``(seed, index)``; ``index`` int64 >= 0, result int64 in [0, 2**32)."""
    k0, k1 = seed_keys(seed)
    lo = index & MASK32
    hi = index >> 32
    h = _fmix32_tensor(lo ^ k0)
    return _fmix32_tensor(h ^ k1 ^ _mul32(hi, GOLDEN32))


def counter_uniform_reference(n: int, seed: int, offset: int = 0, device=None) -> torch.Tensor:
    """float32 tensor of shape ``[n]``: ``u[j]`` for global indices ``offset .. offset + n - 1``, in [0, 1)."""
    if n < 0 or offset < 0:
        raise ValueError("n and offset must be >= 0")
    index = torch.arange(offset, offset + n, dtype=torch.int64, device=device)
    # 24-bit integers times a power of two: exact in float32.
    return (counter_hash_reference(index, seed) >> 8).to(torch.float32) * U24


def uniform_reference_(x: torch.Tensor, seed: int, offset: int = 0) -> torch.Tensor:
    """Fill ``x`` in place (row-major order) with ``u`` for global indices ``offset ..``; returns ``x``.
    Exact for float32; other dtypes receive the float32 value rounded to nearest (may round to 1.0)."""
    u = counter_uniform_reference(x.numel(), seed, offset, x.device)
    with torch.no_grad():
        x.copy_(u.view(x.shape))
    return x


def f32(x: float) -> float:
    """Round a Python float to the nearest float32 (what a Triton fp32 scalar argument receives)."""
    return struct.unpack("f", struct.pack("f", float(x)))[0]


def reinit_values(u: torch.Tensor, bound: float) -> torch.Tensor:
    """``(2u - 1) * bound`` in float32, the fresh value of a reset entry, in [-bound, bound)."""
    return (u * 2.0 - 1.0) * f32(bound)


# ----------------------------------------------------------------------------- accumulate


def accumulate_args(acc, grad, mode: str) -> tuple[list, list]:
    """Check the arguments of ``accumulate_`` and its reference; the accumulators and gradients as lists."""
    if mode not in ACCUMULATE_MODES:
        raise ValueError(f"mode must be one of {ACCUMULATE_MODES}, got {mode!r}")
    accs = as_tensors(acc, "acc")
    grads = [grad] if isinstance(grad, torch.Tensor) else list(grad)
    if len(grads) != len(accs):
        raise ValueError(f"grad: {len(grads)} tensors for {len(accs)} accumulators")
    for a, g in zip(accs, grads):
        if a.dtype != torch.float32:
            raise ValueError(f"acc must be float32, got {a.dtype}")
        if g is not None and (g.numel() != a.numel() or g.device != a.device):
            raise ValueError(f"grad ({g.numel()} on {g.device}) does not match acc ({a.numel()} on {a.device})")
    return accs, grads


@torch.no_grad()
def accumulate_reference_(acc, grad, mode: str):
    """In place ``acc += |grad|`` ("abs"), ``acc += grad`` ("sum") or ``acc += grad**2`` ("square");
    see ``accumulate.accumulate_``. Returns ``acc``."""
    accs, grads = accumulate_args(acc, grad, mode)
    for a, g in zip(accs, grads):
        if g is None:
            continue
        g = g.reshape(a.shape).to(torch.float32)
        if mode == "abs":
            a.add_(g.abs())
        elif mode == "sum":
            a.add_(g)
        else:
            a.add_(g * g)
    return acc


# ----------------------------------------------------------------------------- saliency


def saliency_out(params: list, out) -> list:
    """The outputs of ``saliency``: ``out`` if given (float32, one tensor per parameter, each
    contiguous or dense in its own layout, e.g. channels-last), else views of one new float32 buffer
    of the total size, each in the layout of its parameter: row-major, or the parameter's own strides
    when it is dense but not contiguous (a channels-last weight gets a channels-last saliency)."""
    if out is not None:
        outs = like(out, params, "out")
        for o in outs:
            if o.dtype != torch.float32 or dense_flat(o) is None:
                raise ValueError(f"out must be dense float32, got {o.dtype} with strides {o.stride()}")
        return outs
    flat = torch.empty(sum(t.numel() for t in params), dtype=torch.float32, device=params[0].device if params else None)
    views = []
    for t, offset in zip(params, offsets(params)):
        if t.is_contiguous() or dense_flat(t) is None:
            views.append(flat[offset : offset + t.numel()].view(t.shape))
        else:
            views.append(torch.as_strided(flat, t.shape, t.stride(), offset))
    return views


def check_saliency_args(kind: str, params: list, acc) -> Optional[list]:
    """The accumulators of ``saliency`` as a list (None for the kinds that read none), checked."""
    if kind not in SALIENCY_KINDS:
        raise ValueError(f"kind must be one of {SALIENCY_KINDS}, got {kind!r}")
    if kind in ("snip", "fim"):
        if acc is None:
            raise ValueError(f"saliency {kind!r} needs the accumulated gradients `acc`")
        accs = like(acc, params, "acc")
        for a in accs:
            if a.dtype != torch.float32:
                raise ValueError(f"acc must be float32, got {a.dtype}")
        return accs
    return None


@torch.no_grad()
def saliency_reference(kind: str, params, acc=None, *, seed: int = 0, out=None):
    """Per-entry importance, float32, one tensor per parameter; see ``criteria.saliency``.

    - ``"snip"``: ``|acc * w|`` (connection sensitivity; ``acc`` holds the accumulated gradients);
    - ``"fim"``: ``acc`` (accumulated squared gradients); without ``out``, ``acc`` itself is returned
      exactly as passed (no copy);
    - ``"magnitude"``: ``|w|``;
    - ``"random"``: ``u`` from the counter-based generator keyed by ``(seed, global index)``.
    """
    params = as_tensors(params, "params")
    accs = check_saliency_args(kind, params, acc)
    if kind == "fim" and out is None:
        return acc  # Fisher saliency is the accumulator itself: nothing to compute, nothing to allocate
    outs = saliency_out(params, out)
    for i, (w, o, offset) in enumerate(zip(params, outs, offsets(params))):
        if kind == "snip":
            value = (accs[i].reshape(w.shape) * w.to(torch.float32)).abs()
        elif kind == "fim":
            value = accs[i]
        elif kind == "magnitude":
            value = w.to(torch.float32).abs()
        else:
            value = counter_uniform_reference(w.numel(), seed, offset, w.device)
        o.copy_(value.reshape(o.shape))
    return outs if out is None else out


# ----------------------------------------------------------------------------- k-th smallest


def check_k(k: int, n: int) -> int:
    if isinstance(k, bool) or int(k) != k:
        raise TypeError(f"k must be an int, got {k!r}")
    k = int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    return k


def kth_smallest_reference(x, k: int) -> torch.Tensor:
    """``torch.kthvalue`` of the concatenation of ``x`` (tensors of one dtype and device, each
    flattened): a 0-d tensor of that dtype on that device."""
    parts = as_tensors(x, "x")
    same_dtype(parts, "x")
    k = check_k(k, sum(t.numel() for t in parts))
    flat = parts[0].reshape(-1) if len(parts) == 1 else torch.cat([t.reshape(-1) for t in parts])
    return torch.kthvalue(flat, k).values


def unlearn_count(fraction: float, total: int) -> int:
    """k = int(fraction * total), the rank of the threshold (the authors' ``kthvalue`` rank)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return int(fraction * total)


def check_saliency_dtype(sal: list) -> None:
    """TypeError unless every saliency tensor is float32, float16 or bfloat16; ValueError if they mix
    dtypes. Both paths of ``unlearn_`` check this, so they accept the same inputs."""
    for v in sal:
        if v.dtype not in SALIENCY_DTYPES:
            raise TypeError(
                f"saliency must be one of {[str(d) for d in SALIENCY_DTYPES]}, got {v.dtype}; "
                "convert it first (e.g. saliency.float())"
            )
    if sal:
        same_dtype(sal, "saliency")


def check_seed(seed) -> int:
    """The seed of an op that draws reset values: an int (TypeError otherwise, None included)."""
    try:
        return operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an int keying the counter-based generator, got {seed!r}") from None


def unlearn_args(params: list, saliency, fraction: float, bounds, seed):
    """The checked arguments of ``unlearn_`` and its reference: ``(saliency list, bounds, seed, k)``."""
    seed = check_seed(seed)
    sal = like(saliency, params, "saliency")
    check_saliency_dtype(sal)
    bounds = check_bounds(bounds, len(params))
    return sal, bounds, seed, unlearn_count(fraction, sum(t.numel() for t in params))


def reset_mask(s: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Entries to reset: ``s <= threshold``; a NaN threshold (k reached the NaNs, which rank last)
    resets everything, NaN saliencies included. Otherwise NaN saliencies are never reset."""
    return (s <= threshold) | torch.isnan(threshold)


# ----------------------------------------------------------------------------- unlearn


@torch.no_grad()
def unlearn_reference_(params, saliency, fraction: float, bounds, seed: int) -> int:
    """Reset the ``int(fraction * total)`` least salient entries; see ``unlearn.unlearn_``."""
    params = as_tensors(params, "params")
    sal, bounds, seed, k = unlearn_args(params, saliency, fraction, bounds, seed)
    if k == 0 or all(b is None for b in bounds):
        return 0
    threshold = kth_smallest_reference(sal, k)
    count = 0
    for w, s, bound, offset in zip(params, sal, bounds, offsets(params)):
        if bound is None or w.numel() == 0:
            continue
        mask = reset_mask(s, threshold).reshape(w.shape)
        fresh = reinit_values(counter_uniform_reference(w.numel(), seed, offset, w.device), bound)
        w.copy_(torch.where(mask, fresh.to(w.dtype).view(w.shape), w))
        count += int(mask.sum())
    return count


@torch.no_grad()
def shrink_perturb_reference_(params, lam: float, sigma: float, bounds, seed: int) -> None:
    """In place ``w = lam * w + sigma * noise``; see ``shrink_perturb.shrink_perturb_``."""
    params = as_tensors(params, "params")
    seed = check_seed(seed)
    bounds = check_bounds(bounds, len(params))
    lam, sigma = f32(lam), f32(sigma)
    for w, bound, offset in zip(params, bounds, offsets(params)):
        if w.numel() == 0:
            continue
        noise = reinit_values(counter_uniform_reference(w.numel(), seed, offset, w.device), 1.0 if bound is None else bound)
        w.copy_((w.to(torch.float32) * lam + noise.view(w.shape) * sigma).to(w.dtype))
