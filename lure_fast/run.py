"""One LURE (or baseline) run over a stream of mega-batches: Algorithm 1 of the paper.

    for each mega-batch M_i:      learn   (train, keep the best-validation epoch)
        measure on the test set   (accuracy, errors -> CER, ECE)
        if not the last:          unlearn (the method's forgetting step), then relearn on M_{i+1}

The pieces live elsewhere: the run folder, checkpoints and resume in ``rundir``, data, stream and
model in ``prepare``, the optimisation in ``train``, the forgetting steps in ``methods``. A resumed
run produces the same results as an uninterrupted one (timings aside).
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch

from . import config as C
from . import faults
from .checkpoint import RunError
from .console import Progress
from .methods import forget_
from .modelfile import keep_model
from .metrics import summarize
from .prepare import prepare, resolve_device
from .rundir import NO_BEST, RunFolder, RunState, restore
from .train import Trainer, autocast_dtype


def run(cfg: C.RunConfig, out: str, resume: bool = False, overwrite: bool = False,
        progress: bool = True, label: str | None = None) -> dict:
    """Run ``cfg`` into the folder ``out``; returns (and writes ``out/results.json``) the results."""
    C.validate(cfg)
    device = resolve_device(cfg.device)
    folder = RunFolder(out, cfg, resume, overwrite)
    if (done := folder.finished()) is not None:
        return done
    faults.run_started()
    ckpt = folder.checkpoint()
    s = prepare(cfg, device, notes=ckpt is None)
    trainer = Trainer(s.model, cfg, device)
    state = RunState() if ckpt is None else restore(ckpt, s.model, trainer.optimizer, trainer.best, device)
    name, t = label or cfg.method, cfg.megabatches
    bar = Progress(t * cfg.epochs, name, progress and sys.stderr.isatty(),
                   done=(state.megabatch - 1) * cfg.epochs + state.epoch)
    try:
        for mb in s.stream.megabatches[state.megabatch - 1:]:
            i = mb.index
            s.point_at(mb)
            t0 = time.perf_counter() - state.elapsed
            split = dict.fromkeys(SPLIT, 0.0)                              # this process's time, by kind
            for epoch in range(state.epoch, cfg.epochs):                   # learn on M_i
                faults.point("epoch", i, epoch)
                with timed(split, "train"):
                    stats = trainer.train_epoch(s.train, (i - 1) * cfg.epochs + epoch, epoch)
                check_finite(stats["loss"], i, epoch, cfg, out)
                with timed(split, "evaluate"):
                    val = trainer.evaluate(s.val)
                if val["acc"] > state.best["val"]:                         # keep the best epoch
                    state.best = {"val": val["acc"], "train": stats["acc"], "epoch": epoch}
                    trainer.snapshot_best()
                bar.step(mb=f"{i}/{t}", loss=f"{stats['loss']:.3f}", val=f"{val['acc']:.1f}")
                if folder.epoch_due(epoch):
                    state.epoch, state.elapsed = epoch + 1, time.perf_counter() - t0
                    with timed(split, "checkpoint"):
                        folder.save(state, s.model, trainer.optimizer, trainer.best, device)
                faults.point("epoch_end", i, epoch)
            trainer.restore_best()
            with timed(split, "evaluate"):
                record = measure(trainer, s, mb, state.best)               # on the test set
            with timed(split, "checkpoint"):                               # the model file(s), modelfile.py
                keep_model(out, cfg, s, "fp32" if trainer.amp is None else "bf16", i)
            if i < t:                                                      # unlearn before M_{i+1}
                if cfg.importance_data == "code":
                    s.point_importance_at_next(mb)
                f = forget_(s.model, cfg, i, trainer.optimizer, s.importance, s.init_state)  # times itself
                record["reset"], record["forget_seconds"] = f["reset"], f["seconds"]
                split["unlearn"] += f["seconds"]
            record["seconds"] = time.perf_counter() - t0
            record["split_seconds"] = split
            state.records.append(record)
            with timed(split, "checkpoint"):
                folder.progress(state.records)
            bar.line(f"[{name}] mega-batch {i}/{t}: train {len(mb.train)}  val {record['val_acc']:.2f}  "
                     f"test {record['test_acc']:.2f}  errors {record['test_errors']}  "
                     f"gap {record['gen_gap']:.2f}  {record['seconds']:.1f}s")
            state = RunState(i + 1, 0, dict(NO_BEST), state.records, 0.0)
            if i < t:
                with timed(split, "checkpoint"):
                    folder.save(state, s.model, trainer.optimizer, None, device)
    except BaseException:
        folder.abort()
        raise
    finally:
        bar.close()
    return folder.finish(results(cfg, device, s, state.records))


SPLIT = ("train", "evaluate", "unlearn", "checkpoint")


@contextmanager
def timed(split: dict, kind: str):
    """Add the wall time of the block to ``split[kind]``."""
    t = time.perf_counter()
    try:
        yield
    finally:
        split[kind] += time.perf_counter() - t


def time_split(records: list[dict]) -> dict:
    """Seconds spent training, evaluating (validation, test, train accuracy), unlearning and writing
    checkpoints, summed over mega-batches. A mega-batch resumed after a kill counts only the time of the
    process that finished it (its ``seconds`` include the time before the kill)."""
    return {k: sum(r.get("split_seconds", {}).get(k, 0.0) for r in records) for k in SPLIT}


def measure(trainer: Trainer, s, mb, best: dict) -> dict:
    """The record of a learnt mega-batch: test accuracy, errors and ECE of the selected model, and its
    accuracy on its own (clean) training set for the generalisation gap."""
    test = trainer.evaluate(s.test)
    s.clean.set_indices(mb.train)
    train_acc = trainer.evaluate(s.clean)["acc"]
    return {"index": mb.index, "train_size": len(mb.train), "val_size": len(mb.val),
            "train_acc": train_acc, "val_acc": best["val"], "test_acc": test["acc"],
            "test_errors": test["errors"], "gen_gap": train_acc - best["val"],
            "test_ece": test["ece"], "best_epoch": best["epoch"] + 1, "train_acc_augmented": best["train"]}


def check_finite(loss: float, i: int, epoch: int, cfg, out: str) -> None:
    if not np.isfinite(loss):
        raise RunError(f"the loss became {loss} in mega-batch {i}, epoch {epoch + 1}; lower --lr (now {cfg.lr}) "
                       f"or check the data; the last good checkpoint in {out} is kept")


def results(cfg, device: torch.device, s, records: list[dict]) -> dict:
    ds = s.dataset
    amp = autocast_dtype(cfg, device)
    return {"config": cfg.to_dict(), "device": device_name(device), "loader": s.loader_name,
            "precision": "fp32" if amp is None else "bf16",
            "dataset": {"name": ds.name, "layout": ds.layout, "train": len(ds.train), "test": len(ds.test),
                        "classes": ds.num_classes, "image_shape": list(ds.image_shape), "skipped": ds.skipped},
            "megabatches": records, "summary": summarize(records), "split_seconds": time_split(records),
            "label_noise": s.label_noise}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__})"
