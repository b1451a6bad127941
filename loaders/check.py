"""Checking a ``.beton``: that it is complete, holds this package's fields (``fields``), matches the split it
stands for, and has every byte its ``<file>.sha256`` says.

A file that fails raises one :class:`DataError` line naming the problem; the fix is to delete the file
(``cache.beton_for`` rewrites a cached file itself). The SHA-256 of every byte (0.13 s for the 177 MB
CIFAR-10 train file) is computed once per process and version of a file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .errors import DataError
from .ffcv_adapter import require_ffcv
from .fields import CHECKSUM_SUFFIX, FFCV_MODE, FIELDS, FILES_SUFFIX, sidecar
from .sources import FileSplit, SplitLike

_DIGESTS: dict[tuple, str] = {}  # (realpath, device, inode, size, mtime_ns, ctime_ns) -> SHA-256 hex


def check_beton(path: str | os.PathLike, expect: SplitLike | None = None, storage: str | None = None,
                spot_checks: int = 8, require_checksum: bool = False) -> int:
    """Check ``path`` (see :func:`_check_beton`), then, where ``<path>.sha256`` exists, that every byte
    matches it; ``require_checksum`` (cached files): a missing checksum file fails the check too.
    Returns the file's sample count."""
    try:
        n = _check_beton(path, expect, storage, spot_checks)
        _check_checksum(Path(path), require_checksum)
        return n
    except DataError:
        raise
    except (ValueError, OSError, IndexError) as e:  # bytes that parse as garbage: undecodable names, bad offsets
        raise DataError(f"{path}: not a complete .beton file ({type(e).__name__}: {e}); delete it and it will "
                        "be rewritten") from None


def file_sha256(path: str | os.PathLike, known: str | None = None) -> str:
    """SHA-256 hex of every byte of ``path``, memoised per process by (path, device, inode, size, mtime,
    ctime): a process that reuses a file many times reads it once, and a file rewritten in place with its
    mtime set back is read again (its ctime moved). ``known``: record that digest without reading."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if known is not None:
        _DIGESTS[key] = known
    if key not in _DIGESTS:
        _DIGESTS[key] = _read_sha256(path)
    return _DIGESTS[key]


def _read_sha256(path: str | os.PathLike) -> str:
    h, buf = hashlib.sha256(), bytearray(1 << 20)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(memoryview(buf)[:n])
    return h.hexdigest()


def _check_checksum(path: Path, required: bool) -> None:
    listed = sidecar(path, CHECKSUM_SUFFIX)
    try:
        text = listed.read_text(errors="replace")
    except FileNotFoundError:
        if required:
            raise DataError(f"{path}: not a complete .beton file (no checksum file {listed.name}: written before "
                            "checksums, or its write was cut short); delete it and it will be rewritten") from None
        return
    want = text.split()[0] if text.split() else ""
    if file_sha256(path) != want:
        raise DataError(f"{path}: not a complete .beton file (its bytes differ from the SHA-256 in {listed.name}: "
                        "damaged since it was written); delete it and it will be rewritten")


def _metadata_type():
    from ffcv.fields import IntField, RGBImageField
    from ffcv.types import get_metadata_type

    return get_metadata_type([RGBImageField(), IntField(), IntField()])


def _check_beton(path, expect, storage, spot_checks) -> int:
    """Check that ``path`` is a complete ``.beton`` with this package's fields; return its sample count.

    With ``expect``: the sample count, image size, labels and indices must match it, and ``spot_checks``
    sampled images must equal its pixels (raw) or decode to within JPEG error of them (jpg). A file-backed
    ``expect`` not yet resolved is resolved from ``<path>.files.json``; its sampled images are decoded
    from their files alone.
    """
    require_ffcv()
    from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, FieldDescType, HeaderType
    from ffcv.utils import decode_null_terminated_string

    path = str(path)

    def bad(reason: str) -> DataError:
        return DataError(f"{path}: not a complete .beton file ({reason}); delete it and it will be rewritten")

    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); check the path") from None
    if size < HeaderType.itemsize:
        raise bad(f"{size} bytes, shorter than the header")
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    if int(header["version"]) != CURRENT_VERSION:
        raise bad(f"format version {int(header['version'])}, expected {CURRENT_VERSION}")
    n, num_fields, table = int(header["num_samples"]), int(header["num_fields"]), int(header["alloc_table_ptr"])
    if num_fields != len(FIELDS):
        raise bad(f"{num_fields} fields, expected {len(FIELDS)} ({', '.join(FIELDS)})")
    meta_start = HeaderType.itemsize + num_fields * FieldDescType.itemsize
    if size < meta_start:
        raise bad("truncated inside the field descriptions")
    descriptors = np.fromfile(path, dtype=FieldDescType, count=num_fields, offset=HeaderType.itemsize)
    names = tuple(decode_null_terminated_string(d["name"]) for d in descriptors)
    if names != FIELDS or list(descriptors["type_id"]) != [2, 1, 1]:
        raise bad(f"fields {names}, expected {FIELDS}")
    meta_type = _metadata_type()
    meta_end = meta_start + n * meta_type.itemsize
    if table == 0:
        raise bad("no allocation table: the write never finished")
    if not meta_end <= table <= size:
        raise bad(f"allocation table at byte {table}, outside the file of {size} bytes")
    if size - table != n * ALLOC_TABLE_TYPE.itemsize:
        raise bad(f"allocation table holds {(size - table) / ALLOC_TABLE_TYPE.itemsize:.1f} entries for {n} "
                  "samples: truncated")
    alloc = np.fromfile(path, dtype=ALLOC_TABLE_TYPE, offset=table)
    if n and (np.any(alloc["ptr"] < meta_end) or np.any(alloc["ptr"] + alloc["size"] > table)):
        raise bad("a sample's data lies outside the data region")
    order = np.argsort(alloc["sample_id"], kind="stable")
    if not np.array_equal(alloc["sample_id"][order], np.arange(n, dtype=np.uint64)):
        raise bad("the allocation table does not hold every sample exactly once")
    meta = np.fromfile(path, dtype=meta_type, count=n, offset=meta_start)
    images, labels, index = meta["f0"], meta["f1"], meta["f2"]
    if not np.array_equal(index, np.arange(n)):
        raise bad("the index field is not 0..N-1")
    if not np.array_equal(images["data_ptr"], alloc["ptr"][order]):
        raise bad("image pointers disagree with the allocation table")
    if expect is None:
        return n
    if isinstance(expect, FileSplit) and not expect.resolved:
        _resolve_files(Path(path), expect, bad)
    h, w, c = expect.sample_shape
    if n != len(expect):
        raise bad(f"{n} samples, the dataset split holds {len(expect)}")
    if np.any(images["height"] != h) or np.any(images["width"] != w):
        raise bad(f"image sizes differ from the dataset's {w}x{h}")
    if storage is not None and np.any(images["mode"] != FFCV_MODE[storage]):
        raise bad(f"images not stored as {storage}")
    if not np.array_equal(labels, expect.labels.numpy()):
        raise bad("labels differ from the dataset's")
    sizes = alloc["size"][order]
    picks = np.unique(np.r_[0, n - 1, np.random.default_rng(n).integers(0, n, size=spot_checks)])
    with open(path, "rb") as f:
        for i in picks:
            f.seek(int(images["data_ptr"][i]))
            blob = np.frombuffer(f.read(int(sizes[i])), dtype=np.uint8)
            want = expect.image(int(i))
            want = np.repeat(want, 3, axis=2) if c == 1 else want
            if images["mode"][i] == FFCV_MODE["raw"]:
                if blob.size != want.size or not np.array_equal(blob.reshape(want.shape), want):
                    raise bad(f"the pixels of sample {i} differ from the dataset's")
            else:
                import cv2

                got = cv2.imdecode(blob, cv2.IMREAD_COLOR)
                if got is None or got.shape != want.shape:
                    raise bad(f"the JPEG of sample {i} does not decode to {w}x{h}")
                # JPEG keeps each block's mean: per-channel means far apart mean another image
                if np.abs(got[..., ::-1].mean(axis=(0, 1)) - want.mean(axis=(0, 1))).max() > 8:
                    raise bad(f"the JPEG of sample {i} does not match the dataset's image")
    return n


def _resolve_files(path: Path, split: FileSplit, bad) -> None:
    """Resolve ``split`` from the ``.files.json`` written beside ``path`` (its unreadable files)."""
    try:
        listed = json.loads(sidecar(path, FILES_SUFFIX).read_text())
        skipped = np.asarray(listed["skipped"], dtype=np.int64)
        fingerprint, first_bad = listed["files"], str(listed["first_bad"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise bad(f"no readable list of its unreadable files {path.name}{FILES_SUFFIX} ({type(e).__name__})") from None
    if fingerprint != split.fingerprint or np.any((skipped < 0) | (skipped >= len(split.samples))):
        raise bad(f"its {path.name}{FILES_SUFFIX} describes other files")
    split.resolve(np.setdiff1d(np.arange(len(split.samples)), skipped), first_bad)
