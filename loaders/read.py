"""Reading a ``.beton`` back outside FFCV's loader: its images decoded on the host (OpenCV for JPEG samples),
for inspection, tests and statistics, not for training (the ``ffcv`` backend reads files for training)."""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch

from .check import check_beton
from .fields import FFCV_MODE
from .sources import Split


def read_beton(path: str | os.PathLike, channels: int = 3) -> Split:
    """Decode a whole file this package wrote back into a :class:`Split` (images uint8 [N, H, W, channels],
    labels int64 [N]), after :func:`~loaders.check.check_beton`."""
    from ffcv.reader import Reader

    check_beton(path)
    reader = Reader(str(path))
    meta = reader.metadata
    starts, sizes = _extents(reader)
    images = []
    with open(path, "rb") as f:
        for i, m in enumerate(meta["f0"]):
            f.seek(int(starts[i]))
            images.append(_decode(np.frombuffer(f.read(int(sizes[i])), dtype=np.uint8), m)[..., :channels])
    labels = torch.from_numpy(meta["f1"].astype(np.int64))
    return Split(torch.from_numpy(np.ascontiguousarray(np.stack(images))), labels)


def pixel_blocks(path: str | os.PathLike, channels: int, block_bytes: int) -> Iterator[np.ndarray]:
    """The pixels of every image in ``path`` as uint8 [K, channels] arrays, read in file order in blocks of
    about ``block_bytes`` bytes of the file (or one sample), so memory stays bounded for a file larger than RAM."""
    from ffcv.reader import Reader

    reader = Reader(str(path))
    meta = reader.metadata["f0"]
    starts, sizes = _extents(reader)
    order = np.argsort(starts, kind="stable")
    with open(path, "rb") as f:
        i = 0
        while i < len(order):
            j = i + 1  # samples i..j-1 span at most block_bytes (or are one sample)
            while j < len(order) and starts[order[j]] + sizes[order[j]] - starts[order[i]] <= block_bytes:
                j += 1
            base = int(starts[order[i]])
            f.seek(base)
            block = np.frombuffer(f.read(int(starts[order[j - 1]] + sizes[order[j - 1]]) - base), dtype=np.uint8)
            yield np.concatenate([_decode(block[starts[k] - base:starts[k] - base + sizes[k]], meta[k])
                                  .reshape(-1, 3)[:, :channels] for k in order[i:j]])
            i = j


def _extents(reader) -> tuple[np.ndarray, np.ndarray]:
    """int64 [N] byte offset and size of every sample's image data in the file of FFCV's ``reader``, by sample index."""
    sizes = np.zeros(len(reader.metadata), dtype=np.int64)
    sizes[reader.alloc_table["sample_id"].astype(np.int64)] = reader.alloc_table["size"]
    return reader.metadata["f0"]["data_ptr"].astype(np.int64), sizes


def _decode(blob: np.ndarray, meta) -> np.ndarray:
    """One sample's image field (``blob``, its metadata row ``meta``) as RGB uint8 [H, W, 3]."""
    if meta["mode"] == FFCV_MODE["raw"]:
        return blob.reshape(int(meta["height"]), int(meta["width"]), 3)
    import cv2

    return cv2.imdecode(blob, cv2.IMREAD_COLOR)[..., ::-1]
