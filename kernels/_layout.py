"""How the ops see their tensors: a list, and the memory layout of each tensor in it.

Every op takes a list of tensors (a single tensor counts as a list of one). The concatenation of
the tensors, each flattened in row-major order, defines an entry's *global index*, which keys the
counter-based generator, so results depend neither on how the entries are split into tensors nor
on their layouts.

The kernels walk 1-D memory, one launch per tensor. A tensor is launched over in place when it is
contiguous, or when it is dense in another layout (channels-last conv weights, as the trainer keeps
them on CUDA) and every operand of the launch shares its sizes and strides; kernels that draw from
the generator further need that layout to be channels-last 4-D, whose ``(C, H, W)`` let them recover
the row-major index. Anything else runs on row-major copies, the written operand copied back.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional, Sequence

import torch


def as_tensors(x, what: str) -> list[torch.Tensor]:
    """``list(x)`` for an iterable of tensors on one device, ``[x]`` for a single tensor."""
    parts = [x] if isinstance(x, torch.Tensor) else list(x)
    for t in parts:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}: expected tensors, got {type(t).__name__}")
    if len({t.device for t in parts}) > 1:
        raise ValueError(f"{what}: all tensors must be on one device")
    return parts


def like(x, parts: Sequence[torch.Tensor], what: str) -> list[torch.Tensor]:
    """A companion list of ``parts`` (accumulators, saliency, outputs): one tensor per part, with
    its number of entries (any shape and layout), on its device."""
    others = as_tensors(x, what)
    if len(others) != len(parts):
        raise ValueError(f"{what}: {len(others)} tensors for {len(parts)} parameters")
    for o, p in zip(others, parts):
        if o.numel() != p.numel() or o.device != p.device:
            raise ValueError(f"{what}: {o.numel()} entries on {o.device} where the parameter has {p.numel()} on {p.device}")
    return others


def offsets(parts: Sequence[torch.Tensor]) -> list[int]:
    """Global index of each part's first entry."""
    out, acc = [], 0
    for t in parts:
        out.append(acc)
        acc += t.numel()
    return out


def same_dtype(parts: Sequence[torch.Tensor], what: str) -> torch.dtype:
    dtypes = {t.dtype for t in parts}
    if len(dtypes) != 1:
        raise ValueError(f"{what}: all tensors must share one dtype, got {sorted(map(str, dtypes))}")
    return dtypes.pop()


def check_bounds(bounds, n: int) -> list[Optional[float]]:
    """``bounds`` as a list of ``n`` floats >= 0 or None (ValueError otherwise)."""
    if bounds is None:
        raise TypeError("bounds: required, one float >= 0 or None per parameter")
    bounds = list(bounds)
    if len(bounds) != n:
        raise ValueError(f"bounds: {len(bounds)} entries for {n} parameters")
    out = []
    for b in bounds:
        if b is not None:
            b = float(b)
            if not b >= 0.0:
                raise ValueError(f"bounds must be >= 0 or None, got {b}")
        out.append(b)
    return out


def dense_flat(t: torch.Tensor) -> Optional[torch.Tensor]:
    """A 1-D view of ``t``'s memory in storage order if ``t`` is dense and non-overlapping (a
    permutation of a contiguous layout, e.g. channels-last), else None. No data is copied.
    For a contiguous ``t`` this is ``t.view(-1)`` (storage order == row-major order)."""
    if t.is_contiguous():
        return t.view(-1)
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return None
        expected *= size
    return torch.as_strided(t.detach(), (t.numel(),), (1,), t.storage_offset())


def read_flat(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a 1-D tensor for an order-independent read (histograms, counts): its memory in
    storage order when ``t`` is dense (no copy), else a contiguous copy."""
    flat = dense_flat(t)
    return flat if flat is not None else t.contiguous().view(-1)


def adjacent_flat(parts: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
    """For order-independent reads: one 1-D view over all of ``parts`` when they are dense, of one
    dtype, and laid back to back in one storage in list order (the trainer's saliency, one buffer
    viewed per parameter); else None. The view covers their entries in storage order."""
    parts = [t for t in parts if t.numel() > 0]
    if not parts:
        return None
    first = parts[0]
    storage = first.untyped_storage().data_ptr()
    expected = first.data_ptr()
    for t in parts:
        if (
            dense_flat(t) is None
            or t.dtype != first.dtype
            or t.untyped_storage().data_ptr() != storage
            or t.data_ptr() != expected
        ):
            return None
        expected += t.numel() * t.element_size()
    return torch.as_strided(first.detach(), (sum(t.numel() for t in parts),), (1,), first.storage_offset())


def channels_last_chw(t: torch.Tensor) -> Optional[tuple[int, int, int]]:
    """``(C, H, W)`` when ``t`` is 4-D, channels-last and not (row-major) contiguous, else None."""
    if t.dim() != 4 or t.is_contiguous() or not t.is_contiguous(memory_format=torch.channels_last):
        return None
    return int(t.shape[1]), int(t.shape[2]), int(t.shape[3])


ROW_MAJOR = (1, 1, 1)  # the (C, H, W) kernel arguments when storage order is row-major order


def part_views(operands: Sequence[torch.Tensor], indexed: bool):
    """How to launch an element-wise kernel over one part in place, without copies.

    ``operands``: the tensors of the part the kernel reads or writes (``operands[0]`` is the one
    whose layout defines the entries' indices). ``indexed``: the kernel needs each entry's row-major
    index (it draws from the generator).

    Returns ``(views, chw, channels_last)``: 1-D views of the operands and the kernel's layout
    arguments, or None when a copy is needed. All operands contiguous: their row-major views
    (``channels_last`` False). Otherwise all operands must share sizes and strides and be dense
    (then storage position ``i`` is the same entry in every operand); an indexed op further needs
    the channels-last 4-D layout, whose ``(C, H, W)`` let the kernel recover the row-major index.
    """
    if all(t.is_contiguous() for t in operands):
        return [t.view(-1) for t in operands], ROW_MAJOR, False
    first = operands[0]
    if any(t.shape != first.shape or t.stride() != first.stride() for t in operands[1:]):
        return None
    chw = channels_last_chw(first)
    if indexed and chw is None:
        return None
    flat = dense_flat(first)
    if flat is None:
        return None
    views = [flat] + [dense_flat(t) for t in operands[1:]]
    return views, (chw or ROW_MAJOR), chw is not None


@contextmanager
def part_operands(operands: Sequence[torch.Tensor], indexed: bool, read_first: bool = True):
    """1-D views of one part's ``operands`` for an element-wise kernel that writes ``operands[0]``,
    and the kernel's layout arguments: yields ``(views, chw, channels_last)``.

    In place, without copies, wherever ``part_views`` allows; otherwise the row-major stand-ins of
    ``copied_operands``, with ``ROW_MAJOR`` and ``channels_last`` False."""
    plan = part_views(operands, indexed)
    if plan is not None:
        yield plan
        return
    with copied_operands(operands, read_first) as views:
        yield views, ROW_MAJOR, False


@contextmanager
def copied_operands(operands: Sequence[torch.Tensor], read_first: bool = True):
    """Contiguous 1-D stand-ins for ``operands``, ``operands[0]`` being the one a kernel writes: a
    contiguous operand is its own view, another a contiguous copy; a copy of ``operands[0]`` (left
    unfilled if ``read_first`` is False, as for pure outputs) is copied back into it on exit."""
    views = []
    for i, t in enumerate(operands):
        if t.is_contiguous():
            views.append(t.view(-1))
        elif i == 0 and not read_first:
            views.append(torch.empty_like(t, memory_format=torch.contiguous_format).view(-1))
        else:
            views.append(t.contiguous().view(-1))
    yield views
    first = operands[0]
    if views[0].data_ptr() != first.data_ptr():
        first.copy_(views[0].view(first.shape))
