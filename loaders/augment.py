"""Batched augmentation on tensors, on whatever device the batch is on (GPU-side on CUDA).

The random draws come from a CPU ``torch.Generator`` the caller seeds, so the same seed gives the
same flips and crops on a CPU and on a GPU, and a resumed run sees the same augmentations.
"""
from __future__ import annotations

import torch


def crop_padding(height: int) -> int:
    """The paper's pad-4 crop at 32x32, scaled with the image (1 pixel at 8x8, 8 at 64x64)."""
    return max(1, height // 8)


def flip_crop(x: torch.Tensor, generator: torch.Generator, pad: int | None = None, flip: bool = True) -> torch.Tensor:
    """Random horizontal flip and random ``pad``-pixel zero-padded crop of a batch.

    x: float or uint8 ``[B, C, H, W]``; returns a new tensor of the same shape, dtype and device.
    Equivalent per image to torchvision's ``RandomCrop(H, padding=pad)`` then ``RandomHorizontalFlip()``.
    ``pad=None`` uses :func:`crop_padding` of the height.
    """
    b, _, h, w = x.shape
    pad = crop_padding(h) if pad is None else pad
    if flip:
        flips = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(3), x)
    if pad:
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # [B, H]
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # [B, W]
        bi = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return x
