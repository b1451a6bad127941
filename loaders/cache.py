"""The ``.beton`` cache: the file that holds one split of a :class:`~loaders.sources.Dataset`, written once
(``write``) and reused while it passes its check (``check``), and its pixel statistics, counted once.

The cache (default ``~/.cache/lure-fast/beton``, or ``$LURE_FAST_BETON_CACHE``, or ``cache_dir=``) names
each file by a key of the dataset's name, layout and source, the split, the storage mode and the split's
content: a SHA-256 of a decoded split's pixels and labels (about 0.1 s for CIFAR-10), or a file-backed
split's fingerprint (its folder's real path, and every file's relative path, label, size, mtime, inode and
ctime, and the image size: ``sources._fingerprint``), so an image edited, replaced or touched since, even
with its mtime set back, gives another key and the file is written again. A cached file that fails its check is rewritten, with a warning; one
writer per file on a machine, the others wait for it and reuse its file.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

from .check import check_beton, file_sha256
from .errors import DataError
from .ffcv_adapter import require_ffcv
from .fields import STATS_SUFFIX, WRITER_VERSION, check_storage, sidecar, temporary
from .sources import Dataset, FileSplit, Split
from .stats import beton_histogram, histogram_stats
from .write import write_beton


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds cached ``.beton`` files (created on first use)."""
    root = cache_dir or os.environ.get("LURE_FAST_BETON_CACHE") or Path.home() / ".cache" / "lure-fast" / "beton"
    return Path(root).expanduser()


def split_fingerprint(split: Split) -> str:
    """SHA-256 of a split's shape, pixels and labels: the content part of a cache key."""
    h = hashlib.sha256()
    images, labels = split.images.contiguous().numpy(), split.labels.contiguous().numpy()
    h.update(repr((images.shape, str(images.dtype), labels.shape, str(labels.dtype))).encode())
    h.update(memoryview(images).cast("B"))
    h.update(memoryview(labels).cast("B"))
    return h.hexdigest()


def beton_name(dataset: Dataset, split: str, storage: str = "raw", jpeg_quality: int = 90) -> str:
    """The cache file name of one split: readable prefix, then a 16-hex key of source, options and content."""
    check_storage(storage)
    options = {"v": WRITER_VERSION, "name": dataset.name, "layout": dataset.layout, "source": dataset.source,
               "split": split, "storage": storage, "quality": jpeg_quality if storage == "jpg" else None,
               "classes": list(dataset.classes)}
    h = hashlib.sha256(repr(sorted(options.items())).encode())
    data = getattr(dataset, split)
    # a file-backed split is keyed by its files, not its pixels, which would need decoding
    h.update((f"files {data.fingerprint} {data.channels}" if isinstance(data, FileSplit)
              else split_fingerprint(data)).encode())
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.name)[:40] or "dataset"
    return f"{prefix}-{split}-{storage}-{h.hexdigest()[:16]}.beton"


def beton_for(dataset: Dataset, split: str, storage: str = "raw", jpeg_quality: int = 90,
              cache_dir: str | os.PathLike | None = None, workers: int | None = None) -> str:
    """Path of the cached ``.beton`` of ``dataset``'s ``split`` ('train' or 'test'), writing it first
    if it is missing, and rewriting it (with a warning) if it fails :func:`~loaders.check.check_beton`.
    A file-backed split knows its readable files afterwards (its length is then final)."""
    if split not in ("train", "test"):
        raise DataError(f"split '{split}': unknown; choose train or test")
    data = getattr(dataset, split)
    root = cache_root(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"beton cache {root}: cannot be created ({e.strerror}); pass a writable cache_dir") from None
    path = root / beton_name(dataset, split, storage, jpeg_quality)
    with _locked(path):  # one writer per file on this machine; the others wait and then reuse it
        if path.exists():
            try:
                check_beton(path, data, storage, require_checksum=True)
                return str(path)
            except DataError as e:
                warnings.warn(f"{str(e).split('; delete it')[0]}; rewriting it", stacklevel=2)
        write_beton(data, path, storage, jpeg_quality, workers)
    return str(path)


def betons_for(dataset: Dataset, **options) -> dict[str, str]:
    """``{'train': path, 'test': path}``: :func:`beton_for` of both splits."""
    return {s: beton_for(dataset, s, **options) for s in ("train", "test")}


def beton_stats(path: str | os.PathLike, channels: int = 3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and unbiased std, in [0, 1], of the first ``channels`` channels of every image in
    ``path`` (a file this package wrote), from exact integer sums (``stats.beton_histogram``): equal bit for
    bit to ``stats.channel_stats`` of the same pixels in memory. Cached in ``<path>.stats.json``, keyed by
    the file's SHA-256; a cache that cannot be written is only warned about."""
    require_ffcv()
    digest = file_sha256(path)
    side = sidecar(path, STATS_SUFFIX)
    try:
        saved = json.loads(side.read_text())
        if saved["sha256"] == digest and saved["channels"] == channels:
            return tuple(saved["mean"]), tuple(saved["std"])
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or damaged: count again
        pass
    mean, std = histogram_stats(beton_histogram(path, channels))
    tmp = sidecar(temporary(path), STATS_SUFFIX)
    try:  # floats go through JSON unchanged (repr round-trips)
        tmp.write_text(json.dumps({"sha256": digest, "channels": channels, "mean": mean, "std": std}) + "\n")
        os.replace(tmp, side)
    except OSError as e:
        warnings.warn(f"could not cache the pixel statistics in {side} ({e.strerror}); the next run counts "
                      "them again", stacklevel=2)
        tmp.unlink(missing_ok=True)
    return mean, std


@contextmanager
def _locked(path: Path):
    try:
        f = open(f"{path}.lock", "a")
    except OSError as e:
        raise DataError(f"beton cache {path.parent}: cannot be written ({e.strerror}); pass a writable "
                        "cache_dir or set LURE_FAST_BETON_CACHE") from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
