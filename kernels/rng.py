"""The counter-based generator, exposed so the trainer draws the same numbers as the kernels.

``u(seed, i)`` depends only on the seed and the global flat index ``i``; the definition (and the
PyTorch reference) is in ``reference.py``.
"""

from __future__ import annotations

import torch

from ._device import counter_uniform as _counter_uniform_device, round_to, seed_key
from ._dispatch import BLOCK, cdiv, jit, launch_options, tl, use_triton
from ._layout import copied_operands
from .reference import counter_uniform_reference, seed_keys, uniform_reference_


def signed32(k: int) -> int:
    """A uint32 key as the int32 with the same bits (always passed to Triton as an i32 scalar)."""
    return k - (1 << 32) if k >= (1 << 31) else k


def kernel_keys(seed: int) -> tuple[int, int]:
    k0, k1 = seed_keys(seed)
    return signed32(k0), signed32(k1)


@jit(do_not_specialize=["offset", "k0", "k1"])
def _uniform_kernel(out_ptr, n, offset, k0, k1, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n
    u = _counter_uniform_device(offs + offset, seed_key(k0), seed_key(k1))
    tl.store(out_ptr + offs, round_to(u, out_ptr.dtype.element_ty), mask=inb)


@torch.no_grad()
def uniform_(x: torch.Tensor, seed: int, offset: int = 0) -> torch.Tensor:
    """Fill ``x`` in place with the generator's ``u`` for global indices ``offset .. offset + x.numel() - 1``
    (row-major order). ``x``: any float tensor on any device; exact in float32 (values in [0, 1));
    other dtypes get the float32 value rounded to nearest, which may reach 1.0. Returns ``x``.

    Example::

        >>> w = uniform_(torch.empty(64, 3, 3, 3), seed=0, offset=1000)  # the u unlearn_ draws there
    """
    if offset < 0:
        raise ValueError("offset must be >= 0")
    if not use_triton(x):
        return uniform_reference_(x, seed, offset)
    if x.numel() == 0:
        return x
    k0, k1 = kernel_keys(seed)
    n = x.numel()
    with copied_operands([x], read_first=False) as (target,):  # the kernel's index is row-major: x's own, or a copy's
        _uniform_kernel[(cdiv(n, BLOCK),)](target, n, offset, k0, k1, BLOCK=BLOCK, **launch_options())
    return x


def counter_uniform(n: int, seed: int, offset: int = 0, device=None) -> torch.Tensor:
    """New float32 tensor of shape ``[n]`` on ``device``: ``u`` for global indices ``offset .. offset + n - 1``.

    Example::

        >>> u = counter_uniform(10, seed=0)  # == uniform_(torch.empty(10), seed=0)
    """
    if n < 0 or offset < 0:
        raise ValueError("n and offset must be >= 0")
    out = torch.empty(n, dtype=torch.float32, device=device)
    if not use_triton(out):
        return counter_uniform_reference(n, seed, offset, out.device)
    return uniform_(out, seed, offset)
