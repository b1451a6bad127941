"""Shrink and perturb (Ash & Adams, 2020), the S&P baseline: ``w = lam * w + sigma * noise`` in one
read-modify-write pass over the flat buffer."""

from __future__ import annotations

from typing import Optional

import torch

from ._device import block_span, counter_uniform, logical_index, round_to, seed_key, to_float32
from ._dispatch import BLOCK, cdiv, jit, launch_options, tl, use_triton
from ._layout import ROW_MAJOR, as_parts, part_bounds, part_operands
from ._segments import block_table
from .reference import check_seed, f32, shrink_perturb_reference_
from .rng import kernel_keys


@jit(do_not_specialize=["index_base", "k0", "k1", "C", "H", "W"])
def _shrink_perturb_kernel(
    w_ptr, ranges_ptr, bounds_ptr, n, index_base, bound, lam, sigma, k0, k1, C, H, W,
    USE_TABLE: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    offs, inb, b = block_span(tl.program_id(0), ranges_ptr, bounds_ptr, n, bound, USE_TABLE, BLOCK)
    w = to_float32(tl.load(w_ptr + offs, mask=inb, other=0.0))
    u = counter_uniform(logical_index(offs, C, H, W, CHANNELS_LAST) + index_base, seed_key(k0), seed_key(k1))
    noise = (u * 2.0 - 1.0) * b
    # Three roundings (two products, one sum), like the reference: launches disable FMA contraction.
    tl.store(w_ptr + offs, round_to(w * lam + noise * sigma, w_ptr.dtype.element_ty), mask=inb)


@torch.no_grad()
def shrink_perturb_(params, lam: float, sigma: float, bounds=None, seed: Optional[int] = None, *, segments=None) -> None:
    """In place ``w = lam * w + sigma * noise`` on every entry, ``noise = (2u - 1) * bound``.

    ``params``: as for ``unlearn_`` (``FlatParameters``, flat buffer + ``segments``, or a sequence).
    ``bounds``: one float per part; None means a noise bound of 1.0 (the part is still perturbed).
    Left out (None): the bounds the segment table records, as for ``unlearn_``. ``seed``: required.
    ``u`` comes from the counter-based generator keyed by ``(seed, global flat index)``, so the noise
    of an entry is the value ``unlearn_`` would give it with the same seed. ``lam``, ``sigma`` and
    the bounds are rounded to float32; the arithmetic is float32, then cast to the parameter dtype.
    Bit-identical to ``shrink_perturb_reference_``. One launch for a flat buffer; otherwise one per
    part, in place without a copy for row-major and channels-last 4-D parts (the kernel maps storage
    offsets to row-major indices, so the noise does not depend on the layout); other layouts are
    copied to row-major and back.
    """
    parts = as_parts(params, segments)
    if not parts.views or not use_triton(parts.views[0]):
        return shrink_perturb_reference_(params, lam, sigma, bounds, seed, segments=segments)
    bounds = part_bounds(bounds, parts)
    k0, k1 = kernel_keys(check_seed(seed))
    lam, sigma = f32(lam), f32(sigma)
    options = dict(BLOCK=BLOCK, **launch_options())
    if parts.flat is not None:
        ranges, bound_table = block_table(parts.numels, bounds, BLOCK, parts.flat.device, 1.0)
        if ranges.shape[0] > 0:
            _shrink_perturb_kernel[(ranges.shape[0],)](
                parts.flat, ranges, bound_table, parts.numel, 0, 0.0, lam, sigma, k0, k1, *ROW_MAJOR,
                USE_TABLE=True, CHANNELS_LAST=False, **options
            )
        return None
    for w, bound, offset in zip(parts.views, bounds, parts.offsets):
        n = w.numel()
        if n == 0:
            continue
        b = f32(1.0 if bound is None else bound)
        with part_operands([w], indexed=True) as ((view,), chw, channels_last):  # row-major or channels-last: in place
            _shrink_perturb_kernel[(cdiv(n, BLOCK),)](
                view, view, view, n, offset, b, lam, sigma, k0, k1, *chw,
                USE_TABLE=False, CHANNELS_LAST=channels_last, **options,
            )
    return None
