"""Batched augmentation on tensors, on whatever device the batch is on (GPU-side on CUDA).

The random draws come from a CPU ``torch.Generator`` the caller seeds, so the same seed gives the
same flips and crops on a CPU and on a GPU, and a resumed run sees the same augmentations. A loader
draws a whole epoch's parameters at once (:func:`draw_flip_crop`) and moves them to the device in one
copy, so no batch waits for the host.
"""
from __future__ import annotations

import torch


def crop_padding(height: int) -> int:
    """The paper's pad-4 crop at 32x32, scaled with the image (1 pixel at 8x8, 8 at 64x64)."""
    return max(1, height // 8)


def draw_flip_crop(n: int, generator: torch.Generator, pad: int, flip: bool = True) -> torch.Tensor:
    """Parameters for ``n`` images: int64 ``[n, 3]`` of (flip 0/1, dy, dx) with dy, dx in [0, 2*pad]."""
    flips = (torch.rand(n, generator=generator) < 0.5).long() if flip else torch.zeros(n, dtype=torch.long)
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    return torch.cat([flips[:, None], shifts], 1)


def apply_flip_crop(x: torch.Tensor, params: torch.Tensor, pad: int) -> torch.Tensor:
    """Flip and crop a batch ``x`` ``[B, C, H, W]`` (any dtype) with ``params`` ``[B, 3]`` from
    :func:`draw_flip_crop`, on ``x``'s device; returns a new tensor of the same shape and dtype."""
    b, _, h, w = x.shape
    params = params.to(x.device, non_blocking=True)
    x = torch.where(params[:, 0].bool()[:, None, None, None], x.flip(3), x)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = params[:, 1:2] + torch.arange(h, device=x.device)[None, :]  # [B, H]
    cols = params[:, 2:3] + torch.arange(w, device=x.device)[None, :]  # [B, W]
    bi = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def flip_crop(x: torch.Tensor, generator: torch.Generator, pad: int | None = None, flip: bool = True) -> torch.Tensor:
    """Random horizontal flip and random ``pad``-pixel zero-padded crop of a batch ``[B, C, H, W]``.

    Equivalent per image to torchvision's ``RandomCrop(H, padding=pad)`` then ``RandomHorizontalFlip()``.
    ``pad=None`` uses :func:`crop_padding` of the height.
    """
    pad = crop_padding(x.shape[2]) if pad is None else pad
    return apply_flip_crop(x, draw_flip_crop(x.shape[0], generator, pad, flip), pad)
