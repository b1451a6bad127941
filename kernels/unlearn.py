"""Unlearn: reset the least salient entries of the whole model to fresh uniform values.

Fused path: ``kth_smallest`` radix passes over the saliency (no copy), then one masked
re-initialisation launch over the whole flat parameter buffer, driven by a small per-block table
derived from the segment table. The launch reads the saliency once and writes only the reset
entries; it never reads the parameters. One device sync at the end, for the returned count.
"""

from __future__ import annotations

from typing import Optional

import torch

from ._device import block_span, counter_uniform, logical_index, order_key, round_to, seed_key
from ._dispatch import BLOCK, cdiv, jit, launch_options, tl, use_triton
from ._layout import ROW_MAJOR, adjacent_flat, as_parts, like_parts, part_bounds, part_operands, read_flat
from ._segments import block_table
from .reference import check_saliency_dtype, check_seed, f32, unlearn_count, unlearn_reference_
from .rng import kernel_keys
from .radix_select import radix_select


@jit(do_not_specialize=["index_base", "k0", "k1", "C", "H", "W"])
def _unlearn_kernel(
    w_ptr,
    s_ptr,
    ranges_ptr,
    bounds_ptr,
    threshold_ptr,
    count_ptr,
    n,
    index_base,
    bound,
    k0,
    k1,
    C,
    H,
    W,
    USE_TABLE: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs, inb, b = block_span(tl.program_id(0), ranges_ptr, bounds_ptr, n, bound, USE_TABLE, BLOCK)
    s = tl.load(s_ptr + offs, mask=inb, other=0.0)
    threshold = tl.load(threshold_ptr)
    # Integer keys: s <= threshold exactly as IEEE compares (zeros merged), whatever the FTZ mode;
    # a NaN threshold has the top key, so everything is reset.
    reset = inb & (order_key(s, True) <= order_key(threshold, True))
    u = counter_uniform(logical_index(offs, C, H, W, CHANNELS_LAST) + index_base, seed_key(k0), seed_key(k1))
    fresh = (u * 2.0 - 1.0) * b
    tl.store(w_ptr + offs, round_to(fresh, w_ptr.dtype.element_ty), mask=reset)
    tl.atomic_add(count_ptr, tl.sum(reset.to(tl.int64), 0), sem="relaxed")


@torch.no_grad()
def unlearn_(params, saliency, fraction: float, bounds=None, seed: Optional[int] = None, *, segments=None) -> int:
    """Reinitialise, in place, the ``int(fraction * total)`` least salient parameter entries.

    ``params``: a ``FlatParameters`` (ValueError if its parameters no longer live in its buffer,
    e.g. after ``module.to(...)``), a contiguous 1-D buffer with a ``segments`` table of
    ``(offset, length)`` or ``(offset, length, bound)`` tiling it, or a sequence of tensors (any
    float dtype; all modified in place).
    ``saliency``: one tensor holding the concatenation (e.g. the output of ``saliency`` on the flat
    buffer) or one tensor per part with matching numel; float32/float16/bfloat16 (TypeError for
    other dtypes, on every path), one dtype, same device.
    ``bounds``: one entry per part/segment: a float >= 0, or None (the part counts towards the
    threshold but is never reset). Left out (None): the bounds the segment table records
    (``flatten_parameters(..., bounds=...)``); ValueError if it records none. ``seed``: required int.

    threshold = the k-th smallest saliency over all parts (None-bound ones included), with
    ``k = int(fraction * total)``; ``k == 0`` resets nothing. Every entry of a bounded part with
    ``saliency <= threshold`` (float comparison: -0.0 == +0.0) becomes ``(2u - 1) * bound``
    (float32, in [-bound, bound), then rounded to nearest-even into the parameter dtype), ``u``
    from the counter-based generator keyed by ``(seed, global flat index)``; all other entries
    stay bit-identical. NaN saliencies rank above +inf: they are reset only when the threshold
    itself is NaN (k reached them), which then resets every entry of the bounded parts.

    Returns the number of entries reset (one host sync). Bit-identical to ``unlearn_reference_``.
    With a flat buffer (or parts that are back-to-back views of one, as ``flatten_parameters``
    makes them): ``kth_smallest`` passes plus ONE launch for the whole model. Otherwise one launch
    per part, in place without a copy when the part and its saliency are both contiguous or both
    channels-last 4-D with the same strides (the kernel maps storage offsets to row-major indices,
    so the reset values do not depend on the layout); any other combination copies the part (and
    its saliency) to row-major and back. The threshold passes read every saliency part in storage
    order (no copy for dense layouts; one pass over all parts when they lie back to back).
    """
    parts = as_parts(params, segments)
    if not parts.views or not use_triton(parts.views[0]):
        return unlearn_reference_(params, saliency, fraction, bounds, seed, segments=segments)
    seed = check_seed(seed)
    sal = like_parts(saliency, parts, "saliency")
    check_saliency_dtype(sal)
    bounds = part_bounds(bounds, parts)
    k = unlearn_count(fraction, parts.numel)
    if k == 0 or all(b is None for b in bounds):
        return 0
    device = parts.views[0].device
    # the threshold passes are order-independent: saliency parts are read in storage order
    s_flat = sal.flat if sal.flat is not None else adjacent_flat(sal.views, dense=True)
    s_parts = [s_flat] if s_flat is not None else [read_flat(v) for v in sal.views if v.numel() > 0]
    threshold = radix_select([p for p in s_parts if p.numel() > 0], k)
    count = torch.zeros(1, dtype=torch.int64, device=device)
    k0, k1 = kernel_keys(seed)
    options = dict(BLOCK=BLOCK, **launch_options())
    if parts.flat is not None and sal.flat is not None:
        ranges, bound_table = block_table(parts.numels, bounds, BLOCK, device, None)
        if ranges.shape[0] > 0:
            _unlearn_kernel[(ranges.shape[0],)](
                parts.flat, sal.flat, ranges, bound_table, threshold, count, parts.numel, 0, 0.0, k0, k1, *ROW_MAJOR,
                USE_TABLE=True, CHANNELS_LAST=False, **options,
            )
    else:
        for w, s, bound, offset in zip(parts.views, sal.views, bounds, parts.offsets):
            if bound is None or w.numel() == 0:
                continue
            n = w.numel()
            # in place when both are row-major or both channels-last, else copies
            with part_operands([w, s], indexed=True) as ((w_view, s_view), chw, channels_last):
                _unlearn_kernel[(cdiv(n, BLOCK),)](
                    w_view, s_view, count, count, threshold, count, n, offset, f32(bound), k0, k1, *chw,
                    USE_TABLE=False, CHANNELS_LAST=channels_last, **options,
                )
    return int(count.item())
