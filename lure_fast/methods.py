"""What happens to the model between mega-batches (SPEC §3, §4): the forgetting strategies.

``forget_(model, cfg, megabatch, ...)`` runs after the model trained on mega-batch ``i`` (and was
measured) and before it trains on ``i+1``. Every strategy changes values in place, so parameter
storage, optimizer state and any compiled graph stay valid. Randomness is keyed by
(seed, mega-batch), never drawn from global state, so a resumed run forgets exactly the same way.

``--reinit-scope`` picks which parameters a strategy touches:
  * ``paper`` (default): LURE ranks and resets the connections of SNIP, the conv and linear weights;
    LLF resets blocks 3 and 4 and the classifier whole (weights, biases, BatchNorm and its statistics).
  * ``code`` (the authors' code): LURE ranks every parameter and resets those named ``*weight*``
    (conv, linear and BatchNorm weights) from ``kaiming_uniform_(a=sqrt(5))`` of their shape, a 1-D
    tensor seen as [n, 1] (bound 1); LLF resets conv/linear weights outside the stem, layer1, layer2
    and the shortcut convs.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels as K
from .faults import fault


def derive_seed(seed: int, *keys: int) -> int:
    """A 31-bit seed for one use (e.g. the reinit of mega-batch i), independent of other uses."""
    h = int(seed) & 0xFFFFFFFF
    for k in keys:
        h = (h * 0x9E3779B1 + int(k) * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
        h ^= h >> 15
    return h & 0x7FFFFFFF


def reinit_bound(p: torch.Tensor) -> float:
    """Bound of ``kaiming_uniform_(a=sqrt(5))`` for ``p``'s shape (PyTorch's default conv/linear init):
    1/sqrt(fan_in); a 1-D tensor is viewed as [n, 1], so its bound is 1."""
    fan_in = p.numel() // p.shape[0] if p.dim() > 1 else 1
    return 1.0 / math.sqrt(fan_in)


def unlearn_pool(model: nn.Module, scope: str) -> tuple[list[str], list[torch.Tensor], list[float | None]]:
    """(names, params, bounds) that LURE ranks together; bound None = ranked but never reset."""
    if scope == "paper":
        named = [(f"{mn}.weight" if mn else "weight", m.weight) for mn, m in model.named_modules()
                 if isinstance(m, (nn.Conv2d, nn.Linear))]
        return [n for n, _ in named], [p for _, p in named], [reinit_bound(p) for _, p in named]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return ([n for n, _ in named], [p for _, p in named],
            [reinit_bound(p) if "weight" in n else None for n, p in named])


def _view_like(buf: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The 1-D slice ``buf`` viewed with ``p``'s shape and the strides ``torch.empty_like(p)`` would
    get: ``p``'s own when ``p`` is dense (e.g. channels-last), else row-major."""
    return buf.as_strided(p.shape, torch.empty_like(p, device="meta").stride(), buf.storage_offset())


def importance(model: nn.Module, params: list[torch.Tensor], cfg, loader, seed: int) -> list[torch.Tensor]:
    """Saliency of each entry of ``params`` (same shapes, fp32). SNIP: |g * w| with g the gradient
    of the loss over pi (paper: summed over all of pi; code: |grad| of the first batch of 100);
    Fisher: squared gradients summed over the batches of pi; magnitude: |w|; random: uniform.
    BatchNorm uses its running statistics (eval mode), so estimating changes no state."""
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


@contextmanager
def seeded(seed: int, device: torch.device):
    """Draws inside come from a generator seeded with ``seed``; the global state is restored after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _reset_modules(modules, seed, device) -> int:
    n = 0
    with seeded(seed, device):
        for root in modules:
            for m in root.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                    m.reset_parameters()
                    n += sum(p.numel() for p in m.parameters(recurse=False))
    return n


def _net(model: nn.Module) -> nn.Module:
    return getattr(model, "net", model)


def later_layer_forget_(model: nn.Module, scope: str, seed: int, device) -> int:
    net = _net(model)
    if scope == "paper":
        return _reset_modules(net.later_layers(), seed, device)
    early = {id(p) for m in net.early_layers() for p in m.parameters()}
    n = 0
    with seeded(seed, device):
        for name, m in net.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in name and id(m.weight) not in early:
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
                n += m.weight.numel()
    return n


def classifier(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@torch.no_grad()
def reset_momentum_(optimizer: torch.optim.Optimizer) -> None:
    """Zero the momentum buffers in place: for SGD without dampening this equals a fresh optimizer."""
    for state in optimizer.state.values():
        buf = state.get("momentum_buffer")
        if buf is not None:
            buf.zero_()


def forget_(model: nn.Module, cfg, megabatch: int, optimizer, importance_loader=None, init_state=None) -> dict:
    """Apply ``cfg.method`` in place after mega-batch ``megabatch``. Returns {"reset": entries
    re-initialised (or shrunk), "of": entries considered, "seconds": wall time}."""
    t0 = time.perf_counter()
    seed = derive_seed(cfg.seed, 1, megabatch)
    device = next(model.parameters()).device
    total = sum(p.numel() for p in model.parameters())
    reset = 0
    if cfg.method == "lure":
        names, params, bounds = unlearn_pool(model, cfg.reinit_scope)
        sal = importance(model, params, cfg, importance_loader, derive_seed(cfg.seed, 2, megabatch))
        fault("unlearn", megabatch)
        with torch.no_grad():
            reset = int(K.unlearn_(params, sal, cfg.reinit_fraction, bounds, seed))
        total = sum(p.numel() for p in params)
    elif cfg.method == "sp":
        params = [p for p in model.parameters()]
        with torch.no_grad():
            K.shrink_perturb_(params, cfg.sp_lambda, cfg.sp_sigma, [reinit_bound(p) for p in params], seed)
        reset = total
    elif cfg.method == "llf":
        with torch.no_grad():
            reset = later_layer_forget_(model, cfg.reinit_scope, seed, device)
    elif cfg.method == "fc":
        with torch.no_grad():
            reset = _reset_modules([classifier(model)], seed, device)
    elif cfg.method == "cold":
        with torch.no_grad():
            for t, t0_ in zip(model.state_dict().values(), init_state):
                t.copy_(t0_)
        reset_momentum_(optimizer)  # a true restart: no memory of the previous run
        reset = total
    if cfg.reset_momentum and cfg.method != "cold":
        reset_momentum_(optimizer)
    return {"reset": reset, "of": total, "seconds": time.perf_counter() - t0}
