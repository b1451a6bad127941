"""Writing a ``.beton``: one split -> one file with this package's fields (``fields``).

A decoded split (CIFAR, digits) is written from its tensors; a file-backed split (``sources.FileSplit``:
ImageFolder, Restricted ImageNet) is decoded file by file inside FFCV's writer processes, straight into the
file, so a dataset larger than RAM is never held in memory. Its unreadable files are left out (written again
without them when the first pass finds any) and listed in ``<file>.files.json``; images of differing sizes
without an image size are one ``DataError``. A file is written under a temporary name, checked
(``check.check_beton``), and renamed into place, its ``.sha256`` (and ``.files.json``) just before it, so a
killed write never leaves a file that a later run reads; stale temporary files of dead writers are removed.
"""
from __future__ import annotations

import ctypes
import glob
import json
import os
import re
import socket
from pathlib import Path

import numpy as np
import torch

from .check import _read_sha256, check_beton, file_sha256
from .errors import DataError
from .ffcv_adapter import require_ffcv, write_indexed
from .fields import (CHECKSUM_SUFFIX, FILES_SUFFIX, STATS_SUFFIX, check_storage, ffcv_fields, sample, sidecar,
                     temporary)
from .sources import FileSplit, Split, SplitLike, decode_image, size_mismatch
from .space import require_space


def write_beton(split: SplitLike, path: str | os.PathLike, storage: str = "raw", jpeg_quality: int = 90,
                workers: int | None = None) -> str:
    """Write ``split`` to ``path`` as an FFCV file (see ``fields`` for its fields).

    A :class:`~loaders.sources.FileSplit` is decoded file by file in the writer processes; its unreadable
    files are left out, listed in ``<path>.files.json`` and recorded in the split (``resolve``, which
    warns). Written to ``<path>.<host>.<pid>.tmp`` and renamed into place only when complete and checked:
    an interrupted write leaves no file at ``path``. Its checksum file ``<path>.sha256`` (and list of
    unreadable files) are renamed into place just before it. Returns ``path``.
    """
    require_ffcv()
    check_storage(storage)
    if not isinstance(split, FileSplit):  # a file list is never empty and decodes to uint8 [H, W, 3]
        if len(split) == 0:
            raise DataError(f"{path}: the split holds no samples; nothing to write")
        if split.images.dtype != torch.uint8 or split.images.ndim != 4 or split.images.shape[3] not in (1, 3):
            raise DataError(f"{path}: images must be uint8 [N, H, W, 1 or 3], got {split.images.dtype} "
                            f"{list(split.images.shape)}")
    if not 1 <= jpeg_quality <= 100:
        raise DataError(f"JPEG quality must be in 1..100, got {jpeg_quality}")
    path = Path(path)
    _remove_stale_temporaries(path)
    require_space(path.parent, estimated_size(split, storage, jpeg_quality), f"{path}: writing it",
                  "free some space or pass another cache_dir (LURE_FAST_BETON_CACHE)")
    tmp = temporary(path)
    sidecars = [sidecar(tmp, suffix) for suffix in (FILES_SUFFIX, CHECKSUM_SUFFIX)]

    def write(samples) -> None:
        n = max(1, min(workers or len(os.sched_getaffinity(0)), -(-len(samples) // 100)))
        write_indexed(str(tmp), ffcv_fields(storage, jpeg_quality), samples, n, chunksize=100)

    try:
        if isinstance(split, FileSplit):
            sidecars[0].write_text(json.dumps(_write_files(split, write)) + "\n")
        else:
            write(_Samples(split))
        check_beton(tmp, split, storage)
        digest = _read_sha256(tmp)
        sidecars[1].write_text(f"{digest}  {path.name}\n")
        # sidecars first: a file in place always has them; a kill between the renames leaves an old file
        # beside a new checksum, which fails the check and is rewritten
        for side in sidecars:
            if side.exists():
                os.replace(side, f"{path}{side.name[len(tmp.name):]}")
        os.replace(tmp, path)
        file_sha256(path, digest)  # the renamed file keeps its bytes and times: not hashed again
    except OSError as e:
        raise DataError(f"{path}: cannot be written ({e.strerror or e}); free disk space or pass another "
                        "cache_dir") from None
    finally:
        for t in (tmp, *sidecars):
            t.unlink(missing_ok=True)
    return str(path)


SAMPLE_OVERHEAD = 256  # bytes per sample beside its pixels: FFCV's metadata row and allocation table entry


def estimated_size(split: SplitLike, storage: str = "raw", jpeg_quality: int = 90) -> int:
    """Bytes a ``.beton`` of ``split`` will take, at most (raw: three channels of every pixel of every listed
    sample) or about (jpg: up to 8 of its images encoded at ``jpeg_quality``, times 1.5 for the rest). FFCV
    grows its file through a memory map, where a full disk is a crash (SIGBUS), not an error: hence asking first."""
    n = split.listed
    h, w, _ = split.sample_shape
    per_sample = h * w * 3
    if storage == "jpg" and n:
        import io

        from PIL import Image

        picks = np.unique(np.linspace(0, len(split) - 1, min(8, len(split))).astype(int))
        sizes = []
        for i in picks:
            try:
                image = split.image(int(i))
            except DataError:  # an unreadable file: the writer leaves it out
                continue
            buf = io.BytesIO()
            Image.fromarray(image if image.shape[2] == 3 else image[..., 0]).save(buf, "JPEG", quality=jpeg_quality)
            sizes.append(buf.tell())
        per_sample = int(1.5 * max(sizes)) if sizes else per_sample
    return n * (per_sample + SAMPLE_OVERHEAD) + (1 << 20)


class _Samples:
    """The indexable dataset FFCV's writer reads: sample i -> (RGB uint8 [H, W, 3], label, i)."""

    def __init__(self, split: Split):
        self.images, self.labels = split.images.numpy(), split.labels.numpy()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return sample(self.images[i], int(self.labels[i]), i)


class _Files:
    """The indexable dataset FFCV's writer reads for a file list: sample i -> file i decoded, in the
    writer's process. A file that does not decode (``failed[i] = 1``) or has another shape than
    ``shape`` (``failed[i] = 2``) is written as a black placeholder, to be left out by a second pass."""

    def __init__(self, split: FileSplit, positions: np.ndarray, shape: tuple):
        import multiprocessing

        self.samples = [split.samples[p] for p in positions]
        self.size, self.channels, self.shape = split.size, split.channels, shape
        self.failed = multiprocessing.RawArray(ctypes.c_int8, len(self.samples))  # shared with the writers

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        image = decode_image(path, self.size, self.channels)
        if image is None or image.shape != self.shape:
            self.failed[i] = 1 if image is None else 2
            image = np.zeros(self.shape, dtype=np.uint8)
        return sample(image, label, i)


def _write_files(split: FileSplit, write) -> dict:
    """Write ``split``'s files with ``write`` (one FFCV pass over a :class:`_Files`), and again without
    the ones that failed to decode if any did; resolve the split. Returns the ``.files.json`` content."""
    shape = split.sample_shape
    positions = np.arange(len(split.samples), dtype=np.int64)
    for _ in range(2):  # a second pass only where files failed; a third would mean they keep changing
        files = _Files(split, positions, shape)
        write(files)
        failed = np.frombuffer(files.failed, dtype=np.int8)
        if np.any(failed == 2):
            path = files.samples[int(np.flatnonzero(failed == 2)[0])][0]
            raise size_mismatch(path, decode_image(path, split.size, split.channels).shape, shape)
        if not failed.any():
            skipped = np.setdiff1d(np.arange(len(split.samples)), positions)
            first_bad = split.samples[int(skipped[0])][0] if len(skipped) else ""
            split.resolve(positions, first_bad)
            return {"files": split.fingerprint, "skipped": skipped.tolist(), "first_bad": first_bad}
        positions = positions[failed == 0]
        if not len(positions):
            raise DataError(f"{split.where}: none of its {len(split.samples)} images could be decoded")
    raise DataError(f"{split.where}: images became unreadable while the .beton was written; run again")


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``<file>.<host>.<pid>.tmp`` (and its ``.tmp.sha256``) left by writers on this host that are
    no longer running."""
    host = socket.gethostname()
    for tmp in glob.glob(glob.escape(str(path)) + ".*.tmp*"):
        suffixes = "|".join(re.escape(x) for x in (CHECKSUM_SUFFIX, FILES_SUFFIX, STATS_SUFFIX))
        m = re.fullmatch(re.escape(str(path)) + r"\.(.+)\.(\d+)\.tmp(?:" + suffixes + ")?", tmp)
        if not m or m.group(1) != host:
            continue
        try:
            os.kill(int(m.group(2)), 0)
        except ProcessLookupError:
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass
        except PermissionError:  # alive, owned by someone else
            pass
