"""Fused gradient accumulation for the saliency criteria: ``acc += f(grad)`` in one pass."""

from __future__ import annotations

import torch

from ._device import to_float32
from ._dispatch import BLOCK, cdiv, jit, launch_options, tl, use_triton
from ._layout import part_operands
from .reference import accumulate_args, accumulate_reference_

_MODE_CODE = {"abs": 0, "sum": 1, "square": 2}


@jit
def _accumulate_kernel(acc_ptr, grad_ptr, n, MODE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n
    g = to_float32(tl.load(grad_ptr + offs, mask=inb, other=0.0))
    acc = tl.load(acc_ptr + offs, mask=inb, other=0.0)
    if MODE == 0:
        acc = acc + tl.abs(g)
    elif MODE == 1:
        acc = acc + g
    else:
        acc = acc + g * g  # two roundings, like the reference: launches disable FMA contraction
    tl.store(acc_ptr + offs, acc, mask=inb)


def _launch(acc: torch.Tensor, grad: torch.Tensor, mode: str) -> None:
    n = acc.numel()
    if n == 0:
        return
    # in place when both are row-major or share one dense layout (e.g. channels-last), else copies
    with part_operands([acc, grad], indexed=False) as ((acc_view, grad_view), _, _):
        _accumulate_kernel[(cdiv(n, BLOCK),)](acc_view, grad_view, n, MODE=_MODE_CODE[mode], BLOCK=BLOCK,
                                              **launch_options())


@torch.no_grad()
def accumulate_(acc, grad, mode: str):
    """Accumulate gradients in place, for the saliency criteria: ``acc += |grad|`` (``"abs"``, the
    authors' SNIP), ``acc += grad`` (``"sum"``, the paper's SNIP: the gradient of the loss over the
    whole subset) or ``acc += grad**2`` (``"square"``, Fisher information).

    Args:
        acc: float32 tensors, one per parameter (a single tensor counts as a list of one).
        grad: tensors of any float dtype, as many as ``acc``, each with the numel of its
            accumulator, on its device; ``None`` entries (parameters without a gradient) are skipped.
        mode: ``"abs"``, ``"sum"`` or ``"square"``.

    Returns:
        ``acc``, as passed. Accumulation is in float32, bit-identical to ``accumulate_reference_``.

    One launch per tensor, over its memory in storage order without a copy when the accumulator
    and the gradient are both contiguous or share sizes and strides in a dense layout (e.g. both
    channels-last); only when their layouts differ is a contiguous copy made (of ``grad``, and of
    ``acc``, which is then copied back).

    Example::

        >>> acc = [torch.zeros_like(p) for p in model.parameters()]
        >>> loss.backward()
        >>> accumulate_(acc, [p.grad for p in model.parameters()], "square")
    """
    accs, grads = accumulate_args(acc, grad, mode)
    if not accs or not use_triton(accs[0]):
        accumulate_reference_(accs, grads, mode)
        return acc
    for a, g in zip(accs, grads):
        if g is not None:
            _launch(a, g, mode)
    return acc
