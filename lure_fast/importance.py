"""How important each parameter is (SPEC §3): the saliency LURE ranks before it unlearns.

SNIP: |g * w|, with g the gradient of the loss over pi_i (paper: summed over all of pi_i; the authors'
code: |grad| of its first batch of 100); Fisher: squared gradients summed over pi_i; magnitude: |w|;
random: uniform. BatchNorm uses its running statistics (eval mode), so estimating changes no state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels as K


def _view_like(buf: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The 1-D slice ``buf`` viewed with ``p``'s shape and the strides ``torch.empty_like(p)`` would
    get: ``p``'s own when ``p`` is dense (e.g. channels-last), else row-major."""
    return buf.as_strided(p.shape, torch.empty_like(p, device="meta").stride(), buf.storage_offset())


def importance(model: nn.Module, params: list[torch.Tensor], cfg, loader, seed: int) -> list[torch.Tensor]:
    """Saliency of each entry of ``params`` (same shapes, fp32) by ``cfg.importance`` over the batches
    of ``loader`` (pi_i); ``seed`` keys the random criterion."""
    if cfg.importance in ("magnitude", "random"):
        return K.saliency(cfg.importance, params, seed=seed)
    mode = "square" if cfg.importance == "fim" else ("sum" if cfg.importance_batches == "paper" else "abs")
    # one fp32 buffer, viewed per parameter in that parameter's layout (channels-last conv weights on
    # CUDA, whose gradients are channels-last too): the kernels then run over every part in storage
    # order with no layout copies, and the threshold passes read the whole buffer at once
    flat = torch.zeros(sum(p.numel() for p in params), dtype=torch.float32, device=params[0].device)
    acc = [_view_like(a, p) for a, p in zip(flat.split([p.numel() for p in params]), params)]
    was_training = model.training
    model.eval()
    for x, y in loader.epoch(0):
        # set_to_none: after a compiled (CUDA-graph) step the old .grad tensors may live in the graph's
        # memory pool and be overwritten already; zeroing them in place would raise
        model.zero_grad(set_to_none=True)
        # the paper's g is the gradient of the loss over all of pi: sum the per-sample losses
        loss = F.cross_entropy(model(x), y, reduction="sum" if mode == "sum" else "mean")
        loss.backward()
        K.accumulate_(acc, [p.grad for p in params], mode)
        if cfg.importance_batches == "code":  # the authors' loop stops after the first mini-batch
            break
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if cfg.importance == "fim":
        return acc  # Fisher saliency is the accumulated squared gradients themselves
    return K.saliency("snip", params, acc=acc, out=acc)  # |acc * w| in place: no second buffer
