"""Crash-safe checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint file is a 48-byte header (magic, payload length, SHA-256 of the payload) followed by a
``torch.save`` payload. It is written to a temporary name, flushed, fsynced and renamed, so a crash at
any instant leaves the previous checkpoint intact; a truncated or altered file fails its checksum
and the one before it is used. Only the newest ``keep`` checkpoints are kept.
"""
from __future__ import annotations

import copy
import errno
import hashlib
import io
import os
import re
import struct
import threading
import time

import torch

from . import faults

MAGIC = b"LUREFCK1"
HEADER = struct.Struct("<8sQ32s")  # magic, payload length, sha256
NAME = re.compile(r"^ckpt-(\d{4})-(\d{4})\.pt$")


class RunError(RuntimeError):
    """A run cannot go on (disk, checkpoint, non-finite loss); the message is one line with the fix."""


def _describe(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e)


def checkpoint_name(megabatch: int, epoch: int) -> str:
    return f"ckpt-{megabatch:04d}-{epoch:04d}.pt"


def atomic_write(path: str, data: bytes, crash_point: tuple | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename. On an OSError the
    temporary file is removed, ``path`` keeps what it held, and a RunError says what happened."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            if crash_point is not None:
                f.flush()
                faults.point(*crash_point)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        hint = "free some space" if e.errno == errno.ENOSPC else "check the folder's permissions"
        raise RunError(f"cannot write {path}: {_describe(e)}; {hint} (files already written are intact)") from None


def snapshot(obj):
    """A copy of ``obj`` (nested dicts, lists, tuples) whose tensors are detached CPU copies: what a
    checkpoint holds must not change while training goes on."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return copy.deepcopy(obj)


class Checkpointer:
    """Writes checkpoints in a background thread, one at a time: ``save`` takes a snapshot (a device to
    host copy) and returns; serialising, hashing and writing overlap the next epoch. A failed write is
    raised by the next ``save`` or by ``wait``."""

    def __init__(self, folder: str, keep: int = 2):
        self.folder, self.keep, self.writes = folder, keep, 0
        self.last_save = time.perf_counter()  # when save() was last called (or the Checkpointer made)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: dict, megabatch: int, epoch: int) -> str:
        self.wait()
        self.writes += 1
        self.last_save = time.perf_counter()
        path = os.path.join(self.folder, checkpoint_name(megabatch, epoch))
        # not a daemon: an interpreter that exits normally finishes the write first
        self._thread = threading.Thread(target=self._write, args=(snapshot(state), path, self.writes),
                                        name="lure-fast-checkpoint")
        self._thread.start()
        return path

    def _write(self, state: dict, path: str, n: int) -> None:
        try:
            buf = io.BytesIO()
            torch.save(state, buf)
            payload = buf.getvalue()
            header = HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest())
            atomic_write(path, header + payload, crash_point=("checkpoint_write", n))
            self.prune()
        except BaseException as e:  # handed to the training thread by wait()
            self._error = e

    def wait(self, raise_error: bool = True) -> None:
        """Block until the write in flight is on disk; raise its error (if ``raise_error``)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error

    def list(self) -> list[str]:
        """Checkpoint files, oldest first."""
        if not os.path.isdir(self.folder):
            return []
        return sorted(f for f in os.listdir(self.folder) if NAME.match(f))

    def prune(self) -> None:
        for f in self.list()[:-self.keep]:
            try:
                os.remove(os.path.join(self.folder, f))
            except OSError:
                pass

    @staticmethod
    def read(path: str) -> dict:
        """Load one checkpoint; ValueError if it is truncated, altered or not a checkpoint."""
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < HEADER.size:
            raise ValueError("shorter than its header")
        magic, length, digest = HEADER.unpack_from(data)
        payload = data[HEADER.size:]
        if magic != MAGIC:
            raise ValueError("not a lure-fast checkpoint")
        if len(payload) != length:
            raise ValueError(f"truncated ({len(payload)} of {length} bytes)")
        if hashlib.sha256(payload).digest() != digest:
            raise ValueError("checksum mismatch")
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)

    def latest(self, warn=print) -> dict | None:
        """The newest checkpoint that reads back whole; damaged newer ones are reported and skipped."""
        for f in reversed(self.list()):
            try:
                return self.read(os.path.join(self.folder, f))
            except (ValueError, OSError, RuntimeError, EOFError) as e:
                warn(f"checkpoint {f} is damaged ({e}); using the one before it")
        return None
