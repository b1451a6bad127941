"""A run's folder: one run per folder (refused, resumed or overwritten), one writer at a time (a lock),
checkpoints by policy, ``progress.json`` while the run is under way, ``results.json`` when it ends, and
clean-up.

What a checkpoint holds is :class:`RunState` plus the model, the optimizer and the best-epoch copy:
everything the loop needs to go on as if it had never stopped.
"""
from __future__ import annotations

import fcntl
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


LOCK = ".lure-fast.lock"  # the folder's lock file: flock-ed by the one process writing there, holds its pid


def write_json(path: str, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def run_entries(out: str) -> list[str]:
    """What a run folder holds, its lock file aside (empty if the folder does not exist)."""
    return sorted(f for f in os.listdir(out) if f != LOCK) if os.path.isdir(out) else []


def _cannot_write(out: str, e: OSError) -> RunError:
    return RunError(f"--out {out}: cannot write there ({os.strerror(e.errno) if e.errno else e}); "
                    "pick a writable folder")


class FolderLock:
    """One writer per folder: an exclusive ``flock`` on ``<folder>/.lure-fast.lock``, taken without waiting.
    The operating system drops it when the process ends, however it ends (SIGKILL included), so a killed
    run's folder can be resumed at once (its lock file stays, naming a dead pid, and means nothing); a
    process forked while it is held (a loader's or writer's worker) closes its copy at once, so a worker
    that outlives a killed run holds nothing. The file holds the holder's pid, for the message another
    process gets, and is removed when the holder releases it."""

    _held: dict[int, "FolderLock"] = {}  # fd -> lock, in the process that took it

    def __init__(self, folder: str, made_folder: bool = False, label: str | None = None):
        self.folder, self.owner, self.fd, self.claimed = folder, os.getpid(), None, False
        label = label or f"--out {folder}"  # how the message names the folder
        self.path, self.made_folder = os.path.join(folder, LOCK), made_folder
        while self.fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise _cannot_write(folder, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise RunError(f"{label}: another lure-fast process{holder} is writing there; wait for "
                               "it to end, or pick another --out") from None
            except OSError as e:
                os.close(fd)
                raise _cannot_write(folder, e) from None
            if self._still_there(fd):
                self.fd = fd
            else:  # removed by the writer that just finished: lock the file that now has the name
                os.close(fd)
        FolderLock._held[self.fd] = self

    def _still_there(self, fd: int) -> bool:
        try:
            a, b = os.fstat(fd), os.stat(self.path)
        except FileNotFoundError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    @staticmethod
    def _holder(fd: int) -> str:
        """`` (pid N)`` as the lock file names it, where that process is alive; else nothing."""
        pid = 0
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            pid = int(text) if text.isdigit() and len(text) < 11 else 0
            if pid > 0:
                os.kill(pid, 0)
                return f" (pid {pid})"
        except PermissionError:  # alive, another user's
            return f" (pid {pid})"
        except (OSError, ValueError):
            pass
        return ""

    def claim(self) -> None:
        """Write this process's pid into the lock file (after the folder's checks passed: a refused process
        leaves the folder, lock file included, as it found it)."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        self.claimed = True

    def release(self) -> None:
        """Drop the lock. A claimed lock removes its file first (a process waiting on the old file sees it
        gone and takes the new one), and the folder if this lock made it and it is still empty."""
        if self.fd is not None and os.getpid() == self.owner:
            if self.claimed:
                try:
                    os.remove(self.path)
                    if self.made_folder:
                        os.rmdir(self.folder)
                except OSError:  # gone already, or the folder holds a run
                    pass
            FolderLock._held.pop(self.fd, None)
            os.close(self.fd)  # drops the flock (no other descriptor shares it: workers closed theirs)
        self.fd = None

    def __del__(self):
        self.release()

    @staticmethod
    def release_all() -> None:
        """Release every lock this process holds: a command that ends, however it ends, leaves none."""
        for lock in list(FolderLock._held.values()):
            lock.release()

    @staticmethod
    def _forget_in_child() -> None:
        for fd, lock in list(FolderLock._held.items()):
            try:
                os.close(fd)
            except OSError:
                pass
            lock.fd = None
        FolderLock._held.clear()


os.register_at_fork(after_in_child=FolderLock._forget_in_child)


def prepare_out(out: str, resume: bool, overwrite: bool) -> FolderLock:
    """Take the folder's lock before anything is written there (one line naming the holder's pid if another
    process has it), refuse to mix runs in one folder, and make sure it is writable, before any compute.
    Returns the lock: held until released, or until this process ends."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunError(f"--out {out}: is a file; pass a folder")
    if resume and not run_entries(out):  # checked before the folder is made: a refused command makes nothing
        raise RunError(f"--out {out}: nothing to resume there; run without --resume")
    made = not os.path.isdir(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise _cannot_write(out, e) from None
    lock = FolderLock(out, made_folder=made)
    try:
        existing = run_entries(out)  # again, under the lock
        if existing and not resume and not overwrite:
            raise RunError(f"--out {out}: holds an earlier run ({', '.join(existing[:3])}); "
                           "pass --resume to continue it, --overwrite to replace it, or another --out")
        if resume and not existing:
            raise RunError(f"--out {out}: nothing to resume there; run without --resume")
        try:
            lock.claim()
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
            raise _cannot_write(out, e) from None
    except BaseException:
        lock.release()
        raise
    return lock


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
        self.lock = prepare_out(out, resume, overwrite)  # released by finish() or abort(), else at exit
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
        self.lock.release()

    def finish(self, results: dict) -> dict:
        """Write ``results.json``; the checkpoints and ``progress.json`` are no longer needed."""
        self.ckpts.wait()
        write_json(os.path.join(self.out, RESULTS), results)
        for f in [PROGRESS, *self.ckpts.list()]:
            if os.path.exists(os.path.join(self.out, f)):
                os.remove(os.path.join(self.out, f))
        self.lock.release()
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
