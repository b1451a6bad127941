"""Writers: one split of a :class:`~loaders.sources.Dataset` -> one FFCV ``.beton`` file, written once
into a cache and reused.

Every file holds three fields per sample, in this order:

  ``image``  ``RGBImageField``: ``'raw'`` (the exact uint8 pixels) or ``'jpg'`` (JPEG at ``jpeg_quality``);
             one-channel images are stored as RGB and the loader hands back one channel.
  ``label``  ``IntField``: the sample's label.
  ``index``  ``IntField``: the sample's position in the split, so a loader can prove which samples it served.

Any source ``sources.load_dataset`` reads (torchvision CIFAR-10/100 folders, ImageFolder trees of
JPEG/PNG, the embedded digits), Restricted ImageNet (``restricted_imagenet``) and few-shot subsets
(``few_shot``) arrive here as a ``Dataset``; ``beton_for`` turns one split into a file. A decoded split
(CIFAR, digits) is written from its tensors; a file-backed split (``sources.FileSplit``: ImageFolder,
Restricted ImageNet) is decoded file by file inside FFCV's writer processes, straight into the file, so
a dataset larger than RAM is never held in memory. Its unreadable files are left out (written again
without them when the first pass finds any) and listed in ``<file>.files.json``, which a later run reads
instead of decoding; images of differing sizes without an image size are one ``DataError``.

The cache (default ``~/.cache/lure-fast/beton``, or ``$LURE_FAST_BETON_CACHE``, or ``cache_dir=``)
names each file by a key of the dataset's name, layout and source, the split, the storage mode and
the split's content: a SHA-256 of a decoded split's pixels and labels (about 0.1 s for CIFAR-10), or a
file-backed split's fingerprint (its folder's real path, and every file's relative path, label, size and
mtime, and the image size: ``sources._fingerprint``). A file is written under a
temporary name, checked, and ``os.replace``-d into place, so a killed write never leaves a file that
a later run reads; stale temporary files of dead writers are removed. Beside each file a
``<file>.sha256`` (``sha256sum`` format) holds the SHA-256 of all its bytes, put in place before the
file itself. A cached file that fails its check (``check_beton``: header, field layout, allocation
table, labels, sampled pixels, and that checksum over every byte) is rewritten. The checksum costs
0.13 s for the 177 MB CIFAR-10 train file (0.22 s with the other checks) and is computed once per
process and version of a file. ``beton_stats`` gives a file's per-channel pixel mean and std, exact
(``stats``) and cached in ``<file>.stats.json`` keyed by that checksum.
"""
from __future__ import annotations

import ctypes
import fcntl
import glob
import hashlib
import json
import os
import queue
import re
import socket
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .sources import Dataset, FileSplit, Split, decode_image, size_mismatch
from .stats import histogram_stats, pixel_histogram

STORAGES = ("raw", "jpg")
_FFCV_MODE = {"jpg": 0, "raw": 1}  # RGBImageField's per-sample 'mode' byte
FIELDS = ("image", "label", "index")
WRITER_VERSION = 1  # bump when the fields or their encoding change: old cache files are then ignored
CHECKSUM_SUFFIX = ".sha256"
FILES_SUFFIX = ".files.json"  # a file-backed split's unreadable files
STATS_SUFFIX = ".stats.json"  # per-channel pixel mean and std
INSTALL_HINT = "install it with scripts/install_ffcv.sh PYTHON, or use --loader memory or torch"


def require_ffcv():
    """Import ffcv or raise one :class:`DataError` line saying how to install it."""
    threads = torch.get_num_threads()
    try:
        import ffcv  # noqa: F401
        import ffcv.writer  # noqa: F401
    except Exception as e:  # ImportError, or a broken native extension (OSError)
        raise DataError(f"the ffcv backend needs the ffcv package, which does not import here "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); {INSTALL_HINT}") from None
    finally:
        torch.set_num_threads(threads)  # importing ffcv sets torch's intra-op threads to 1 for the whole process
    return ffcv


# --------------------------------------------------------------------------- subsets

def few_shot(dataset: Dataset, per_class: int, seed: int = 0) -> Dataset:
    """The dataset with its train split cut to ``per_class`` samples of every class (paper Table 5:
    270 per class on Restricted ImageNet). The draw is seeded; kept samples stay in their original
    order; the test split is unchanged. ``meta['few_shot']['indices']`` lists the kept train positions."""
    if per_class < 1:
        raise DataError(f"few-shot needs at least 1 image per class, got {per_class}")
    labels = dataset.train.labels.numpy()
    rng = np.random.default_rng([seed, per_class])
    keep = []
    for c, name in enumerate(dataset.classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise DataError(f"few-shot {per_class} per class: class '{name}' has only {len(idx)} training "
                            f"images; lower the per-class count")
        keep.append(rng.choice(idx, size=per_class, replace=False))
    keep = np.sort(np.concatenate(keep))
    train = dataset.train.subset(keep)  # a file-backed split stays a file list
    meta = {**dataset.meta, "few_shot": {"per_class": per_class, "seed": seed, "indices": keep}}
    return replace(dataset, name=f"{dataset.name}-fewshot{per_class}", train=train, meta=meta)


# --------------------------------------------------------------------------- keys and the cache

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
    if storage not in STORAGES:
        raise DataError(f"beton storage '{storage}': unknown; choose one of {', '.join(STORAGES)}")
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
    if it is missing, and rewriting it (with a warning) if it fails :func:`check_beton`."""
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


# --------------------------------------------------------------------------- writing

class _Samples:
    """The indexable dataset FFCV's writer reads: sample i -> (RGB uint8 [H, W, 3], label, i)."""

    def __init__(self, split: Split):
        self.images, self.labels = split.images.numpy(), split.labels.numpy()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return _sample(self.images[i], int(self.labels[i]), i)


def _sample(image: np.ndarray, label: int, i: int):
    if image.shape[2] == 1:  # RGBImageField stores three channels
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image), label, int(i)


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
        return _sample(image, label, i)


def _fields(storage: str, jpeg_quality: int) -> dict:
    from ffcv.fields import IntField, RGBImageField

    return {"image": RGBImageField(write_mode=storage, jpeg_quality=jpeg_quality),
            "label": IntField(), "index": IntField()}


def _writer_class():
    """FFCV's ``DatasetWriter`` with a worker loop that notices a dead worker (FFCV's own loop waits for
    the sample count forever when one dies) and always frees the shared metadata block."""
    from multiprocessing import Process, Queue, Value

    from ffcv.memory_allocator import MemoryAllocator
    from ffcv.writer import DatasetWriter

    class Writer(DatasetWriter):
        def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):
            self.num_samples = num_samples
            self.prepare()
            processes = []
            todo, results = Queue(), Queue()
            try:
                for chunk in queue_content:
                    todo.put(chunk)
                for _ in range(self.num_workers):
                    todo.put(None)
                allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
                args = (todo, self.metadata_sm, self.metadata_type, self.fields, allocator,
                        Value(ctypes.c_uint64, 0), results, *extra_worker_args)
                processes = [Process(target=work_fn, args=args, daemon=True) for _ in range(self.num_workers)]
                for p in processes:
                    p.start()
                allocations, pending = [], len(processes)
                while pending:  # every worker sends its allocation list once, when it has written all its pages
                    try:
                        allocations.extend(results.get(timeout=0.2))
                        pending -= 1
                    except queue.Empty:
                        dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                        if dead:
                            raise DataError(f"{self.fname}: a writer process failed (exit code {dead[0]}) while "
                                            "writing the .beton; see the error above, fix it and run again") from None
                for p in processes:
                    p.join()
                self.finalize(allocations)
            finally:
                for p in processes:
                    if p.is_alive():
                        p.terminate()
                        p.join()
                # chunks nobody will read: don't let the queue's feeder thread block interpreter exit
                todo.cancel_join_thread()
                todo.close()
                self.metadata_sm.close()
                self.metadata_sm.unlink()

    return Writer


def write_beton(split: Split | FileSplit, path: str | os.PathLike, storage: str = "raw", jpeg_quality: int = 90,
                workers: int | None = None) -> str:
    """Write ``split`` to ``path`` as an FFCV file (see the module docstring for its fields).

    A :class:`~loaders.sources.FileSplit` is decoded file by file in the writer processes; its unreadable
    files are left out, listed in ``<path>.files.json`` and recorded in the split (``resolve``, which
    warns). Written to ``<path>.<host>.<pid>.tmp`` and renamed into place only when complete and checked:
    an interrupted write leaves no file at ``path``. Its checksum file ``<path>.sha256`` (and list of
    unreadable files) are renamed into place just before it. Returns ``path``.
    """
    require_ffcv()
    if storage not in STORAGES:
        raise DataError(f"beton storage '{storage}': unknown; choose one of {', '.join(STORAGES)}")
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
    tmp = Path(f"{path}.{socket.gethostname()}.{os.getpid()}.tmp")
    sidecars = [Path(f"{tmp}{suffix}") for suffix in (FILES_SUFFIX, CHECKSUM_SUFFIX)]

    def write(samples) -> None:
        n = max(1, min(workers or len(os.sched_getaffinity(0)), -(-len(samples) // 100)))
        _writer_class()(str(tmp), _fields(storage, jpeg_quality), num_workers=n).from_indexed_dataset(
            samples, chunksize=100)

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


def _resolve_files(path: Path, split: FileSplit, bad) -> None:
    """Resolve ``split`` from the ``.files.json`` written beside ``path`` (its unreadable files)."""
    try:
        listed = json.loads(Path(f"{path}{FILES_SUFFIX}").read_text())
        skipped = np.asarray(listed["skipped"], dtype=np.int64)
        fingerprint, first_bad = listed["files"], str(listed["first_bad"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise bad(f"no readable list of its unreadable files {path.name}{FILES_SUFFIX} ({type(e).__name__})") from None
    if fingerprint != split.fingerprint or np.any((skipped < 0) | (skipped >= len(split.samples))):
        raise bad(f"its {path.name}{FILES_SUFFIX} describes other files")
    split.resolve(np.setdiff1d(np.arange(len(split.samples)), skipped), first_bad)


# --------------------------------------------------------------------------- checksums

_DIGESTS: dict[tuple, str] = {}  # (realpath, device, inode, size, mtime_ns) -> SHA-256 hex


def _checksum_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}{CHECKSUM_SUFFIX}")


def file_sha256(path: str | os.PathLike, known: str | None = None) -> str:
    """SHA-256 hex of every byte of ``path``, memoised per process by (path, device, inode, size, mtime):
    a process that reuses a file many times reads it once. ``known``: record that digest without reading."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
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


# --------------------------------------------------------------------------- checking

def _metadata_type():
    from ffcv.fields import IntField, RGBImageField
    from ffcv.types import get_metadata_type

    return get_metadata_type([RGBImageField(), IntField(), IntField()])


def check_beton(path: str | os.PathLike, expect: Split | FileSplit | None = None, storage: str | None = None,
                spot_checks: int = 8, require_checksum: bool = False) -> int:
    """Check ``path`` (see :func:`_check_beton`), then, where ``<path>.sha256`` exists, that every byte
    matches it; ``require_checksum`` (cached files): a missing checksum file fails the check too."""
    try:
        n = _check_beton(path, expect, storage, spot_checks)
        _check_checksum(Path(path), require_checksum)
        return n
    except DataError:
        raise
    except (ValueError, OSError, IndexError) as e:  # bytes that parse as garbage: undecodable names, bad offsets
        raise DataError(f"{path}: not a complete .beton file ({type(e).__name__}: {e}); delete it and it will "
                        "be rewritten") from None


def _check_checksum(path: Path, required: bool) -> None:
    listed = _checksum_path(path)
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


def _check_beton(path, expect, storage, spot_checks) -> int:
    """Check that ``path`` is a complete ``.beton`` with this module's fields; return its sample count.

    With ``expect``: the sample count, image size, labels and indices must match it, and ``spot_checks``
    sampled images must equal its pixels (raw) or decode to within JPEG error of them (jpg). A file-backed
    ``expect`` not yet resolved is resolved from ``<path>.files.json``; its sampled images are decoded
    from their files alone.
    Raises one :class:`DataError` line naming the problem; the fix is to delete the file (a cached file
    is rewritten automatically).
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
    if storage is not None and np.any(images["mode"] != _FFCV_MODE[storage]):
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
            if images["mode"][i] == _FFCV_MODE["raw"]:
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


def read_beton(path: str | os.PathLike, channels: int = 3) -> Split:
    """Decode a whole file this module wrote back into a :class:`Split` (images uint8 [N, H, W, channels],
    labels int64 [N]), with OpenCV for JPEG samples: for inspection and tests, not for training."""
    import cv2
    from ffcv.reader import Reader

    check_beton(path)
    reader = Reader(str(path))
    meta, table = reader.metadata, reader.alloc_table
    sizes = np.zeros(len(meta), dtype=np.int64)
    sizes[table["sample_id"].astype(np.int64)] = table["size"]
    images = []
    with open(path, "rb") as f:
        for i, m in enumerate(meta["f0"]):
            f.seek(int(m["data_ptr"]))
            blob = np.frombuffer(f.read(int(sizes[i])), dtype=np.uint8)
            if m["mode"] == _FFCV_MODE["raw"]:
                image = blob.reshape(int(m["height"]), int(m["width"]), 3)
            else:
                image = cv2.imdecode(blob, cv2.IMREAD_COLOR)[..., ::-1]
            images.append(image[..., :channels])
    labels = torch.from_numpy(meta["f1"].astype(np.int64))
    return Split(torch.from_numpy(np.ascontiguousarray(np.stack(images))), labels)


# --------------------------------------------------------------------------- statistics

def beton_stats(path: str | os.PathLike, channels: int = 3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and unbiased std, in [0, 1], of the first ``channels`` channels of every image in
    ``path`` (a file this module wrote; JPEG samples decoded with OpenCV), from exact integer sums: equal
    bit for bit to ``stats.channel_stats`` of the same pixels in memory. Cached in ``<path>.stats.json``,
    keyed by the file's SHA-256; a cache that cannot be written is only warned about."""
    require_ffcv()
    digest = file_sha256(path)
    side = Path(f"{path}{STATS_SUFFIX}")
    try:
        saved = json.loads(side.read_text())
        if saved["sha256"] == digest and saved["channels"] == channels:
            return tuple(saved["mean"]), tuple(saved["std"])
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or damaged: count again
        pass
    mean, std = histogram_stats(beton_histogram(path, channels))
    tmp = Path(f"{path}.{socket.gethostname()}.{os.getpid()}.tmp{STATS_SUFFIX}")
    try:  # floats go through JSON unchanged (repr round-trips)
        tmp.write_text(json.dumps({"sha256": digest, "channels": channels, "mean": mean, "std": std}) + "\n")
        os.replace(tmp, side)
    except OSError as e:
        warnings.warn(f"could not cache the pixel statistics in {side} ({e.strerror}); the next run counts "
                      "them again", stacklevel=2)
        tmp.unlink(missing_ok=True)
    return mean, std


def beton_histogram(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """int64 [channels, 256]: ``stats.pixel_histogram`` of every image in ``path``, read in file order in
    blocks of about ``stats.CHUNK`` bytes (memory stays bounded for a file larger than RAM)."""
    import cv2
    from ffcv.reader import Reader

    from .stats import CHUNK

    reader = Reader(str(path))
    meta, table = reader.metadata["f0"], reader.alloc_table
    sizes = np.zeros(len(meta), dtype=np.int64)
    sizes[table["sample_id"].astype(np.int64)] = table["size"]
    starts = meta["data_ptr"].astype(np.int64)
    order = np.argsort(starts, kind="stable")
    hist = np.zeros((channels, 256), dtype=np.int64)
    with open(path, "rb") as f:
        i = 0
        while i < len(order):
            j = i + 1  # samples i..j-1 span at most CHUNK bytes (or are one sample)
            while j < len(order) and starts[order[j]] + sizes[order[j]] - starts[order[i]] <= CHUNK:
                j += 1
            base = int(starts[order[i]])
            f.seek(base)
            block = np.frombuffer(f.read(int(starts[order[j - 1]] + sizes[order[j - 1]]) - base), dtype=np.uint8)
            pixels = []
            for k in order[i:j]:
                blob = block[starts[k] - base:starts[k] - base + sizes[k]]
                raw = meta["mode"][k] == _FFCV_MODE["raw"]
                image = blob if raw else cv2.imdecode(blob, cv2.IMREAD_COLOR)[..., ::-1]
                pixels.append(image.reshape(-1, 3)[:, :channels])
            hist += pixel_histogram(np.concatenate(pixels))
            i = j
    return hist
