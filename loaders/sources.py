"""Sources: read a dataset from where it lives into decoded uint8 arrays.

Layouts understood (``detect_layout``):
  * ``digits``      scikit-learn's handwritten digits (1,797 real 8x8 images, shipped inside the
                    installed scikit-learn package): the embedded default, needs no files.
  * ``cifar10``     torchvision's ``cifar-10-batches-py`` folder (or its parent).
  * ``cifar100``    torchvision's ``cifar-100-python`` folder (or its parent); fine labels.
  * ``imagefolder`` ``ROOT/train/<class>/*.{jpg,png,...}`` and ``ROOT/test/<class>/...``.

Every reader returns a :class:`Dataset` whose splits (:class:`SplitLike`) hold ``images`` as a uint8 tensor
``[N, H, W, C]`` and ``labels`` as an int64 tensor ``[N]``, in a fixed, documented order. ImageFolder
and Restricted ImageNet splits are :class:`FileSplit` objects: lists of files, decoded into memory only when
their ``images`` are read, so the ``.beton`` writer can decode them file by file instead.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .errors import DataError
from .space import require_space

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
LAYOUTS = ("digits", "cifar10", "cifar100", "imagefolder")
DIGITS_TEST_SIZE = 297  # 1,797 digits -> 1,500 train + 297 held-out test


@runtime_checkable
class SplitLike(Protocol):
    """What every split type offers (:class:`Split` in memory, :class:`FileSplit` a list of files).

    ``len`` is cheap: of a file list whose readable files are not known yet, it counts the listed files (an
    upper bound); it is final once they are known (the split decoded, or a ``.beton`` written or read: every
    backend does one of these when built). ``images``, ``labels`` and ``skipped`` are final at once (a file
    list decodes itself to know them)."""

    def __len__(self) -> int: ...

    @property
    def images(self) -> torch.Tensor:
        """uint8 [N, H, W, C]."""

    @property
    def labels(self) -> torch.Tensor:
        """int64 [N]."""

    @property
    def skipped(self) -> int:
        """Unreadable source files left out."""

    @property
    def listed(self) -> int:
        """Samples before unreadable source files are left out: an upper bound on ``len``, known at once."""

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded images (of a file list: an upper bound, without decoding)."""

    def image(self, i: int) -> np.ndarray:
        """Sample ``i``'s pixels, uint8 [H, W, C]."""

    def subset(self, rows: np.ndarray) -> "SplitLike":
        """The samples at positions ``rows``, in that order, as a split of the same type."""


@dataclass
class Split:
    """A split held in memory (implements :class:`SplitLike`)."""

    images: torch.Tensor  # uint8 [N, H, W, C]
    labels: torch.Tensor  # int64 [N]
    skipped: int = 0  # unreadable source files left out

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(int(d) for d in self.images.shape[1:])

    @property
    def listed(self) -> int:
        """Samples before unreadable source files are left out: here ``len``."""
        return len(self)

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()

    def image(self, i: int) -> np.ndarray:
        """Sample ``i``'s pixels, uint8 [H, W, C]."""
        return self.images[int(i)].numpy()

    def subset(self, rows: np.ndarray) -> "Split":
        """The samples at positions ``rows``, in that order."""
        rows = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        return Split(self.images[rows].contiguous(), self.labels[rows])


@dataclass
class Dataset:
    name: str
    layout: str
    train: SplitLike
    test: SplitLike
    classes: list[str]
    source: str = ""  # absolute path, or "" for the embedded data
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image (of a file-backed split: its first readable file, decoded alone)."""
        h, w, c = self.train.sample_shape
        return c, h, w

    @property
    def skipped(self) -> dict[str, int]:
        """Unreadable files left out of each split (a file-backed split learns it when first decoded or written)."""
        return {"train": self.train.skipped, "test": self.test.skipped}


# --------------------------------------------------------------------------- detection

def _cifar_dir(path: str, folder: str) -> str | None:
    if os.path.basename(os.path.normpath(path)) == folder and os.path.isdir(path):
        return path
    inner = os.path.join(path, folder)
    return inner if os.path.isdir(inner) else None


def detect_layout(path: str) -> str:
    """Name the layout of the folder at ``path`` or raise :class:`DataError` saying what was expected."""
    if not os.path.exists(path):
        raise DataError(f"--data {path}: no such file or folder; pass the folder that holds the dataset")
    if not os.path.isdir(path):
        raise DataError(f"--data {path}: is a file, not a folder; pass the folder that holds the dataset")
    if _cifar_dir(path, "cifar-10-batches-py"):
        return "cifar10"
    if _cifar_dir(path, "cifar-100-python"):
        return "cifar100"
    entries = [e for e in os.listdir(path) if not e.startswith(".")]
    if not entries:
        raise DataError(f"--data {path}: the folder is empty; it should hold train/ and test/ class folders "
                        "(ImageFolder) or torchvision's cifar-10-batches-py / cifar-100-python")
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        return "imagefolder"
    raise DataError(f"--data {path}: unknown dataset layout (found {', '.join(sorted(entries)[:5])}); expected "
                    "train/<class>/ and test/<class>/ image folders, cifar-10-batches-py or cifar-100-python")


# --------------------------------------------------------------------------- readers

def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
                 torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def read_digits() -> Dataset:
    """scikit-learn's digits: 8x8 grey images with values 0..16, scaled to 0..255, one channel.
    A fixed permutation (seed 0) puts 297 images in the held-out test split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # [N, 8, 8, 1]
    order = np.random.default_rng(0).permutation(len(images))
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    return Dataset("digits", "digits", _split(images[train], d.target[train]),
                   _split(images[test], d.target[test]), [str(c) for c in range(10)])


def _cifar_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR batch may name: NumPy's array, scalar and dtype constructors, under the names
    NumPy 1.x and 2.x pickle them by (the released files: ``numpy.core.multiarray._reconstruct``,
    ``numpy.ndarray``, ``numpy.dtype``; a re-pickled copy: ``_frombuffer``, ``scalar`` for NumPy integer
    labels, and ``_codecs.encode`` for bytes at protocol 2). Each builds data and nothing else."""
    import codecs

    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    frombuffer = np.ndarray.__reduce_ex__(np.zeros(1), 5)[0]
    scalar = np.int64(0).__reduce__()[0]
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what CIFAR's python batches hold (dicts, lists, strings, bytes, numbers and
    NumPy arrays): any other global is refused before it is looked up, so nothing in the file runs."""

    def __init__(self, f, path: str):
        super().__init__(f, encoding="latin1")
        self.path, self.allowed = path, _cifar_globals()

    def find_class(self, module: str, name: str):
        found = self.allowed.get((module, name))
        if found is None:
            raise DataError(f"{self.path}: holds a pickled {module}.{name}, which no CIFAR batch does; refused "
                            "without running it: download the dataset again from its source")
        return found

    def persistent_load(self, pid):
        raise DataError(f"{self.path}: holds a persistent reference, which no CIFAR batch does; refused: "
                        "download the dataset again from its source")


def _unpickle(path: str) -> dict:
    """One file of a CIFAR python folder, read with :class:`_CifarUnpickler`; one DataError line if it is
    missing, damaged, holds anything but what the released files hold, or is not a dict."""
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: missing; the CIFAR folder is incomplete, download it again") from None
    except Exception as e:  # truncated or foreign file
        raise DataError(f"{path}: cannot be read ({type(e).__name__}); the CIFAR folder is damaged, download it again") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: holds a {type(d).__name__}, not a CIFAR batch (a dict); download the dataset again")
    return d


def _cifar_images(d: dict) -> np.ndarray:
    return np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _cifar_fields(path: str, d: dict, label_key: str) -> tuple[np.ndarray, list]:
    """Images and labels of one unpickled CIFAR batch, or one DataError line if it is malformed."""
    try:
        return _cifar_images(d), list(d[label_key])
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path}: not a CIFAR batch ({type(e).__name__}: {e}); download the dataset again") from None


def read_cifar10(path: str) -> Dataset:
    root = _cifar_dir(path, "cifar-10-batches-py")
    if root is None:
        raise DataError(f"--data {path}: no cifar-10-batches-py folder here")
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    parts = [_cifar_fields(n, _unpickle(os.path.join(root, n)), "labels") for n in names]
    meta = _unpickle(os.path.join(root, "batches.meta"))
    train = _split(np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]))
    return Dataset("cifar10", "cifar10", train, _split(*parts[5]), list(meta.get("label_names", range(10))),
                   os.path.abspath(root))


def read_cifar100(path: str) -> Dataset:
    root = _cifar_dir(path, "cifar-100-python")
    if root is None:
        raise DataError(f"--data {path}: no cifar-100-python folder here")
    train, test = (_cifar_fields(n, _unpickle(os.path.join(root, n)), "fine_labels") for n in ("train", "test"))
    meta = _unpickle(os.path.join(root, "meta"))
    return Dataset("cifar100", "cifar100", _split(*train), _split(*test),
                   list(meta.get("fine_label_names", range(100))), os.path.abspath(root))


def list_imagefolder(root: str, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names (sorted folder names) and (file, label) pairs of one ImageFolder split."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such folder; an ImageFolder dataset needs train/ and test/ class folders")
    found = sorted(e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)) and not e.startswith("."))
    if not found:
        raise DataError(f"{root}: holds no class folders; put each class's images in {root}/<class>/")
    if classes is not None and found != classes:
        only_here = sorted(set(found) - set(classes))
        missing = sorted(set(classes) - set(found))
        raise DataError(f"{root}: class folders differ from train/ (extra: {only_here or '-'}, missing: "
                        f"{missing or '-'}); train and test must hold the same classes")
    samples = []
    for label, c in enumerate(found):
        folder = os.path.join(root, c)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(f"{folder}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            "add images or remove the folder")
        samples += [(os.path.join(folder, f), label) for f in files]
    return found, samples


def decode_image(path: str, size: int | None = None, channels: int = 3) -> np.ndarray | None:
    """Decode one file to uint8 [H, W, C]; ``None`` if it is unreadable or truncated."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except Exception:
        return None
    return a if a.ndim == 3 else a[..., None]


def decoded_cache_root() -> Path:
    """Where decoded ImageFolder splits are cached: ``$LURE_FAST_DECODED_CACHE`` or ~/.cache/lure-fast/decoded."""
    env = os.environ.get("LURE_FAST_DECODED_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lure-fast" / "decoded"


def decoded_cache(cache_dir: str | os.PathLike | bool | None) -> Path | None:
    """A reader's ``cache_dir`` argument as a folder: None -> :func:`decoded_cache_root`, False -> no cache."""
    if cache_dir is False:
        return None
    return Path(cache_dir).expanduser() if cache_dir else decoded_cache_root()


def _decode_chunk(args) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    paths, size, shape = args
    out = np.zeros((len(paths), *shape), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    mismatch = None
    for k, p in enumerate(paths):
        a = decode_image(p, size, shape[2])
        if a is None:
            continue
        if a.shape != shape:
            mismatch = mismatch or (p, a.shape)
            continue
        out[k], ok[k] = a, True
    return out, ok, mismatch


def _fingerprint(tag: str, size: int | None, samples: list[tuple[str, int]], root: str) -> str:
    """Key of a file-backed split (its decoded .npz, and its .beton): the real path of ``root`` (the split's
    folder), and each file's path relative to it, label, size, mtime, and its inode and ctime, so every
    spelling of one folder (relative, ``..``, a symlink) gives one key and any change to a file changes it:
    an edit, a touch, or a replacement of the same size whose mtime was set back (``cp -p``, ``os.utime``)
    all change the ctime (which no user can set) or the inode. A file that cannot be stat-ed (a dangling
    link, deleted since listing) counts as missing. Nothing is read: an ImageNet-sized folder is keyed in
    seconds (docs/safety.md)."""
    real = os.path.realpath(root)
    h = hashlib.sha256(f"{tag} v3 {size} {real}".encode())
    prefix = os.path.join(root, "")
    for path, label in samples:
        rel = path[len(prefix):] if path.startswith(prefix) else os.path.realpath(path)
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}"
        except OSError:  # decode_image skips it too
            stamp = "missing"
        h.update(f"{rel}\0{label}\0{stamp}\n".encode())
    return h.hexdigest()[:16]


def _warn_skipped(where: str, skipped: int, first_bad: str) -> None:
    if skipped:
        warnings.warn(f"{where}: skipped {skipped} unreadable image(s), first {first_bad}", stacklevel=4)


def size_mismatch(path: str, shape: tuple, first: tuple) -> DataError:
    """The error for an image whose (H, W, C) ``shape`` differs from the ``first`` image's."""
    (h, w, _), (h2, w2, _) = first, shape
    return DataError(f"{path}: image is {w2}x{h2} but {w}x{h} before it; pass an image size "
                     "(--image-size) to resize them all")


def decode_samples(samples: list[tuple[str, int]], size: int | None, where: str, cache: Path | None = None,
                   tag: str = "imagefolder", workers: int | None = None, channels: int = 3,
                   first: np.ndarray | None = None) -> tuple[Split, np.ndarray]:
    """Decode ``(path, label)`` samples of the split folder ``where`` into a :class:`Split`, in worker
    processes, and cache the result as ``.npz`` in ``cache`` keyed by ``where``'s real path and the
    files' relative paths, sizes and times (``None``: no cache). Unreadable or missing files are
    skipped with a warning, on a cache hit too; returns the split and the int64 positions in ``samples``
    of the files it holds. Without ``size`` every image must have the first one's shape (``first``:
    that image, when the caller has decoded it already)."""
    cached = cache / f"{tag}-{_fingerprint(tag, size, samples, where)}.npz" if cache else None
    if cached is not None and cached.exists():
        try:
            with np.load(cached) as z:
                split, kept, first_bad = (Split(torch.from_numpy(z["images"]), torch.from_numpy(z["labels"])),
                                          z["kept"].astype(np.int64), str(z["first_bad"]))
            split.skipped = len(samples) - len(kept)
            _warn_skipped(where, split.skipped, first_bad)
            return split, kept
        except Exception:  # truncated, foreign or written before "kept": decode again and overwrite
            pass
    if first is None:
        first = first_readable(samples, size, where, channels)[1]
    chunks = [([p for p, _ in samples[i:i + 512]], size, first.shape) for i in range(0, len(samples), 512)]
    workers = workers or len(os.sched_getaffinity(0))
    if workers <= 1 or len(chunks) <= 1:
        parts = [_decode_chunk(c) for c in chunks]
    else:  # PIL decoding is CPU-bound and per file: one process per core
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(pool.map(_decode_chunk, chunks))
    bad = next((m for _, _, m in parts if m is not None), None)
    if bad is not None:
        raise size_mismatch(bad[0], bad[1], first.shape)
    ok = np.concatenate([o for _, o, _ in parts])
    images = np.concatenate([im for im, _, _ in parts])[ok]
    labels = np.array([label for _, label in samples], dtype=np.int64)[ok]
    kept = np.flatnonzero(ok).astype(np.int64)
    skipped = int((~ok).sum())
    first_bad = next((p for (p, _), good in zip(samples, ok) if not good), "")
    _warn_skipped(where, skipped, first_bad)
    if cached is not None:
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp.npz")
        need = images.nbytes + labels.nbytes + kept.nbytes + (1 << 16)
        try:
            require_space(cached.parent, need, f"caching the decoded images of {where}")
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, images=images, labels=labels, kept=kept, first_bad=first_bad)
            os.replace(tmp, cached)
        except DataError as e:  # the cache only saves time: go on without it
            warnings.warn(f"{e}; the images are not cached, the next run decodes them again", stacklevel=3)
        except OSError as e:
            warnings.warn(f"could not cache the decoded images in {cached.parent} ({e.strerror}); "
                          "the next run decodes them again", stacklevel=3)
            tmp.unlink(missing_ok=True)
    return Split(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), skipped), kept


def first_readable(samples: list[tuple[str, int]], size: int | None, where: str, channels: int = 3
                   ) -> tuple[int, np.ndarray]:
    """Position and pixels of the first file of ``samples`` that decodes; one DataError line if none does."""
    for i, (path, _) in enumerate(samples):
        a = decode_image(path, size, channels)
        if a is not None:
            return i, a
    raise DataError(f"{where}: none of its {len(samples)} images could be decoded")


class FileSplit:
    """A split kept as its image files (implements :class:`SplitLike`): ``samples`` (path, label) in split
    order, each decoded with :func:`decode_image` to ``size`` (``None``: as stored) and ``channels`` channels.

    Reading ``images`` decodes the whole split into memory once (:func:`decode_samples`, cached); the
    ``.beton`` writer decodes it file by file instead and calls :meth:`resolve`. Which files are
    unreadable is known only after one of the two (``resolved``): until then ``len`` counts the listed
    files, and ``labels`` and ``skipped`` decode the split. ``sample_shape`` and ``nbytes`` decode only the
    first readable file.
    """

    def __init__(self, samples: list[tuple[str, int]], size: int | None, where: str, cache: Path | None,
                 tag: str, workers: int | None = None, channels: int = 3):
        self.samples, self.size, self.where, self.cache = samples, size, where, cache
        self.tag, self.workers, self.channels = tag, workers, channels
        self.fingerprint = _fingerprint(tag, size, samples, where)
        self._decoded: Split | None = None
        self._kept: np.ndarray | None = None  # positions in samples of the readable files
        self._first: tuple[int, np.ndarray] | None = None

    @property
    def resolved(self) -> bool:
        """Whether the readable files are known (decoded, or a .beton written or read)."""
        return self._kept is not None

    def first(self) -> tuple[int, np.ndarray]:
        if self._first is None:
            self._first = first_readable(self.samples, self.size, self.where, self.channels)
        return self._first

    def _decode(self) -> Split:
        if self._decoded is None:
            first = self._first[1] if self._first is not None else None
            split, kept = decode_samples(self.samples, self.size, self.where, self.cache, self.tag, self.workers,
                                         self.channels, first)
            if self._kept is not None and not np.array_equal(kept, self._kept):
                raise DataError(f"{self.where}: its readable files changed since its .beton was written; run again")
            self._decoded, self._kept = split, kept
        return self._decoded

    def resolve(self, kept, first_bad: str = "") -> None:
        """Record which files are readable (positions in ``samples``), found by writing or reading a .beton."""
        kept = np.asarray(kept, dtype=np.int64)
        if self._decoded is not None and not np.array_equal(kept, self._kept):
            raise DataError(f"{self.where}: its readable files changed since it was decoded; run again")
        if self._kept is None:
            _warn_skipped(self.where, len(self.samples) - len(kept), first_bad)
        self._kept = kept

    @property
    def images(self) -> torch.Tensor:
        return self._decode().images

    @property
    def labels(self) -> torch.Tensor:
        if self._kept is None:
            self._decode()
        if self._decoded is not None:
            return self._decoded.labels
        return torch.tensor([self.samples[i][1] for i in self._kept], dtype=torch.int64)

    def __len__(self) -> int:
        """The readable files once known (``resolved``), else the listed files: never decodes."""
        return len(self.samples) if self._kept is None else len(self._kept)

    @property
    def skipped(self) -> int:
        if self._kept is None:
            self._decode()
        return len(self.samples) - len(self._kept)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image: the first readable file's (all must match it, or be resized to ``size``)."""
        return tuple(int(d) for d in self.first()[1].shape)

    @property
    def listed(self) -> int:
        """Files listed, readable or not: an upper bound on ``len``, known without decoding."""
        return len(self.samples)

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded split if every listed file is readable: an upper bound, without decoding."""
        return self.listed * int(np.prod(self.sample_shape))

    def image(self, i: int) -> np.ndarray:
        """Sample ``i``'s pixels, uint8 [H, W, C], decoded from its file alone (unless decoded already)."""
        if self._decoded is not None:
            return self._decoded.image(i)
        path = self.samples[int(self._kept[int(i)]) if self._kept is not None else int(i)][0]
        a = decode_image(path, self.size, self.channels)
        if a is None:
            raise DataError(f"{path}: can no longer be decoded; run again to write the dataset afresh")
        return a

    def subset(self, rows: np.ndarray) -> "FileSplit":
        """The samples at positions ``rows`` of this (resolved) split, in that order, as a new file list."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._kept is None:
            self._decode()
        out = FileSplit([self.samples[i] for i in self._kept[rows]], self.size, self.where, self.cache,
                        self.tag, self.workers, self.channels)
        out._kept, out._first = np.arange(len(rows), dtype=np.int64), self._first
        if self._decoded is not None:
            out._decoded = self._decoded.subset(rows)
        return out


def read_imagefolder(path: str, size: int | None = None, cache_dir: str | os.PathLike | bool | None = None,
                     workers: int | None = None) -> Dataset:
    """Both splits as :class:`FileSplit` objects: nothing is decoded here but the first readable file of each
    (for its shape). Unreadable or truncated images are skipped and counted (``dataset.skipped``) with a
    warning once the split is decoded (on every core, cached: see :func:`decode_samples`;
    ``cache_dir=False``: no cache) or written to a .beton."""
    cache = decoded_cache(cache_dir)
    classes, train_samples = list_imagefolder(os.path.join(path, "train"))
    _, test_samples = list_imagefolder(os.path.join(path, "test"), classes)
    tag = f"imagefolder-{os.path.basename(os.path.realpath(path))}"  # every spelling of the folder: one file
    train = FileSplit(train_samples, size, os.path.join(path, "train"), cache, tag + "-train", workers)
    test = FileSplit(test_samples, size, os.path.join(path, "test"), cache, tag + "-test", workers)
    if train.sample_shape != test.sample_shape:
        raise DataError(f"{path}: train images are {train.sample_shape} but test images "
                        f"{test.sample_shape}; pass an image size to resize both")
    name = os.path.basename(os.path.normpath(path))
    return Dataset(name, "imagefolder", train, test, classes, os.path.abspath(path))


def download_cifar(name: str, root: str) -> str:
    """Fetch CIFAR-10/100 with torchvision into ``root``; a clear DataError where there is no network."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        cls(root, train=True, download=True)
        cls(root, train=False, download=True)
    except Exception as e:
        folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        raise DataError(f"could not download {name} ({type(e).__name__}); download it elsewhere and pass "
                        f"--data DIR, with DIR holding {folder} or an ImageFolder tree with train/ and test/") from None
    return root


def load_dataset(name: str | None = None, path: str | None = None, image_size: int | None = None,
                 cache_dir: str | None = None) -> Dataset:
    """Read a dataset by name and/or path (see the module docstring). ``name`` alone: ``digits`` reads
    the embedded data, ``cifar10``/``cifar100`` download through torchvision into ``cache_dir``.
    ``restricted_imagenet`` with the ImageNet folder as ``path``: see ``loaders.restricted_imagenet``."""
    if path is None:
        if name in (None, "digits"):
            return read_digits()
        if name in ("cifar10", "cifar100"):
            cache = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "lure-fast", "data")
            path = download_cifar(name, cache)
        else:
            raise DataError(f"--dataset {name}: needs --data PATH (known without a path: digits, cifar10, cifar100)")
    if name == "restricted_imagenet":
        from .restricted_imagenet import read_restricted_imagenet

        return read_restricted_imagenet(path, image_size or 32)
    layout = detect_layout(path)
    if name == "digits":
        raise DataError("--dataset digits is the embedded data and takes no --data; drop one of them")
    if name in ("cifar10", "cifar100") and layout in ("cifar10", "cifar100") and layout != name:
        raise DataError(f"--dataset {name} but --data {path} holds {layout}; make them agree")
    ds = {"cifar10": read_cifar10, "cifar100": read_cifar100}.get(layout)
    ds = ds(path) if ds else read_imagefolder(path, image_size)
    if name in ("cifar10", "cifar100") and layout == "imagefolder":
        expected = 10 if name == "cifar10" else 100
        if ds.num_classes != expected:
            raise DataError(f"--dataset {name} expects {expected} classes but {path} has {ds.num_classes}")
        ds.name = name
    return ds
