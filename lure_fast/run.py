"""One LURE (or baseline) run over a stream of mega-batches: Algorithm 1 of the paper.

    for each mega-batch M_i:      learn   (train, keep the best-validation epoch)
        measure on the test set   (accuracy, errors -> CER, ECE)
        if not the last:          unlearn (the method's forgetting step), then relearn on M_{i+1}

Checkpoints are written at epoch and mega-batch boundaries; ``resume=True`` continues from the last
good one and produces the same results as an uninterrupted run (timings aside).
"""
from __future__ import annotations

import json
import os
import random
import sys
import time

import numpy as np
import torch

from . import config as C
from .checkpoint import Checkpointer, RunError, atomic_write
from .methods import derive_seed, forget_, seeded
from .metrics import summarize
from .models import CIFAR10_MEAN, CIFAR10_STD, build_model
from .stream import make_stream
from .train import Trainer
from .faults import fault

RESULTS = "results.json"
PROGRESS = "progress.json"  # the mega-batches finished so far, while a run is under way
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise C.ConfigError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return torch.device(name)


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


def choose_loader(cfg, dataset, device: torch.device) -> tuple[str, str | None]:
    """The backend ``--loader`` names, resolving ``auto``: ``memory`` for the embedded data and on a GPU
    that holds the decoded dataset in a quarter of its memory (GPU-side augmentation, no host work); else
    ``ffcv`` (the streaming backend for data read from disk), or ``memory`` when FFCV is not installed.
    Returns the name and, when auto had to fall back, a one-line note."""
    if cfg.loader != "auto":
        return cfg.loader, None
    if cfg.data is None and cfg.dataset in (None, "digits"):  # the embedded data: tiny
        return "memory", None
    nbytes = dataset.train.nbytes + dataset.test.nbytes  # of a file list: count x first image, nothing decoded
    if device.type == "cuda" and nbytes <= torch.cuda.get_device_properties(device).total_memory // 4:
        return "memory", None
    try:
        from .loaders.writers import require_ffcv
        require_ffcv()
    except Exception:
        return "memory", ("--loader auto: FFCV is not installed here, so the data is held in memory "
                          "(scripts/install_ffcv.sh installs it)")
    return "ffcv", None


def data_stats(dataset, backend) -> tuple[tuple, tuple]:
    """Normalisation constants: the usual ones for CIFAR, else computed from the training images, exactly
    (so the ffcv backend, counting from its .beton, gives the memory backend's numbers), to 4 decimals."""
    if dataset.name == "cifar10":
        return CIFAR10_MEAN, CIFAR10_STD
    if dataset.name == "cifar100":
        return CIFAR100_MEAN, CIFAR100_STD
    mean, std = backend.channel_stats("train")
    return tuple(round(v, 4) for v in mean), tuple(round(max(v, 1e-3), 4) for v in std)


def load_data(cfg):
    from .loaders import load_dataset
    return load_dataset(cfg.dataset, cfg.data, cfg.image_size)


def build_stream(cfg, dataset, n: int | None = None):
    """The mega-batches over ``dataset``'s training split (of ``n`` samples: by default its length)."""
    n = len(dataset.train) if n is None else n
    size = cfg.megabatch_size or n // cfg.megabatches
    try:
        return make_stream(n, cfg.megabatches, size, cfg.replay, cfg.buffer_size,
                           cfg.importance_fraction, cfg.seed, cfg.shuffled(dataset.layout))
    except ValueError as e:
        raise C.ConfigError(str(e)) from None


def _rng_state(device: torch.device) -> dict:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":  # a CPU run on a GPU machine starts no CUDA context
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _set_rng_state(s: dict, device: torch.device) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and device.type == "cuda":
        torch.cuda.set_rng_state_all(s["cuda"])


def write_json(path: str, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


class Progress:
    """A tqdm bar over every epoch of the run, and one printed line per mega-batch."""

    def __init__(self, total: int, desc: str, enabled: bool, done: int = 0):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=done, desc=desc, unit="ep", dynamic_ncols=True,
                            file=sys.stderr, leave=False)

    def step(self, **postfix):
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def line(self, text: str):
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run(cfg: C.RunConfig, out: str, resume: bool = False, overwrite: bool = False,
        progress: bool = True, label: str | None = None) -> dict:
    """Run ``cfg`` into the folder ``out``; returns (and writes ``out/results.json``) the results."""
    C.validate(cfg)
    device = resolve_device(cfg.device)
    prepare_out(out, resume, overwrite)
    ckpts = Checkpointer(out)
    ckpt = None
    if resume:
        done = os.path.join(out, RESULTS)
        ckpt = ckpts.latest(warn=lambda m: print(f"lure-fast: warning: {m}", file=sys.stderr))
        if ckpt is None and os.path.exists(done):
            with open(done) as f:
                results = json.load(f)
            _check_same(cfg, results["config"], out)
            return results
        if ckpt is None:
            raise RunError(f"--out {out}: no usable checkpoint to resume from; run again with --overwrite")
        _check_same(cfg, ckpt["config"], out)

    from .loaders import make_backend
    dataset = load_data(cfg)  # image files stay on disk until a backend decodes them
    loader_name, note = choose_loader(cfg, dataset, device)
    if note and not resume:
        print(f"lure-fast: note: {note}", file=sys.stderr)
    # a stream the listed files cannot fill fails now, not after a long .beton write (unreadable files,
    # found by decoding, can only make the training set smaller)
    build_stream(cfg, dataset, dataset.train.listed)
    channels_last = device.type == "cuda"
    backend = make_backend(loader_name, dataset, device, channels_last)  # ffcv: the .beton files, written once
    stream = build_stream(cfg, dataset)  # the split sizes are known once unreadable files are
    mean, std = data_stats(dataset, backend)
    c, h, w = dataset.image_shape
    with seeded(derive_seed(cfg.seed, 0), torch.device("cpu")):  # the same initial weights on any device
        model = build_model(cfg.arch, dataset.num_classes, c, cfg.width, cfg.stem, mean, std)
    init_state = [t.clone() for t in model.state_dict().values()] if cfg.method == "cold" else None
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    if init_state is not None:
        init_state = [t.to(device) for t in init_state]

    first = stream[0]
    train_ld = backend.loader("train", first.train, cfg.batch_size, augment=cfg.augment, shuffle=True, seed=cfg.seed)
    val_ld = backend.loader("train", first.val, cfg.eval_batch_size, seed=cfg.seed)
    test_ld = backend.loader("test", np.arange(len(dataset.test)), cfg.eval_batch_size, seed=cfg.seed)
    imp_ld = backend.loader("train", first.importance, cfg.importance_batch_size, seed=cfg.seed)

    trainer = Trainer(model, cfg, device)
    results: list[dict] = []
    start_mb, start_epoch = 1, 0
    best = {"val": -1.0, "train": 0.0, "epoch": -1}
    mb_elapsed = 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["best_state"] is not None:
            for b, t in zip(trainer.best, ckpt["best_state"]):
                b.copy_(t)
        best, results = ckpt["best"], ckpt["results"]
        start_mb, start_epoch, mb_elapsed = ckpt["megabatch"], ckpt["epoch"], ckpt["mb_elapsed"]
        _set_rng_state(ckpt["rng"], device)

    def save(mb: int, epoch: int, with_best: bool, elapsed: float):
        ckpts.save({"version": 1, "config": cfg.to_dict(), "megabatch": mb, "epoch": epoch,
                    "model": model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                    "best_state": trainer.best if with_best else None,
                    "best": dict(best), "results": results, "mb_elapsed": elapsed, "rng": _rng_state(device)},
                   mb, epoch)

    t_total = cfg.megabatches * cfg.epochs
    name = label or cfg.method
    bar = Progress(t_total, name, progress and sys.stderr.isatty(),
                   done=(start_mb - 1) * cfg.epochs + start_epoch)
    try:
        for mb in stream.megabatches[start_mb - 1:]:
            i = mb.index
            train_ld.set_indices(mb.train)
            val_ld.set_indices(mb.val)
            imp_ld.set_indices(mb.importance)
            t0 = time.perf_counter() - (mb_elapsed if i == start_mb else 0.0)
            first_epoch = start_epoch if i == start_mb else 0
            if first_epoch == 0:
                best = {"val": -1.0, "train": 0.0, "epoch": -1}
            for epoch in range(first_epoch, cfg.epochs):
                stats = trainer.train_epoch(train_ld, (i - 1) * cfg.epochs + epoch, epoch, (i, epoch))
                if not np.isfinite(stats["loss"]):
                    raise RunError(f"the loss became {stats['loss']} in mega-batch {i}, epoch {epoch + 1}; "
                                   f"lower --lr (now {cfg.lr}) or check the data; the last good checkpoint "
                                   f"in {out} is kept")
                val = trainer.evaluate(val_ld)
                if val["acc"] > best["val"]:
                    best = {"val": val["acc"], "train": stats["acc"], "epoch": epoch}
                    trainer.snapshot_best()
                bar.step(mb=f"{i}/{cfg.megabatches}", loss=f"{stats['loss']:.3f}", val=f"{val['acc']:.1f}")
                if (cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0 and epoch + 1 < cfg.epochs
                        and time.perf_counter() - ckpts.last_save >= cfg.checkpoint_interval):
                    save(i, epoch + 1, True, time.perf_counter() - t0)
                fault("epoch_end", i, epoch)
            trainer.restore_best()
            test = trainer.evaluate(test_ld)
            val_ld.set_indices(mb.train)  # the selected model on its clean training set, for the gap
            train_acc = trainer.evaluate(val_ld)["acc"]
            record = {"index": i, "train_size": len(mb.train), "val_size": len(mb.val),
                      "train_acc": train_acc, "val_acc": best["val"], "test_acc": test["acc"],
                      "test_errors": test["errors"], "gen_gap": train_acc - best["val"],
                      "test_ece": test["ece"], "best_epoch": best["epoch"] + 1,
                      "train_acc_augmented": best["train"]}
            if i < cfg.megabatches:
                f = forget_(model, cfg, i, trainer.optimizer, imp_ld, init_state)
                record["reset"], record["forget_seconds"] = f["reset"], f["seconds"]
            record["seconds"] = time.perf_counter() - t0
            results.append(record)
            write_json(os.path.join(out, PROGRESS), {"config": cfg.to_dict(), "megabatches": results,
                                                     "summary": summarize(results)})
            bar.line(f"[{name}] mega-batch {i}/{cfg.megabatches}: train {len(mb.train)}  "
                     f"val {record['val_acc']:.2f}  test {record['test_acc']:.2f}  "
                     f"errors {record['test_errors']}  gap {record['gen_gap']:.2f}  {record['seconds']:.1f}s")
            if i < cfg.megabatches:
                save(i + 1, 0, False, 0.0)
    except BaseException:
        ckpts.wait(raise_error=False)  # let the last checkpoint land; the first error is the one to report
        raise
    finally:
        bar.close()
    ckpts.wait()

    out_results = {"config": cfg.to_dict(), "device": _device_name(device), "loader": loader_name,
                   "dataset": {"name": dataset.name, "layout": dataset.layout, "train": len(dataset.train),
                               "test": len(dataset.test), "classes": dataset.num_classes,
                               "image_shape": list(dataset.image_shape),
                               "skipped": dataset.skipped},
                   "megabatches": results, "summary": summarize(results)}
    write_json(os.path.join(out, RESULTS), out_results)
    if os.path.exists(os.path.join(out, PROGRESS)):
        os.remove(os.path.join(out, PROGRESS))
    for f in ckpts.list():  # finished: the results are the record, the checkpoints are not needed
        os.remove(os.path.join(out, f))
    return out_results


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__})"


def _check_same(cfg, saved: dict, out: str) -> None:
    defaults = C.RunConfig().to_dict()  # a setting added since the run was saved had its default then
    saved = {**{k: v for k, v in defaults.items() if k not in ("lr_milestones",)}, **saved}
    differing = [k for k in C.diff(cfg.to_dict(), saved) if k not in C.NOT_RESULTS]
    if differing:
        pairs = ", ".join(f"{k} (now {cfg.to_dict().get(k)!r}, was {saved.get(k)!r})" for k in differing)
        raise RunError(f"--resume: the settings differ from the run in {out}: {pairs}; "
                       "pass the same settings, or --overwrite to start afresh")
