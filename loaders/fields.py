"""What every ``.beton`` this package writes holds, and the files kept beside it.

Three fields per sample, in this order:

  ``image``  ``RGBImageField``: ``'raw'`` (the exact uint8 pixels) or ``'jpg'`` (JPEG at ``jpeg_quality``);
             one-channel images are stored as RGB and the loader hands back one channel.
  ``label``  ``IntField``: the sample's label.
  ``index``  ``IntField``: the sample's position in the split, so a loader can prove which samples it served.

Beside ``<file>``: ``<file>.sha256`` (``sha256sum`` format: the SHA-256 of all its bytes),
``<file>.files.json`` (a file-backed split's unreadable files, left out of it) and ``<file>.stats.json``
(its per-channel pixel mean and std). Each is written under a temporary name (:func:`temporary`) and
renamed into place.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np

from .errors import DataError

STORAGES = ("raw", "jpg")
FFCV_MODE = {"jpg": 0, "raw": 1}  # RGBImageField's per-sample 'mode' byte
FIELDS = ("image", "label", "index")
WRITER_VERSION = 1  # bump when the fields or their encoding change: old cache files are then ignored
CHECKSUM_SUFFIX = ".sha256"
FILES_SUFFIX = ".files.json"  # a file-backed split's unreadable files
STATS_SUFFIX = ".stats.json"  # per-channel pixel mean and std


def check_storage(storage: str) -> None:
    """One :class:`DataError` line unless ``storage`` is one of :data:`STORAGES`."""
    if storage not in STORAGES:
        raise DataError(f"beton storage '{storage}': unknown; choose one of {', '.join(STORAGES)}")


def ffcv_fields(storage: str, jpeg_quality: int) -> dict:
    """FFCV's field objects for a file of ``storage``, in :data:`FIELDS` order."""
    from ffcv.fields import IntField, RGBImageField

    return {"image": RGBImageField(write_mode=storage, jpeg_quality=jpeg_quality),
            "label": IntField(), "index": IntField()}


def sample(image: np.ndarray, label: int, i: int) -> tuple[np.ndarray, int, int]:
    """One sample as FFCV's writer takes it: (RGB uint8 [H, W, 3], label, index)."""
    if image.shape[2] == 1:  # RGBImageField stores three channels
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image), label, int(i)


def sidecar(path: str | os.PathLike, suffix: str) -> Path:
    """The file beside ``path`` with ``suffix`` (one of the ``*_SUFFIX`` names) appended."""
    return Path(f"{path}{suffix}")


def temporary(path: str | os.PathLike) -> Path:
    """``<path>.<host>.<pid>.tmp``: this process's private name for a file on its way to ``path``."""
    return Path(f"{path}.{socket.gethostname()}.{os.getpid()}.tmp")
