"""Shrink and perturb (Ash & Adams, 2020), the S&P baseline: ``w = lam * w + sigma * noise`` in one
read-modify-write pass over every parameter tensor."""

from __future__ import annotations

import torch

from ._device import counter_uniform, logical_index, round_to, seed_key, to_float32
from ._dispatch import BLOCK, cdiv, jit, launch_options, tl, use_triton
from ._layout import as_tensors, check_bounds, offsets, part_operands
from .reference import check_seed, f32, shrink_perturb_reference_
from .rng import kernel_keys


@jit(do_not_specialize=["index_base", "k0", "k1", "C", "H", "W"])
def _shrink_perturb_kernel(
    w_ptr, n, index_base, bound, lam, sigma, k0, k1, C, H, W,
    CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n
    w = to_float32(tl.load(w_ptr + offs, mask=inb, other=0.0))
    u = counter_uniform(logical_index(offs, C, H, W, CHANNELS_LAST) + index_base, seed_key(k0), seed_key(k1))
    noise = (u * 2.0 - 1.0) * bound
    # Three roundings (two products, one sum), like the reference: launches disable FMA contraction.
    tl.store(w_ptr + offs, round_to(w * lam + noise * sigma, w_ptr.dtype.element_ty), mask=inb)


@torch.no_grad()
def shrink_perturb_(params, lam: float, sigma: float, bounds, seed: int) -> None:
    """In place ``w = lam * w + sigma * noise`` on every entry, ``noise = (2u - 1) * bound``.

    Args:
        params: tensors of any float dtype, all modified in place (a single tensor counts as a
            list of one).
        lam: the shrink factor; ``sigma``: the noise scale.
        bounds: one entry per parameter: a float >= 0, or None for a noise bound of 1.0 (the
            parameter is still perturbed).
        seed: an int keying the counter-based generator (required).

    ``u`` comes from the generator keyed by ``(seed, global index)``, so the noise of an entry is the
    value ``unlearn_`` would give it with the same seed and bound. ``lam``, ``sigma`` and the bounds
    are rounded to float32; the arithmetic is float32, then cast to the parameter dtype.
    Bit-identical to ``shrink_perturb_reference_``. One launch per tensor, in place without a copy
    for row-major and channels-last 4-D tensors (the kernel maps storage offsets to row-major
    indices, so the noise does not depend on the layout); other layouts are copied to row-major and
    back.

    Example::

        >>> params = list(model.parameters())
        >>> shrink_perturb_(params, 0.4, 0.001, [1 / p[0].numel() ** 0.5 for p in params], seed=0)
    """
    params = as_tensors(params, "params")
    if not params or not use_triton(params[0]):
        return shrink_perturb_reference_(params, lam, sigma, bounds, seed)
    k0, k1 = kernel_keys(check_seed(seed))
    bounds = check_bounds(bounds, len(params))
    lam, sigma = f32(lam), f32(sigma)
    for w, bound, offset in zip(params, bounds, offsets(params)):
        n = w.numel()
        if n == 0:
            continue
        b = f32(1.0 if bound is None else bound)
        with part_operands([w], indexed=True) as ((view,), chw, channels_last):  # row-major or channels-last: in place
            _shrink_perturb_kernel[(cdiv(n, BLOCK),)](
                view, n, offset, b, lam, sigma, k0, k1, *chw,
                CHANNELS_LAST=channels_last, BLOCK=BLOCK, **launch_options(),
            )
    return None
