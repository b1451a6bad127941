"""The importance criteria of the unlearn step (SNIP, Fisher, magnitude, random: the paper's
Table 8), one pass each, writing only the output buffer."""

from __future__ import annotations

import torch

from ._device import counter_uniform, logical_index, seed_key, to_float32
from ._dispatch import BLOCK, cdiv, jit, launch_options, tl, use_triton
from ._layout import as_tensors, offsets, part_operands
from .reference import check_saliency_args, saliency_out, saliency_reference
from .rng import kernel_keys

_KIND_CODE = {"snip": 0, "fim": 1, "magnitude": 2, "random": 3}


@jit(do_not_specialize=["index_base", "k0", "k1", "C", "H", "W"])
def _saliency_kernel(
    out_ptr, w_ptr, acc_ptr, n, index_base, k0, k1, C, H, W,
    KIND: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n
    if KIND == 0:
        acc = tl.load(acc_ptr + offs, mask=inb, other=0.0)
        w = to_float32(tl.load(w_ptr + offs, mask=inb, other=0.0))
        value = tl.abs(acc * w)
    elif KIND == 1:
        value = tl.load(acc_ptr + offs, mask=inb, other=0.0)
    elif KIND == 2:
        value = tl.abs(to_float32(tl.load(w_ptr + offs, mask=inb, other=0.0)))
    else:
        index = logical_index(offs, C, H, W, CHANNELS_LAST)
        value = counter_uniform(index + index_base, seed_key(k0), seed_key(k1))
    tl.store(out_ptr + offs, value, mask=inb)


def _launch(kind: str, out: torch.Tensor, w: torch.Tensor, acc, index_base: int, keys) -> None:
    n = out.numel()
    if n == 0:
        return
    grid = (cdiv(n, BLOCK),)
    # the tensors the kernel touches; ``out`` first: its layout defines the entries' indices
    operands = [out] + ([w] if kind in ("snip", "magnitude") else []) + ([acc] if kind in ("snip", "fim") else [])
    # in place when all are row-major or share one dense layout (e.g. channels-last), else copies
    with part_operands(operands, indexed=kind == "random", read_first=False) as (views, chw, channels_last):
        o = views[0]  # also stands for the pointers the kind does not read (w: fim/random; acc: magnitude/random)
        w_view = views[1] if kind in ("snip", "magnitude") else o
        acc_view = views[-1] if kind in ("snip", "fim") else o
        _saliency_kernel[grid](
            o, w_view, acc_view, n, index_base, *keys, *chw,
            KIND=_KIND_CODE[kind], CHANNELS_LAST=channels_last, BLOCK=BLOCK, **launch_options(),
        )


@torch.no_grad()
def saliency(kind: str, params, acc=None, *, seed: int = 0, out=None) -> list:
    """Importance of every parameter entry; lower means "reset first".

    Args:
        kind: ``"snip"``: ``|acc * w|``; ``"fim"``: ``acc`` (accumulated squared gradients);
            ``"magnitude"``: ``|w|``; ``"random"``: ``u`` in [0, 1) from the counter-based
            generator keyed by ``(seed, global index)``.
        params: tensors of any float dtype (a single tensor counts as a list of one).
        acc: for ``"snip"`` and ``"fim"``: float32 tensors, one per parameter with its numel
            (see ``accumulate_``).
        seed: keys ``"random"``; unused by the other kinds.
        out: optional float32 tensors, one per parameter, each contiguous or dense in another layout
            (e.g. channels-last); it may be ``acc`` itself (SNIP in place over the accumulator:
            each entry is read before it is written).

    Returns:
        ``out`` as passed; without ``out``, a new list of float32 tensors shaped like the
        parameters: views of one new buffer, each in its parameter's layout when that is dense (a
        channels-last weight gets a channels-last saliency), else row-major. ``"fim"`` without
        ``out`` returns ``acc`` itself, exactly as passed. Bit-identical to ``saliency_reference``.

    One launch per tensor, over its memory in storage order without a copy when the tensors it
    touches (``out``, and ``w``/``acc`` where the kind reads them) are all contiguous or share sizes
    and strides in a dense layout; ``"random"`` needs that layout to be row-major or channels-last
    4-D (the kernel recovers each entry's row-major index, so the values do not depend on the
    layout). Any other combination (e.g. channels-last ``w`` with a row-major ``acc``) copies to
    row-major for that tensor.

    Example::

        >>> sal = saliency("snip", params, acc=acc, out=acc)  # |acc * w|, in place over acc
        >>> sal = saliency("random", params, seed=0)
    """
    params = as_tensors(params, "params")
    if not params or not use_triton(params[0]):
        return saliency_reference(kind, params, acc, seed=seed, out=out)
    accs = check_saliency_args(kind, params, acc)
    if kind == "fim" and out is None:
        return acc  # Fisher saliency is the accumulator itself: nothing to compute, nothing to allocate
    outs = saliency_out(params, out)
    keys = kernel_keys(seed)
    for i, (w, o, offset) in enumerate(zip(params, outs, offsets(params))):
        _launch(kind, o, w, None if accs is None else accs[i], offset, keys)
    return outs if out is None else out
