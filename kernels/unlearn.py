"""Unlearn: reset the least salient entries of the whole model to fresh uniform values.

Fused path: ``kth_smallest`` radix passes over the saliency (no copy; one pass over all of it when
it is one buffer viewed per parameter, as ``saliency`` and the trainer make it), then one masked
re-initialisation launch per parameter tensor. A launch reads the saliency once and writes only the
reset entries; it never reads the parameters. One device sync at the end, for the returned count.
"""

from __future__ import annotations

import torch

from ._device import counter_uniform, logical_index, order_key, round_to, seed_key
from ._dispatch import BLOCK, cdiv, jit, launch_options, tl, use_triton
from ._layout import adjacent_flat, as_tensors, offsets, part_operands, read_flat
from .radix_select import radix_select
from .reference import f32, unlearn_args, unlearn_reference_
from .rng import kernel_keys


@jit(do_not_specialize=["index_base", "k0", "k1", "C", "H", "W"])
def _unlearn_kernel(
    w_ptr, s_ptr, threshold_ptr, count_ptr, n, index_base, bound, k0, k1, C, H, W,
    CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n
    s = tl.load(s_ptr + offs, mask=inb, other=0.0)
    threshold = tl.load(threshold_ptr)
    # Integer keys: s <= threshold exactly as IEEE compares (zeros merged), whatever the FTZ mode;
    # a NaN threshold has the top key, so everything is reset.
    reset = inb & (order_key(s, True) <= order_key(threshold, True))
    u = counter_uniform(logical_index(offs, C, H, W, CHANNELS_LAST) + index_base, seed_key(k0), seed_key(k1))
    fresh = (u * 2.0 - 1.0) * bound
    tl.store(w_ptr + offs, round_to(fresh, w_ptr.dtype.element_ty), mask=reset)
    tl.atomic_add(count_ptr, tl.sum(reset.to(tl.int64), 0), sem="relaxed")


@torch.no_grad()
def unlearn_(params, saliency, fraction: float, bounds, seed: int) -> int:
    """Reinitialise, in place, the ``int(fraction * total)`` least salient parameter entries.

    Args:
        params: tensors of any float dtype, all modified in place (a single tensor counts as a
            list of one).
        saliency: one tensor per parameter with its numel (any shape and layout), float32, float16
            or bfloat16 (TypeError for other dtypes, on every path), one dtype, same device.
        fraction: in [0, 1]; ``k = int(fraction * total)`` over all parameters.
        bounds: one entry per parameter: a float >= 0, or None (the parameter counts towards the
            threshold but is never reset).
        seed: an int keying the counter-based generator (required).

    Returns:
        The number of entries reset (one host sync). Bit-identical to ``unlearn_reference_``.

    threshold = the k-th smallest saliency over all parameters (None-bound ones included);
    ``k == 0`` resets nothing. Every entry of a bounded parameter with ``saliency <= threshold``
    (float comparison: -0.0 == +0.0) becomes ``(2u - 1) * bound`` (float32, in [-bound, bound), then
    rounded to nearest-even into the parameter dtype), ``u`` from the generator keyed by
    ``(seed, global index)``; all other entries stay bit-identical. NaN saliencies rank above +inf:
    they are reset only when the threshold itself is NaN (k reached them), which then resets every
    entry of the bounded parameters.

    ``kth_smallest`` passes (one over all of the saliency when its tensors lie back to back in one
    buffer), then one launch per bounded parameter, in place without a copy when the parameter and
    its saliency are both contiguous or both channels-last 4-D with the same strides (the kernel
    maps storage offsets to row-major indices, so the reset values do not depend on the layout);
    any other combination copies the parameter (and its saliency) to row-major and back.

    Example::

        >>> params = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        >>> sal = saliency("magnitude", params)
        >>> unlearn_(params, sal, 0.2, [1 / p[0].numel() ** 0.5 for p in params], seed=0)
    """
    params = as_tensors(params, "params")
    if not params or not use_triton(params[0]):
        return unlearn_reference_(params, saliency, fraction, bounds, seed)
    sal, bounds, seed, k = unlearn_args(params, saliency, fraction, bounds, seed)
    if k == 0 or all(b is None for b in bounds):
        return 0
    # the threshold passes are order-independent: saliency tensors are read in storage order
    s_flat = adjacent_flat(sal)
    threshold = radix_select([s_flat] if s_flat is not None else [read_flat(s) for s in sal if s.numel() > 0], k)
    count = torch.zeros(1, dtype=torch.int64, device=params[0].device)
    k0, k1 = kernel_keys(seed)
    for w, s, bound, offset in zip(params, sal, bounds, offsets(params)):
        n = w.numel()
        if bound is None or n == 0:
            continue
        # in place when both are row-major or both channels-last, else copies
        with part_operands([w, s], indexed=True) as ((w_view, s_view), chw, channels_last):
            _unlearn_kernel[(cdiv(n, BLOCK),)](
                w_view, s_view, threshold, count, n, offset, f32(bound), k0, k1, *chw,
                CHANNELS_LAST=channels_last, BLOCK=BLOCK, **launch_options(),
            )
    return int(count.item())
