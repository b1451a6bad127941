"""Per-channel pixel statistics from exact integer sums, so every path to the same pixels (a tensor in
memory, a ``.beton`` file) gives bit-identical numbers."""
from __future__ import annotations

import math

import numpy as np
import torch

CHUNK = 1 << 24  # bytes of pixels counted at a time: bounds the temporary copies (8x, as int64)


def pixel_histogram(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """int64 [C, 256]: how often each uint8 value occurs in each channel of ``images`` (uint8 [..., C])."""
    a = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    c = a.shape[-1]
    flat = a.reshape(-1, c)
    hist = np.zeros((c, 256), dtype=np.int64)
    step = max(1, CHUNK // c)
    for i in range(0, len(flat), step):
        part = flat[i:i + step]
        for ch in range(c):
            hist[ch] += np.bincount(part[:, ch], minlength=256)
    return hist


def histogram_stats(hist: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and unbiased standard deviation of the pixels in [0, 1] (value / 255) counted in
    ``hist`` (int64 [C, 256]). The sums are exact Python integers; only the final quotient and square
    root round, once, in float64."""
    values = range(256)
    means, stds = [], []
    for counts in hist.tolist():
        n = sum(counts)
        s = sum(v * k for v, k in zip(values, counts))
        ss = sum(v * v * k for v, k in zip(values, counts))
        means.append(s / (255 * n))
        stds.append(math.sqrt((n * ss - s * s) / (n * (n - 1))) / 255 if n > 1 else 0.0)
    return tuple(means), tuple(stds)


def channel_stats(images: np.ndarray | torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of uint8 ``images`` [..., C] scaled to [0, 1]: see :func:`histogram_stats`."""
    return histogram_stats(pixel_histogram(images))


def beton_histogram(path, channels: int = 3) -> np.ndarray:
    """int64 [channels, 256]: :func:`pixel_histogram` of the first ``channels`` channels of every image in the
    ``.beton`` at ``path`` (JPEG samples decoded with OpenCV), read in blocks of about :data:`CHUNK` bytes."""
    from .read import pixel_blocks

    hist = np.zeros((channels, 256), dtype=np.int64)
    for pixels in pixel_blocks(path, channels, CHUNK):
        hist += pixel_histogram(pixels)
    return hist
