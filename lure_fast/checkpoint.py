"""Crash-safe checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint file is a 48-byte header (magic, payload length, SHA-256 of the payload) followed by a
safetensors payload: every tensor of the state under a numbered name, and the rest of the state (nested
dicts, lists, tuples, numbers, strings) as JSON in its metadata. Reading one runs no code from the file:
no pickle is involved. It is written to a temporary name, flushed, fsynced and renamed, so a crash at any
instant leaves the previous checkpoint intact; a truncated or altered file fails its checksum and the
one before it is used. Only the newest ``keep`` checkpoints are kept; the free space is checked first.

Checkpoints of earlier releases (magic ``LUREFCK1``: a ``torch.save`` pickle) are read with
``torch.load(weights_only=True)`` and only the globals such a file legitimately holds (NumPy's RNG state
array); one that names any other global is refused (:class:`UnsafeCheckpoint`) before anything in it runs.
The SHA-256 header proves a file whole, not where it came from: docs/safety.md.
"""
from __future__ import annotations

import copy
import errno
import hashlib
import io
import json
import os
import pickle
import re
import struct
import threading
import time

import torch

from . import faults
from .loaders.space import require_space

MAGIC = b"LUREFCK2"         # payload: safetensors, the non-tensor state as JSON in its metadata
LEGACY_MAGIC = b"LUREFCK1"  # payload: torch.save (a pickle), read with weights_only=True
HEADER = struct.Struct("<8sQ32s")  # magic, payload length, sha256
NAME = re.compile(r"^ckpt-(\d{4})-(\d{4})\.pt$")
STATE_KEY = "lure-fast.state"  # the metadata entry that holds the JSON


class RunError(RuntimeError):
    """A run cannot go on (disk, checkpoint, non-finite loss); the message is one line with the fix."""


class UnsafeCheckpoint(RunError):
    """A checkpoint that would run code or build objects no checkpoint holds: refused, nothing in it run."""


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


# --- the payload: safetensors + JSON, no pickle -------------------------------------------------------------
# JSON keeps what a checkpoint's state is made of: dicts with string keys, lists, str, int, float (repr
# round-trips, inf and nan included), bool and None. Three tagged one-key objects carry the rest: a tensor
# (by its name in the safetensors part), a tuple, and a dict whose keys are not all plain strings (the
# optimizer's state is keyed by parameter number).
_TENSOR, _TUPLE, _DICT = "$tensor", "$tuple", "$dict"
_TAGS = (_TENSOR, _TUPLE, _DICT)


def encode(state: dict) -> bytes:
    """``state`` (tensors on the CPU) as a safetensors file whose metadata holds the rest as JSON."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}

    def flat(obj):
        if isinstance(obj, torch.Tensor):
            name = str(len(tensors))
            tensors[name] = obj.detach().cpu().contiguous()
            return {_TENSOR: name}
        if isinstance(obj, tuple):
            return {_TUPLE: [flat(v) for v in obj]}
        if isinstance(obj, list):
            return [flat(v) for v in obj]
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj) and not (len(obj) == 1 and next(iter(obj)) in _TAGS):
                return {k: flat(v) for k, v in obj.items()}
            return {_DICT: [[flat(k), flat(v)] for k, v in obj.items()]}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"a checkpoint cannot hold a {type(obj).__name__}")

    meta = json.dumps(flat(state), separators=(",", ":"))
    return save(tensors, metadata={STATE_KEY: meta})


def decode(payload: bytes) -> dict:
    """The state :func:`encode` wrote; ValueError if ``payload`` is not such a file."""
    from safetensors.torch import load

    if len(payload) < 8:
        raise ValueError("shorter than a safetensors header")
    (n,) = struct.unpack_from("<Q", payload)
    try:
        header = json.loads(payload[8:8 + n])
        tree = json.loads(header["__metadata__"][STATE_KEY])
        tensors = load(payload)
    except Exception as e:  # malformed JSON, a missing key, safetensors' own checks
        raise ValueError(f"not a lure-fast checkpoint payload ({type(e).__name__})") from None

    def build(obj):
        if isinstance(obj, list):
            return [build(v) for v in obj]
        if isinstance(obj, dict):
            if len(obj) == 1 and next(iter(obj)) in _TAGS:
                (tag, value), = obj.items()
                if tag == _TENSOR:
                    if value not in tensors:
                        raise ValueError(f"names a tensor it does not hold ({value!r})")
                    return tensors[value]
                if tag == _TUPLE:
                    return tuple(build(v) for v in value)
                return {build(k): build(v) for k, v in value}
            return {k: build(v) for k, v in obj.items()}
        return obj

    try:
        return build(tree)
    except (TypeError, ValueError) as e:  # a tag with a malformed value, an unhashable key
        raise ValueError(f"not a lure-fast checkpoint payload ({e})") from None


def _legacy_globals() -> list:
    """What a checkpoint of an earlier release holds besides tensors and plain containers: NumPy's RNG
    state, an ndarray of uint32 (both spellings of NumPy's array constructor, 1.x and 2.x)."""
    import numpy as np

    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    return [(reconstruct, "numpy.core.multiarray._reconstruct"),
            (reconstruct, "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype,
            type(np.dtype(np.uint32))]


def load_legacy(payload: bytes, where: str) -> dict:
    """A checkpoint of an earlier release: ``torch.load(weights_only=True)`` with :func:`_legacy_globals`
    allowed; any other global is refused before the unpickler builds anything with it."""
    try:
        with torch.serialization.safe_globals(_legacy_globals()):
            return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)|build .*but got <class '([\w.]+)'>", str(e))
        what = f"{found.group(1) or found.group(2)}" if found else "an object outside the allowed list"
        raise UnsafeCheckpoint(f"{where}: holds a pickled object that lure-fast does not load ({what}); it was "
                               "refused and nothing in it ran; if the folder is not yours, do not use it, else "
                               "delete that file or run again with --overwrite") from None
    except Exception as e:  # not a torch.save file, though its checksum matches: written by something else
        raise ValueError(f"not a readable checkpoint of an earlier release ({type(e).__name__})") from None


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
            payload = encode(state)
            header = HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest())
            require_space(self.folder, HEADER.size + len(payload), f"checkpoint {path}", error=RunError,
                          fix="free some space, then continue with --resume (the checkpoints already "
                              "written are intact)")
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
        """Load one checkpoint; ValueError if it is truncated, altered or not a checkpoint, and
        :class:`UnsafeCheckpoint` if it is an earlier release's pickle that names a global not allowed."""
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < HEADER.size:
            raise ValueError("shorter than its header")
        magic, length, digest = HEADER.unpack_from(data)
        payload = data[HEADER.size:]
        if magic not in (MAGIC, LEGACY_MAGIC):
            raise ValueError("not a lure-fast checkpoint")
        if len(payload) != length:
            raise ValueError(f"truncated ({len(payload)} of {length} bytes)")
        if hashlib.sha256(payload).digest() != digest:
            raise ValueError("checksum mismatch")
        return decode(payload) if magic == MAGIC else load_legacy(payload, path)

    def latest(self, warn=print) -> dict | None:
        """The newest checkpoint that reads back whole; damaged newer ones are reported and skipped. A
        refused one (:class:`UnsafeCheckpoint`) stops the search: the folder is not to be trusted."""
        for f in reversed(self.list()):
            try:
                return self.read(os.path.join(self.folder, f))
            except UnsafeCheckpoint:
                raise
            except (ValueError, OSError, RuntimeError, EOFError) as e:
                warn(f"checkpoint {f} is damaged ({e}); using the one before it")
        return None
