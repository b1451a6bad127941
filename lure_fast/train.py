"""Training on one mega-batch (SPEC §2): SGD with momentum, a step schedule restarted at every
mega-batch (with an optional linear warm-up, ``warmup_epochs``), validation after every epoch and the
best-validation model kept as a device-side copy.

The step keeps everything on the device: loss and accuracy accumulate in tensors and are read once
per epoch, so nothing inside an epoch waits for the host.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from . import faults
from .metrics import EvalCounter


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast is a real speed-up;
    elsewhere PyTorch emulates bf16 and fp32 is faster."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(p is not None for p in probes):
        return any(p() for p in probes)
    try:  # an older torch without the probes: the kernel's CPU flags
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def autocast_dtype(cfg, device: torch.device):
    """bf16 for ``--precision bf16``, and for ``auto`` on CUDA and on a CPU with native bf16; else None (fp32)."""
    if cfg.precision == "bf16":
        return torch.bfloat16
    if cfg.precision == "auto" and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())):
        return torch.bfloat16
    return None


def single_image_batch(batches: int, batch_size: int):
    """The error for a training batch of one image, which BatchNorm cannot train on where the network's
    last stage is 1x1 (small images): one line naming the fix."""
    from .checkpoint import RunError

    return RunError(f"a training batch holds a single image (the last of {batches} batches of {batch_size}), "
                    "and BatchNorm cannot train on one image this small; pick a --batch-size that leaves no "
                    "image alone")


class Trainer:
    """Owns the model's optimisation: ``train_epoch``, ``evaluate`` and the best-model snapshot."""

    def __init__(self, model: nn.Module, cfg, device: torch.device):
        self.model, self.cfg, self.device = model, cfg, device
        self.amp = autocast_dtype(cfg, device)
        fused = device.type == "cuda"
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, fused=fused or None,
                                         foreach=None if fused else True)
        # compiled for full batches only: a partial last batch (its size changes with every mega-batch
        # as replay grows) runs eagerly with the same parameters, so nothing recompiles mid-stream
        self.compiled = None
        if cfg.compiled_on(device.type):
            # dynamic=False: training (batch_size) and evaluation (eval_batch_size) get one static graph
            # each; automatic-dynamic would otherwise make the batch dimension symbolic on the second size
            self.compiled = torch.compile(model, mode=cfg.compile_mode_on(device.type), dynamic=False)
        self.state = list(model.state_dict().values())  # parameters and buffers, in a fixed order
        self.best = [t.detach().clone() for t in self.state]

    def lr_at(self, epoch: int, done: float = 1.0) -> float:
        """The learning rate of a step of mega-batch epoch ``epoch`` (0-based) after which ``done`` of the
        epoch is complete (0 < done <= 1): lr * gamma^(milestones passed), times min(1, (epoch + done) /
        warmup_epochs) while warming up. Restarts each mega-batch."""
        lr = self.cfg.lr * self.cfg.lr_gamma ** sum(epoch >= m for m in self.cfg.milestones())
        w = self.cfg.warmup_epochs
        return lr * min(1.0, (epoch + done) / w) if w > 0 else lr

    def warming_up(self, epoch: int) -> bool:
        return epoch < self.cfg.warmup_epochs

    def forward(self, x: torch.Tensor, full: int) -> torch.Tensor:
        if self.compiled is not None and x.shape[0] == full:
            return self.compiled(x)
        return self.model(x)

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def train_epoch(self, loader, epoch_key: int, epoch: int) -> dict:
        """One pass over ``loader.epoch(epoch_key)`` as epoch ``epoch`` (0-based) of a mega-batch's
        schedule (``lr_at``; during warm-up the rate changes every step, a plain float in the optimizer,
        so nothing recompiles); returns the mean loss and the running accuracy (in percent, with
        augmentation) of the pass."""
        warm = self.warming_up(epoch)
        steps = max(len(loader), 1)
        self._set_lr(self.lr_at(epoch))
        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        n = 0
        for b, (x, y) in enumerate(loader.epoch(epoch_key)):
            faults.point("batch", b)
            if warm:
                self._set_lr(self.lr_at(epoch, (b + 1) / steps))
            with self._autocast():
                try:
                    out = self.forward(x, self.cfg.batch_size)
                except ValueError as e:  # BatchNorm in training mode, one image whose last stage is 1x1
                    if x.shape[0] == 1 and "more than 1 value per channel" in str(e):
                        raise single_image_batch(len(loader), self.cfg.batch_size) from None
                    raise
                loss = F.cross_entropy(out, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach().float() * y.shape[0]
            correct += (out.detach().argmax(1) == y).sum()
            n += int(y.shape[0])
        return {"loss": float(loss_sum.item()) / max(n, 1), "acc": 100.0 * float(correct.item()) / max(n, 1), "n": n}

    @torch.no_grad()  # not inference_mode: CUDA-graph trees mixing inference-mode and training graphs are fragile
    def evaluate(self, loader) -> dict:
        """Accuracy, errors and ECE of the model in eval mode over ``loader`` (no augmentation)."""
        self.model.eval()
        counter = EvalCounter(self.device)
        for x, y in loader.epoch(0):
            with self._autocast():
                counter.update(self.forward(x, self.cfg.eval_batch_size), y)
        return counter.result()

    @torch.no_grad()
    def snapshot_best(self) -> None:
        for b, t in zip(self.best, self.state):
            b.copy_(t)

    @torch.no_grad()
    def restore_best(self) -> None:
        for b, t in zip(self.best, self.state):
            t.copy_(b)
