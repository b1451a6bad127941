"""What happens to the model between mega-batches (SPEC §3, §4): the forgetting strategies, as a
registry. A strategy is one function ``forget(model, step) -> entries changed`` and one line,
``@register(name, label, options)``; ``config``, the CLI and ``report`` read names and labels from
:data:`METHODS`.

Every strategy changes values in place, so parameter storage, optimizer state and any compiled graph
stay valid. Randomness is keyed by (seed, mega-batch) (``step.seed``), never drawn from global state,
so a resumed run forgets exactly the same way.

``--reinit-scope`` picks which parameters LURE and LLF touch:
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
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import faults
from . import kernels as K
from .importance import importance


@dataclass
class Step:
    """What a forgetting strategy may use, after the model trained on mega-batch ``megabatch``."""
    cfg: object                      # the run's RunConfig
    megabatch: int                   # 1-based index of the mega-batch just learnt
    seed: int                        # this step's seed: derive_seed(cfg.seed, 1, megabatch)
    optimizer: torch.optim.Optimizer
    importance_loader: object = None  # batches of pi_i, the importance subset (LURE)
    init_state: list | None = None    # the initial state_dict tensors (cold start)


@dataclass(frozen=True)
class Method:
    name: str
    forget: Callable[[nn.Module, Step], int]  # changes the model in place; returns entries changed
    label: Callable[[dict], str]              # its row label in tables, from a run's config dict
    options: tuple[str, ...] = ()             # the RunConfig settings it reads


METHODS: dict[str, Method] = {}


def register(name: str, label: str | Callable[[dict], str], options: tuple[str, ...] = ()):
    """Decorator: add ``forget(model, step) -> int`` to :data:`METHODS` as ``--method name``."""
    def add(forget):
        METHODS[name] = Method(name, forget, label if callable(label) else (lambda cfg: label), tuple(options))
        return forget
    return add


def method_label(cfg: dict) -> str:
    """The table label of a run with config dict ``cfg``."""
    m = METHODS.get(cfg["method"])
    return m.label(cfg) if m is not None else cfg["method"]


def forget_(model: nn.Module, cfg, megabatch: int, optimizer, importance_loader=None, init_state=None) -> dict:
    """Apply ``cfg.method`` in place after mega-batch ``megabatch``. Returns {"reset": entries
    re-initialised (or shrunk), "seconds": wall time}."""
    t0 = time.perf_counter()
    step = Step(cfg, megabatch, derive_seed(cfg.seed, 1, megabatch), optimizer, importance_loader, init_state)
    reset = METHODS[cfg.method].forget(model, step)
    if cfg.reset_momentum:
        reset_momentum_(optimizer)
    return {"reset": int(reset), "seconds": time.perf_counter() - t0}


# -- the strategies ------------------------------------------------------------------------------

@register("bl", "BL (warm start)")
def warm_start(model: nn.Module, step: Step) -> int:
    """Nothing: the next mega-batch starts from the trained model."""
    return 0


def _lure_label(cfg: dict) -> str:
    crit = cfg["importance"].upper() if cfg["importance"] in ("snip", "fim") else cfg["importance"]
    return f"LURE ({crit}, {100 * cfg['reinit_fraction']:g} %)"


@register("lure", _lure_label, ("importance", "reinit_fraction", "reinit_scope", "importance_fraction",
                                "importance_batch_size", "importance_batches"))
def lure(model: nn.Module, step: Step) -> int:
    """Rank the pool by importance on pi_i and re-initialise its least important ``reinit_fraction``."""
    cfg = step.cfg
    _, params, bounds = unlearn_pool(model, cfg.reinit_scope)
    sal = importance(model, params, cfg, step.importance_loader, derive_seed(cfg.seed, 2, step.megabatch))
    faults.point("unlearn", step.megabatch)
    with torch.no_grad():
        return K.unlearn_(params, sal, cfg.reinit_fraction, bounds, step.seed)


@register("sp", "S&P", ("sp_lambda", "sp_sigma"))
def shrink_perturb(model: nn.Module, step: Step) -> int:
    """theta <- lambda * theta + sigma * noise, noise ~ U(-b, b) with each tensor's init bound b."""
    params = list(model.parameters())
    with torch.no_grad():
        K.shrink_perturb_(params, step.cfg.sp_lambda, step.cfg.sp_sigma, [reinit_bound(p) for p in params],
                          step.seed)
    return sum(p.numel() for p in params)


@register("llf", "LLF", ("reinit_scope",))
def later_layer_forget(model: nn.Module, step: Step) -> int:
    """Re-initialise the later layers (see the module docstring for the two scopes)."""
    net = _net(model)
    if step.cfg.reinit_scope == "paper":
        return _reset_modules(net.later_layers(), step.seed, _device(model))
    early = {id(p) for m in net.early_layers() for p in m.parameters()}
    n = 0
    with torch.no_grad(), seeded(step.seed, _device(model)):
        for name, m in net.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in name and id(m.weight) not in early:
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
                n += m.weight.numel()
    return n


@register("fc", "FC reset", ("reinit_scope",))
def classifier_reset(model: nn.Module, step: Step) -> int:
    """Re-initialise the classifier (the last linear layer). Under ``--reinit-scope code``, as the authors'
    code: the modules whose name contains ``linear``, which no model here has (a no-op, as published)."""
    if step.cfg.reinit_scope == "code":
        named = [m for n, m in model.named_modules() if "linear" in n and isinstance(m, nn.Linear)]
        return _reset_modules(named, step.seed, _device(model))
    return _reset_modules([classifier(model)], step.seed, _device(model))


@register("cold", "Cold start", ("cold_momentum",))
def cold_start(model: nn.Module, step: Step) -> int:
    """Back to the initial weights, and zero momentum: a true restart (``--cold-momentum keep``: the
    momentum stays, as in the authors' code)."""
    with torch.no_grad():
        for t, t0 in zip(model.state_dict().values(), step.init_state):
            t.copy_(t0)
    if step.cfg.cold_momentum == "reset":
        reset_momentum_(step.optimizer)
    return sum(p.numel() for p in model.parameters())


# -- shared pieces -------------------------------------------------------------------------------

def derive_seed(seed: int, *keys: int) -> int:
    """A 31-bit seed for one use (e.g. the reinit of mega-batch i), independent of other uses."""
    h = int(seed) & 0xFFFFFFFF
    for k in keys:
        h = (h * 0x9E3779B1 + int(k) * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
        h ^= h >> 15
    return h & 0x7FFFFFFF


@contextmanager
def seeded(seed: int, device: torch.device):
    """Draws inside come from a generator seeded with ``seed``; the global state is restored after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


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


@torch.no_grad()
def _reset_modules(modules, seed, device) -> int:
    n = 0
    with seeded(seed, device):
        for root in modules:
            for m in root.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                    m.reset_parameters()
                    n += sum(p.numel() for p in m.parameters(recurse=False))
    return n


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _net(model: nn.Module) -> nn.Module:
    return getattr(model, "net", model)


def classifier(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@torch.no_grad()
def reset_momentum_(optimizer: torch.optim.Optimizer) -> None:
    """Zero the momentum buffers in place: for SGD without dampening this equals a fresh optimizer."""
    for state in optimizer.state.values():
        buf = state.get("momentum_buffer")
        if buf is not None:
            buf.zero_()
