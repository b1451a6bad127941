"""Every setting of a run, declared once (SPEC §2 defaults): its default, its command-line flag, help,
choices or range, the paper's value and its group. The CLI, validation and the docs read these
declarations; nothing restates them. Also: the presets and the resolution of a run's settings,

    dataclass defaults (the paper) <- preset <- flags given explicitly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .methods import METHODS
from .models import ARCHS
from .stream import REPLAYS, SHOTS_DRAWS

IMPORTANCES = ("snip", "fim", "magnitude", "random")
SCOPES = ("paper", "code")
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
GROUPS = ("data and stream", "method", "model and training", "execution")
PROFILES = ("paper", "authors")


class ConfigError(ValueError):
    """A setting that cannot work; the message is one line naming it and the fix."""


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
    # real CIFAR-10 on a 2-core CPU in about half an hour for bl, lure, sp and llf over three seeds
    # (docs/small-scale.md): every mega-batch from the second fits its training set, and a warm start
    # generalises worse than a cold start, as in the paper; LURE's gain does not show at this scale.
    # Real data only: pass --data (a CIFAR-10 folder) or --dataset cifar10
    "small": {"megabatches": 3, "megabatch_size": 2000, "epochs": 20, "width": 16,
              "augment": False},
    # two tiny mega-batches, for smoke tests
    "tiny": {"megabatches": 2, "megabatch_size": 100, "epochs": 2, "batch_size": 32, "width": 8,
             "eval_batch_size": 256},
}


# what --profile authors sets where no flag says otherwise: the published code's behaviour (SPEC §8), for every
# method, then per method (its warm-start script trains BL at a constant rate: ALMA.py rebuilds its scheduler
# with gamma=1, while LURE_main.py is run with --gamma 0.1)
AUTHORS = {"reinit_scope": "code", "importance_batches": "code", "importance_data": "code", "sp_lambda": 0.3,
           "val_augment": True, "cold_momentum": "keep", "buffer_size": 182, "val_pool": "code",
           "buffer_draws": "code", "vgg": "code", "shots_draw": "code"}
AUTHORS_BY_METHOD = {"bl": {"lr_gamma": 1.0}}
# profile settings that qualify another setting, applied only where that one is set: a run without --shots keeps
# shots_draw at its default, so a run saved before shots_draw existed still matches its settings on --resume
QUALIFIES = {"shots_draw": "shots"}


def profile_settings(profile: str, method: str) -> dict:
    """The settings ``--profile`` changes for ``method`` (nothing for ``paper``)."""
    if profile != "authors":
        return {}
    return {**AUTHORS, **AUTHORS_BY_METHOD.get(method, {})}


def setting(default, help: str, group: str, *, choices=None, lo=None, hi=None, lo_open=False, hi_open=False,
            paper=None):
    """A field of :class:`RunConfig` with what the CLI and validation need: ``choices`` (a sequence or a
    live mapping such as the method registry), a numeric range [lo, hi] (open ends with ``lo_open`` /
    ``hi_open``), the paper's value where it differs from the default or needs saying, and the flag
    (default ``--name-with-dashes``; booleans get ``--x`` / ``--no-x``)."""
    assert group in GROUPS, group
    meta = {"help": help, "group": group, "choices": choices, "range": (lo, hi, lo_open, hi_open),
            "paper": paper}
    return dataclasses.field(default=default, metadata=meta)


D, M, T, X = GROUPS


@dataclass
class RunConfig:
    # data and stream (SPEC §1)
    dataset: str | None = setting(None, "digits (embedded, the default) | cifar10 | cifar100 | a name for --data", D)
    data: str | None = setting(None, "folder: cifar-10-batches-py, cifar-100-python, or an ImageFolder with "
                                     "train/ and test/ (default: the embedded digits)", D)
    image_size: int | None = setting(None, "resize ImageFolder images to this square size", D, lo=8)
    replay: str = setting("full", "which earlier mega-batches are trained on again", D, choices=REPLAYS,
                          paper="full (Table 1)")
    megabatches: int = setting(8, "number of mega-batches t", D, lo=1, paper=8)
    megabatch_size: int | None = setting(None, "samples per mega-batch (default: training set // t)", D, lo=10)
    buffer_size: int = setting(186, "buffer replay: train and validation samples kept per mega-batch (the authors' "
                                    "code: 182)", D, lo=0, paper=186)
    val_pool: str = setting("paper", "where the validation pool starts: paper = right after the training pool; "
                                     "code = at training sample 45,000 (90 % of the split), as the authors' code",
                            D, choices=SCOPES)
    buffer_draws: str = setting("paper", "buffer replay draws its samples from: paper = the new mega-batch; code = "
                                         "the new mega-batch and the buffer, so repeats accumulate (the authors' "
                                         "code)", D, choices=SCOPES)
    shuffle: bool | None = setting(None, "permute the training set with the seed before cutting mega-batches "
                                         "(default: natural order for torchvision's CIFAR folders, as SPEC §1 and "
                                         "the authors' code; permuted for ImageFolder trees and the digits)", D)
    shots: int | None = setting(None, "few-shot: keep N training images per class (all of a class with fewer) "
                                      "before the stream is cut, so train and validation come from them (default: "
                                      "every image)", D, lo=1, paper="270 (Table 5)")
    shots_draw: str = setting("paper", "which N images --shots keeps: paper = drawn at random per class with the "
                                       "seed; code = the first N of each class in the data's order (the authors' "
                                       "to_few_shot)", D, choices=SHOTS_DRAWS)
    label_noise: float = setting(0.0, "replace each training and validation label, with this probability, by a "
                                      "uniformly drawn class (seeded, fixed for the run; the test set stays clean)",
                                 D, lo=0, hi=1, paper=0.0)
    # method (SPEC §3, §4)
    method: str = setting("lure", "the forgetting step between mega-batches", M, choices=METHODS)
    importance: str = setting("snip", "LURE's importance criterion", M, choices=IMPORTANCES, paper="snip")
    reinit_fraction: float = setting(0.2, "fraction of LURE's pool re-initialised", M, lo=0, hi=1, lo_open=True,
                                     hi_open=True, paper=0.2)
    reinit_scope: str = setting("paper", "what LURE ranks and resets: paper = conv/linear weights, code = every "
                                         "*weight* (as the authors' code)", M, choices=SCOPES)
    importance_fraction: float = setting(0.2, "size of pi as a fraction of the mega-batch's training set", M,
                                         lo=0, hi=1, lo_open=True, paper=0.2)
    importance_batch_size: int = setting(100, "batch size of the importance pass", M, lo=1)
    importance_batches: str = setting("paper", "paper = all of pi, gradients summed; code = the first batch only, "
                                               "|grad| summed", M, choices=SCOPES)
    importance_data: str = setting("paper", "the images of pi: paper = a fraction of the mega-batch just learnt, "
                                            "un-augmented; code = the first 128 of the next mega-batch's training "
                                            "list, augmented (as the authors' code)", M, choices=SCOPES)
    sp_lambda: float = setting(0.4, "shrink factor of S&P (the authors' code: 0.3)", M, lo=0, hi=1, paper=0.4)
    sp_sigma: float = setting(0.001, "noise scale of S&P", M, lo=0, paper=0.001)
    reset_momentum: bool = setting(False, "zero SGD momentum between mega-batches (the authors' code keeps it)", M)
    cold_momentum: str = setting("reset", "cold start: reset = zero SGD momentum with the weights (a true restart); "
                                          "keep = keep it (the authors' code)", M, choices=("reset", "keep"))
    profile: str = setting("paper", "paper = the paper's text; authors = the published code's behaviour, per "
                                    "method (BL at a constant learning rate; docs/protocol.md)", M, choices=PROFILES)
    # model and optimisation (SPEC §2)
    arch: str = setting("resnet18", "network", T, choices=ARCHS, paper="resnet18 (CIFAR)")
    width: int = setting(64, "channel width (64 = the standard network)", T, lo=1, paper=64)
    vgg: str = setting("paper", "--arch vgg16_bn as: paper = torchvision's VGG16-BN (five max-pools, PyTorch's "
                                "default init); code = the authors' (four max-pools then average pooling, their "
                                "init)", T, choices=SCOPES)
    stem: str = setting("cifar", "first layers: cifar (3x3 conv) | imagenet (7x7 conv and max-pool)", T,
                        choices=("cifar", "imagenet"))
    epochs: int = setting(50, "epochs per mega-batch", T, lo=1, paper=50)
    batch_size: int = setting(64, "training batch size", T, lo=1, paper=64)
    lr: float = setting(0.1, "learning rate, reset every mega-batch", T, lo=0, lo_open=True, paper=0.1)
    lr_milestones: tuple[int, ...] | None = setting(None, "comma-separated epochs where lr is multiplied by "
                                                          "--lr-gamma (default: 40 % and 80 % of the epochs)", T,
                                                    paper="20,40 of 50")
    lr_gamma: float = setting(0.1, "learning-rate decay factor at each milestone", T, lo=0, hi=1, lo_open=True,
                              paper=0.1)
    warmup_epochs: float = setting(0.0, "linear lr warm-up over the first N epochs of every mega-batch "
                                        "(fast preset: 5)", T, lo=0, paper=0)
    momentum: float = setting(0.9, "SGD momentum", T, lo=0, hi=1, hi_open=True, paper=0.9)
    weight_decay: float = setting(1e-4, "SGD weight decay", T, lo=0, paper=1e-4)
    augment: bool = setting(True, "random flips and pad-4 crops while training", T, paper=True)
    val_augment: bool = setting(False, "augment the validation images that pick the best epoch as the training "
                                       "images (the authors' code does; nothing under --no-augment)", T)
    # execution
    seed: int = setting(0, "seed of the stream, the initial weights and every draw", X, lo=0)
    device: str = setting("auto", "auto (CUDA when present) | cpu | cuda", X, choices=("auto", "cpu", "cuda"))
    loader: str = setting("auto", "auto: memory for the embedded data and on a GPU it fits, else ffcv when "
                                  "installed", X, choices=("auto", "memory", "torch", "ffcv"))
    precision: str = setting("auto", "auto: bf16 autocast on CUDA and on a CPU with native bf16 (AVX512-BF16 "
                                       "or AMX), else fp32", X,
                             choices=("auto", "fp32", "bf16"))
    compile: bool | None = setting(None, "torch.compile the model for full batches (default: on CUDA only)", X)
    compile_mode: str = setting("auto", "torch.compile mode; auto: reduce-overhead (CUDA graphs) on CUDA", X,
                                choices=COMPILE_MODES)
    eval_batch_size: int = setting(1024, "batch size of validation and test passes", X, lo=1)
    checkpoint_every: int = setting(1, "epochs between checkpoints (0: mega-batch ends only)", X, lo=0)
    checkpoint_interval: float = setting(30.0, "and at least this many seconds since the last checkpoint (0: no "
                                               "minimum), so short GPU epochs do not wait for the disk; mega-batch "
                                               "ends always checkpoint", X, lo=0)
    save_models: str = setting("last", "model files kept beside results.json: last = model.safetensors (the final "
                                       "model); all = also model-mb<i>.safetensors after every mega-batch", X,
                               choices=("last", "all"))
    preset: str | None = setting(None, "a named set of defaults (default: digits for the embedded data, paper "
                                         "otherwise)", X, choices=PRESETS)

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


def resolve(explicit: dict) -> RunConfig:
    """Defaults <- preset <- ``explicit`` (only the keys a user actually set)."""
    explicit = {k: v for k, v in explicit.items() if v is not None}
    preset = explicit.get("preset")
    if preset is None:
        embedded = explicit.get("data") is None and explicit.get("dataset") in (None, "digits")
        preset = "digits" if embedded else "paper"
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset}: unknown; choose one of {', '.join(PRESETS)}")
    if preset == "small" and explicit.get("data") is None and explicit.get("dataset") in (None, "digits"):
        raise ConfigError("--preset small is sized for CIFAR-10 (3 x 2,000 images); pass --data DIR with "
                          "CIFAR-10 (cifar-10-batches-py or an ImageFolder), or --dataset cifar10 to download it")
    names = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = set(explicit) - names
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    profile = explicit.get("profile", "paper")
    if profile not in PROFILES:
        raise ConfigError(f"--profile {profile}: unknown; choose one of {', '.join(PROFILES)}")
    method = explicit.get("method", PRESETS[preset].get("method", RunConfig.method))
    chosen = {k: v for k, v in profile_settings(profile, method).items()
              if k not in QUALIFIES or {**PRESETS[preset], **explicit}.get(QUALIFIES[k]) is not None}
    values = {**PRESETS[preset], **chosen, **explicit, "preset": preset}
    if isinstance(values.get("lr_milestones"), list):
        values["lr_milestones"] = tuple(values["lr_milestones"])
    cfg = RunConfig(**values)
    validate(cfg)
    return cfg


def fields() -> tuple[dataclasses.Field, ...]:
    """The declared settings, in order."""
    return dataclasses.fields(RunConfig)


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise ConfigError(f"--{name.replace('_', '-')} {value}: unknown; choose one of {', '.join(options)}")


def range_text(lo=None, hi=None, lo_open=False, hi_open=False) -> str:
    """An interval as text: ``(0, 1)``, ``[1, 50]``, ``>= 0``."""
    if lo is not None and hi is not None:
        return ("(" if lo_open else "[") + f"{lo}, {hi}" + (")" if hi_open else "]")
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"{'<' if hi_open else '<='} {hi}"


def _range(name: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> None:
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or \
          (hi is not None and (value >= hi if hi_open else value > hi))
    if bad:
        where = ("in " if lo is not None and hi is not None else "") + range_text(lo, hi, lo_open, hi_open)
        raise ConfigError(f"--{name.replace('_', '-')} {value}: must be {where}")


def validate(cfg: RunConfig) -> None:
    """Check every name and numeric range that needs no data (as the fields declare them); raises
    :class:`ConfigError`."""
    for f in fields():
        value, meta = getattr(cfg, f.name), f.metadata
        if value is None:
            continue
        if meta["choices"] is not None:
            _choice(f.name, value, meta["choices"])
        if meta["range"] != (None, None, False, False):
            _range(f.name, value, *meta["range"])
    _range("warmup_epochs", cfg.warmup_epochs, 0, cfg.epochs)
    for m in cfg.milestones():
        if not 0 < m <= cfg.epochs:
            raise ConfigError(f"--lr-milestones {','.join(map(str, cfg.milestones()))}: each must be in "
                              f"[1, {cfg.epochs}] (the epochs of a mega-batch)")
    if cfg.dataset == "digits" and cfg.data is not None:
        raise ConfigError("--dataset digits is the embedded data and takes no --data; drop one of them")


# settings that change when and how a run is saved or shown, never its results: a resume may change them
NOT_RESULTS = ("preset", "checkpoint_every", "checkpoint_interval", "save_models")


def diff(a: dict, b: dict) -> list[str]:
    """Names of the settings whose values differ between two ``to_dict()`` configurations."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
