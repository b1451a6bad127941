"""Every setting of a run in one place (SPEC §2 defaults), the presets, and up-front validation.

A run's settings resolve as: dataclass defaults (the paper) <- preset <- flags given explicitly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .models import ARCHS
from .stream import REPLAYS

METHODS = ("bl", "lure", "sp", "llf", "fc", "cold")
IMPORTANCES = ("snip", "fim", "magnitude", "random")
SCOPES = ("paper", "code")
DEVICES = ("auto", "cpu", "cuda")
LOADERS = ("auto", "memory", "torch", "ffcv")
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class ConfigError(ValueError):
    """A setting that cannot work; the message is one line naming it and the fix."""


@dataclass
class RunConfig:
    # data and stream (SPEC §1)
    dataset: str | None = None          # digits (embedded) | cifar10 | cifar100 | any name with --data
    data: str | None = None             # path; None = embedded digits or a torchvision download
    image_size: int | None = None       # resize ImageFolder images to this size
    replay: str = "full"
    megabatches: int = 8
    megabatch_size: int | None = None   # None: training-set size // megabatches
    buffer_size: int = 186              # buffer replay: samples added per mega-batch (paper 186, code 182)
    shuffle: bool | None = None         # permute the training set with the seed before cutting; None (auto):
                                        # natural order for torchvision's CIFAR folders (SPEC §1, the
                                        # authors' order), permuted for everything else (ImageFolder trees
                                        # list their files class by class)
    # method (SPEC §3, §4)
    method: str = "lure"
    importance: str = "snip"
    reinit_fraction: float = 0.2
    reinit_scope: str = "paper"         # paper: conv/linear weights; code: every param named *weight*
    importance_fraction: float = 0.2    # pi_i = 20 % of the mega-batch's training set
    importance_batch_size: int = 100
    importance_batches: str = "paper"   # paper: all of pi, gradients summed; code: first batch, |grad| summed
    sp_lambda: float = 0.4
    sp_sigma: float = 0.001
    reset_momentum: bool = False        # the code keeps momentum across mega-batches
    # model and optimisation (SPEC §2)
    arch: str = "resnet18"
    width: int = 64
    stem: str = "cifar"
    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.1
    lr_milestones: tuple[int, ...] | None = None  # None: 40 % and 80 % of the epochs (20, 40 of 50)
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0          # linear lr warm-up at the start of every mega-batch (0: none, the paper)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    augment: bool = True
    # execution
    seed: int = 0
    device: str = "auto"
    loader: str = "auto"                # auto: see run.choose_loader
    precision: str = "auto"             # auto: bf16 autocast on CUDA, fp32 on the CPU
    compile: bool | None = None         # None (auto): compiled on CUDA, eager on the CPU
    compile_mode: str = "auto"          # torch.compile mode; auto: reduce-overhead (CUDA graphs) on CUDA
    eval_batch_size: int = 1024
    checkpoint_every: int = 1           # epochs between checkpoints; 0: mega-batch boundaries only
    checkpoint_interval: float = 30.0   # and at least this many seconds since the last one (0: no minimum)
    preset: str | None = None

    def milestones(self) -> tuple[int, ...]:
        if self.lr_milestones is not None:
            return tuple(self.lr_milestones)
        return (max(1, round(0.4 * self.epochs)), max(1, round(0.8 * self.epochs)))

    def compiled_on(self, device_type: str) -> bool:
        """Whether the model is compiled on a device of this type (``--compile``/``--no-compile``, else
        only on CUDA: on a CPU compiling costs more than it saves for a run of this size)."""
        return device_type == "cuda" if self.compile is None else bool(self.compile)

    def compile_mode_on(self, device_type: str) -> str:
        """The torch.compile mode: ``auto`` is reduce-overhead (CUDA graphs, the win at batch 64, where
        a ResNet-18 step is launch-bound) on CUDA and default elsewhere."""
        if self.compile_mode != "auto":
            return self.compile_mode
        return "reduce-overhead" if device_type == "cuda" else "default"

    def shuffled(self, layout: str) -> bool:
        """Whether the stream permutes the training set before cutting it, for a dataset of ``layout``."""
        return self.shuffle if self.shuffle is not None else layout not in ("cifar10", "cifar100")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(self.milestones())
        return d


PRESETS: dict[str, dict] = {
    # SPEC §2 exactly: ResNet-18, 8 x 6,250, 50 epochs, batch 64, lr 0.1 decayed at 20 and 40
    "paper": {},
    # a larger batch for a GPU: the learning rate scaled linearly with the batch (0.1 per 64 images, as
    # in the paper, so 0.8 at 512) and warmed up linearly over the first 5 epochs of every mega-batch
    # (the schedule restarts at the full rate each time); milestones, epochs and everything else as paper
    "fast": {"batch_size": 512, "lr": 0.8, "warmup_epochs": 5.0},
    # the embedded digits (1,500 train images of 8x8): a narrow ResNet-18 and a short stream that
    # runs bl, lure, sp and llf in a few minutes on two CPU cores
    "digits": {"megabatches": 4, "epochs": 20, "batch_size": 32, "width": 16, "eval_batch_size": 512},
    # two tiny mega-batches, for smoke tests
    "tiny": {"megabatches": 2, "megabatch_size": 100, "epochs": 2, "batch_size": 32, "width": 8,
             "eval_batch_size": 256},
}


def resolve(explicit: dict) -> RunConfig:
    """Defaults <- preset <- ``explicit`` (only the keys a user actually set)."""
    explicit = {k: v for k, v in explicit.items() if v is not None}
    preset = explicit.get("preset")
    if preset is None:
        embedded = explicit.get("data") is None and explicit.get("dataset") in (None, "digits")
        preset = "digits" if embedded else "paper"
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset}: unknown; choose one of {', '.join(PRESETS)}")
    names = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = set(explicit) - names
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values = {**PRESETS[preset], **explicit, "preset": preset}
    if isinstance(values.get("lr_milestones"), list):
        values["lr_milestones"] = tuple(values["lr_milestones"])
    cfg = RunConfig(**values)
    validate(cfg)
    return cfg


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise ConfigError(f"--{name.replace('_', '-')} {value}: unknown; choose one of {', '.join(options)}")


def _range(name: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> None:
    flag = f"--{name.replace('_', '-')}"
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or \
          (hi is not None and (value >= hi if hi_open else value > hi))
    if bad:
        lo_s = "" if lo is None else ("(" if lo_open else "[") + f"{lo}"
        hi_s = "" if hi is None else f"{hi}" + (")" if hi_open else "]")
        rng = f"{lo_s}, {hi_s}" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else f"<= {hi}")
        raise ConfigError(f"{flag} {value}: must be in {rng}")


def validate(cfg: RunConfig) -> None:
    """Check every name and numeric range that needs no data; raises :class:`ConfigError`."""
    _choice("method", cfg.method, METHODS)
    _choice("importance", cfg.importance, IMPORTANCES)
    _choice("reinit_scope", cfg.reinit_scope, SCOPES)
    _choice("importance_batches", cfg.importance_batches, SCOPES)
    _choice("replay", cfg.replay, REPLAYS)
    _choice("arch", cfg.arch, ARCHS)
    _choice("stem", cfg.stem, ("cifar", "imagenet"))
    _choice("device", cfg.device, DEVICES)
    _choice("loader", cfg.loader, LOADERS)
    _choice("precision", cfg.precision, PRECISIONS)
    _choice("compile_mode", cfg.compile_mode, COMPILE_MODES)
    _range("reinit_fraction", cfg.reinit_fraction, 0, 1, lo_open=True, hi_open=True)
    _range("importance_fraction", cfg.importance_fraction, 0, 1, lo_open=True)
    _range("sp_lambda", cfg.sp_lambda, 0, 1)
    _range("sp_sigma", cfg.sp_sigma, 0)
    _range("megabatches", cfg.megabatches, 1)
    if cfg.megabatch_size is not None:
        _range("megabatch_size", cfg.megabatch_size, 10)
    _range("buffer_size", cfg.buffer_size, 0)
    _range("epochs", cfg.epochs, 1)
    _range("batch_size", cfg.batch_size, 1)
    _range("eval_batch_size", cfg.eval_batch_size, 1)
    _range("importance_batch_size", cfg.importance_batch_size, 1)
    _range("lr", cfg.lr, 0, lo_open=True)
    _range("lr_gamma", cfg.lr_gamma, 0, 1, lo_open=True)
    _range("warmup_epochs", cfg.warmup_epochs, 0, cfg.epochs)
    _range("momentum", cfg.momentum, 0, 1, hi_open=True)
    _range("weight_decay", cfg.weight_decay, 0)
    _range("width", cfg.width, 1)
    _range("checkpoint_every", cfg.checkpoint_every, 0)
    _range("checkpoint_interval", cfg.checkpoint_interval, 0)
    if cfg.image_size is not None:
        _range("image_size", cfg.image_size, 8)
    for m in cfg.milestones():
        if not 0 < m <= cfg.epochs:
            raise ConfigError(f"--lr-milestones {','.join(map(str, cfg.milestones()))}: each must be in "
                              f"[1, {cfg.epochs}] (the epochs of a mega-batch)")
    if cfg.dataset == "digits" and cfg.data is not None:
        raise ConfigError("--dataset digits is the embedded data and takes no --data; drop one of them")


# settings that change when and how a run is saved or shown, never its results: a resume may change them
NOT_RESULTS = ("preset", "checkpoint_every", "checkpoint_interval")


def diff(a: dict, b: dict) -> list[str]:
    """Names of the settings whose values differ between two ``to_dict()`` configurations."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
