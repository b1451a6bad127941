"""A run's folder: one run per folder (refused, resumed or overwritten), checkpoints by policy,
``progress.json`` while the run is under way, ``results.json`` when it ends, and clean-up.

What a checkpoint holds is :class:`RunState` plus the model, the optimizer and the best-epoch copy:
everything the loop needs to go on as if it had never stopped.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import config as C
from .checkpoint import Checkpointer, RunError, atomic_write
from .metrics import summarize

RESULTS = "results.json"
PROGRESS = "progress.json"  # the mega-batches finished so far, while a run is under way


def write_json(path: str, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def prepare_out(out: str, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs in one folder; make sure the folder is writable before any compute."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunError(f"--out {out}: is a file; pass a folder")
    existing = [f for f in os.listdir(out)] if os.path.isdir(out) else []
    if existing and not resume and not overwrite:
        raise RunError(f"--out {out}: holds an earlier run ({', '.join(sorted(existing)[:3])}); "
                       "pass --resume to continue it, --overwrite to replace it, or another --out")
    if resume and not existing:
        raise RunError(f"--out {out}: nothing to resume there; run without --resume")
    try:
        os.makedirs(out, exist_ok=True)
        if overwrite and not resume:
            for f in existing:
                p = os.path.join(out, f)
                if os.path.isfile(p) and (f.startswith("ckpt-") or f in (RESULTS, "run.log")):
                    os.remove(p)
        probe = os.path.join(out, ".write-test")
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
    except OSError as e:
        raise RunError(f"--out {out}: cannot write there ({os.strerror(e.errno) if e.errno else e}); "
                       "pick a writable folder") from None


@dataclass
class RunState:
    """Where the loop stands: the next (mega-batch, epoch) to run, the best epoch of the mega-batch
    under way, the records of the finished mega-batches and the seconds already spent on this one."""
    megabatch: int = 1
    epoch: int = 0
    best: dict = field(default_factory=lambda: dict(NO_BEST))
    records: list = field(default_factory=list)
    elapsed: float = 0.0


NO_BEST = {"val": -1.0, "train": 0.0, "epoch": -1}


class RunFolder:
    def __init__(self, out: str, cfg: C.RunConfig, resume: bool, overwrite: bool):
        prepare_out(out, resume, overwrite)
        self.out, self.cfg, self.resume = out, cfg, resume
        self.ckpts = Checkpointer(out)

    def finished(self) -> dict | None:
        """With ``--resume``: the results of a run that already ended here (its settings checked)."""
        done = os.path.join(self.out, RESULTS)
        if not self.resume or self.ckpts.list() or not os.path.exists(done):
            return None
        with open(done) as f:
            results = json.load(f)
        check_same(self.cfg, results["config"], self.out)
        return results

    def checkpoint(self) -> dict | None:
        """With ``--resume``: the newest checkpoint that reads back whole (its settings checked)."""
        if not self.resume:
            return None
        ckpt = self.ckpts.latest(warn=lambda m: print(f"lure-fast: warning: {m}", file=sys.stderr))
        if ckpt is None:
            raise RunError(f"--out {self.out}: no usable checkpoint to resume from; run again with --overwrite")
        check_same(self.cfg, ckpt["config"], self.out)
        return ckpt

    def epoch_due(self, epoch: int) -> bool:
        """Whether to checkpoint after ``epoch`` (0-based, not the last of its mega-batch): every
        ``checkpoint_every`` epochs, and at least ``checkpoint_interval`` seconds after the last one."""
        every = self.cfg.checkpoint_every
        return bool(every) and (epoch + 1) % every == 0 and epoch + 1 < self.cfg.epochs and \
            time.perf_counter() - self.ckpts.last_save >= self.cfg.checkpoint_interval

    def save(self, state: RunState, model, optimizer, best_model: list | None, device) -> None:
        self.ckpts.save({"version": 2, "config": self.cfg.to_dict(), "megabatch": state.megabatch,
                         "epoch": state.epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "best_state": best_model, "best": dict(state.best), "results": state.records,
                         "mb_elapsed": state.elapsed, "rng": rng_state(device)},
                        state.megabatch, state.epoch)

    def progress(self, records: list[dict]) -> None:
        write_json(os.path.join(self.out, PROGRESS), {"config": self.cfg.to_dict(), "megabatches": records,
                                                      "summary": summarize(records)})

    def abort(self) -> None:
        """On an error: let the checkpoint in flight land; the first error is the one to report."""
        self.ckpts.wait(raise_error=False)

    def finish(self, results: dict) -> dict:
        """Write ``results.json``; the checkpoints and ``progress.json`` are no longer needed."""
        self.ckpts.wait()
        write_json(os.path.join(self.out, RESULTS), results)
        for f in [PROGRESS, *self.ckpts.list()]:
            if os.path.exists(os.path.join(self.out, f)):
                os.remove(os.path.join(self.out, f))
        return results


def restore(ckpt: dict, model, optimizer, best_model: list, device) -> RunState:
    """Load a checkpoint into the model, optimizer, best-epoch copy and RNGs; return its RunState."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt["best_state"] is not None:
        for b, t in zip(best_model, ckpt["best_state"]):
            b.copy_(t)
    set_rng_state(ckpt["rng"], device)
    return RunState(ckpt["megabatch"], ckpt["epoch"], ckpt["best"], ckpt["results"], ckpt["mb_elapsed"])


def rng_state(device: torch.device) -> dict:
    """Every RNG a run draws from, in plain types and tensors (a checkpoint holds no pickled object):
    NumPy's legacy global state as its name, key (a tensor), position and cached Gaussian."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    s = {"python": random.getstate(), "torch": torch.get_rng_state(),
         "numpy": {"name": str(name), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if device.type == "cuda":  # a CPU run on a GPU machine starts no CUDA context
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict, device: torch.device) -> None:
    random.setstate(s["python"])
    n = s["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    else:  # a checkpoint of an earlier release: NumPy's own tuple
        np.random.set_state(n)
    torch.set_rng_state(s["torch"])
    if "cuda" in s and device.type == "cuda":
        torch.cuda.set_rng_state_all(s["cuda"])


def check_same(cfg: C.RunConfig, saved: dict, out: str) -> None:
    """Refuse a resume whose settings differ (in anything that changes results) from the saved run's."""
    defaults = C.RunConfig().to_dict()  # a setting added since the run was saved had its default then
    saved = {**{k: v for k, v in defaults.items() if k not in ("lr_milestones",)}, **saved}
    differing = [k for k in C.diff(cfg.to_dict(), saved) if k not in C.NOT_RESULTS]
    if differing:
        pairs = ", ".join(f"{k} (now {cfg.to_dict().get(k)!r}, was {saved.get(k)!r})" for k in differing)
        raise RunError(f"--resume: the settings differ from the run in {out}: {pairs}; "
                       "pass the same settings, or --overwrite to start afresh")
