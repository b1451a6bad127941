"""The trained model as a file: ``model.safetensors`` beside ``results.json`` (and, with
``--save-models all``, ``model-mb<i>.safetensors`` for every mega-batch).

A model file is plain safetensors (tensors and a string-to-string metadata header, no pickle). Its
metadata key ``lure_fast`` holds JSON with what rebuilding the network needs: ``arch``, ``width``,
``stem``, ``vgg``, ``classes``, ``channels``, ``mean``, ``std``, ``image_shape``, the mega-batch it closes,
the autocast ``precision`` the run measured it under, and the run's whole ``config``.

``load_model(path, device=None)`` returns the module in eval mode; it takes inputs in [0, 1]
(the normalisation is inside). Any file that is not such a model (missing, damaged, from another
architecture) is a :class:`ModelFileError`: one line naming the file and the fix.
"""
from __future__ import annotations

import json
import os

import torch

from .checkpoint import RunError, atomic_write

FORMAT = "lure-fast-model/1"
MODEL = "model.safetensors"


class ModelFileError(RunError):
    """A model file that cannot be read back: one line naming it and the fix."""


def model_name(megabatch: int | None = None) -> str:
    """``model.safetensors``, or ``model-mb<i>.safetensors`` for mega-batch ``i``."""
    return MODEL if megabatch is None else f"model-mb{megabatch}.safetensors"


def keep_model(out: str, cfg, setup, precision: str, megabatch: int) -> None:
    """After mega-batch ``megabatch`` is measured: write its (best-validation) model as
    ``model-mb<i>.safetensors`` under ``--save-models all``, and as ``model.safetensors`` after the last."""
    norm = setup.model.normalize
    mean, std = norm.mean.flatten().tolist(), norm.std.flatten().tolist()
    meta = model_meta(cfg, setup.dataset, mean, std, precision, megabatch)
    if cfg.save_models == "all":
        save_model(os.path.join(out, model_name(megabatch)), setup.model, meta)
    if megabatch == cfg.megabatches:
        save_model(os.path.join(out, MODEL), setup.model, meta)


def model_meta(cfg, dataset, mean, std, precision: str, megabatch: int) -> dict:
    """What rebuilding the network needs, and where it came from."""
    c, h, w = dataset.image_shape
    return {"format": FORMAT, "arch": cfg.arch, "width": cfg.width, "stem": cfg.stem,
            "classes": int(dataset.num_classes), "channels": int(c), "mean": [float(v) for v in mean],
            "std": [float(v) for v in std], "image_shape": [int(c), int(h), int(w)], "precision": precision,
            "vgg": getattr(cfg, "vgg", "paper"), "megabatch": int(megabatch), "dataset": dataset.name,
            "config": cfg.to_dict()}


def save_model(path: str, model: torch.nn.Module, meta: dict) -> None:
    """Write ``model``'s parameters and buffers (on the CPU, contiguous) with ``meta``, atomically."""
    from safetensors.torch import save
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(path, save(tensors, metadata={"lure_fast": json.dumps(meta)}))


def read_meta(path: str) -> dict:
    """The metadata of a model file (its tensors unread)."""
    from safetensors import safe_open
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no model file there; train with lure-fast run (it writes {MODEL} "
                             "beside results.json)")
    try:
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get("lure_fast")
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise ModelFileError(f"{path}: not a readable safetensors file ({type(e).__name__}); it is damaged, "
                             "train the run again") from None
    try:
        meta = json.loads(raw) if raw is not None else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a lure-fast model file (no '{FORMAT}' metadata); pass a "
                             f"{MODEL} written by lure-fast run")
    return meta


def build_from_meta(meta: dict, where: str) -> torch.nn.Module:
    from .models import build_model
    try:
        return build_model(meta["arch"], int(meta["classes"]), int(meta["channels"]), int(meta["width"]),
                           meta["stem"], tuple(meta["mean"]), tuple(meta["std"]), meta.get("vgg", "paper"))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{where}: its metadata does not describe a network lure-fast builds ({e}); "
                             "train the run again") from None


def load_model(path: str, device=None, with_meta: bool = False):
    """The network saved at ``path`` (a ``model*.safetensors`` file or a run folder holding
    ``model.safetensors``), on ``device`` (default: the CPU), in eval mode. With ``with_meta``,
    returns ``(model, meta)``."""
    from safetensors.torch import load_file
    if os.path.isdir(path):
        path = os.path.join(path, MODEL)
    meta = read_meta(path)
    model = build_from_meta(meta, path)
    try:
        tensors = load_file(path, device="cpu")
    except Exception as e:
        raise ModelFileError(f"{path}: its tensors cannot be read ({type(e).__name__}); the file is damaged, "
                             "train the run again") from None
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    bad = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or extra or bad:
        what = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra else
                f"{bad[0]} has shape {tuple(tensors[bad[0]].shape)}, not {tuple(expected[bad[0]].shape)}")
        raise ModelFileError(f"{path}: its tensors do not fit a {meta.get('arch')} of width {meta.get('width')} "
                             f"({what}); the file is from another network or damaged")
    model.load_state_dict(tensors)
    model = model.to(torch.device(device) if device is not None else torch.device("cpu")).eval()
    return (model, meta) if with_meta else model
