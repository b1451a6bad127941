"""How the ops see their inputs: one tensor, a sequence of tensors, or a flat buffer cut into segments.

Every op works on an ordered list of *parts*. The concatenation of the parts (each flattened in
row-major order) defines the *global flat index* of an entry, which keys the counter-based
generator. When the parts are back-to-back contiguous views of one storage (what
``flatten_parameters`` produces), a single 1-D view covers them all and the Triton path runs one
launch over it instead of one per part.

Otherwise each part is launched on its own. A part that is dense and non-overlapping but not
row-major (channels-last conv weights) is launched over its memory in storage order, without a
copy (``part_views``), when every operand of the op has the same sizes and strides, and, for the
ops that draw from the generator, when the layout is channels-last 4-D (the kernels recover the
row-major index). Only the remaining cases copy (``part_operands`` falls back to
``copied_operands``).
"""

from __future__ import annotations

from contextlib import contextmanager

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

TensorOrSeq = Union[torch.Tensor, Sequence[torch.Tensor]]


def tensor_list(x: TensorOrSeq, what: str = "input") -> list[torch.Tensor]:
    """``[x]`` for a tensor, ``list(x)`` for a sequence of tensors (checked: same device)."""
    if isinstance(x, torch.Tensor):
        return [x]
    parts = list(x)
    for t in parts:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}: expected tensors, got {type(t).__name__}")
    if len({t.device for t in parts}) > 1:
        raise ValueError(f"{what}: all tensors must be on one device")
    return parts


def same_dtype(parts: Sequence[torch.Tensor], what: str) -> torch.dtype:
    dtypes = {t.dtype for t in parts}
    if len(dtypes) != 1:
        raise ValueError(f"{what}: all tensors must share one dtype, got {sorted(map(str, dtypes))}")
    return dtypes.pop()


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


def adjacent_flat(parts: Sequence[torch.Tensor], dense: bool = False) -> Optional[torch.Tensor]:
    """A 1-D view spanning ``parts`` if they are contiguous, of one dtype, and laid back to back
    in one storage in list order; else None. No data is copied.

    ``dense=True`` (order-independent reads only, e.g. histograms): the parts may be any dense,
    non-overlapping layout (channels-last) as long as their memory spans are back to back; the
    view then covers their entries in storage order, not in row-major order."""
    parts = [t for t in parts if t.numel() > 0]
    if not parts:
        return None
    first = parts[0]
    if len(parts) == 1:
        if first.is_contiguous():
            return first.view(-1)
        return dense_flat(first) if dense else None
    storage = first.untyped_storage().data_ptr()
    size = first.element_size()
    expected = first.data_ptr()
    for t in parts:
        if (
            not (dense_flat(t) is not None if dense else t.is_contiguous())
            or t.dtype != first.dtype
            or t.untyped_storage().data_ptr() != storage
            or t.data_ptr() != expected
        ):
            return None
        expected += t.numel() * size
    total = sum(t.numel() for t in parts)
    return torch.as_strided(first.detach(), (total,), (1,), first.storage_offset())


def check_segments(segments: Sequence[tuple], numel: int) -> tuple[list[tuple[int, int]], Optional[list]]:
    """A segment table: entries ``(offset, length)``, or ``(offset, length, bound)`` (``Segment``) in
    every entry, must tile ``[0, numel)`` in order, so buffer offset == concatenation offset.
    Returns the ``(offset, length)`` pairs and the bounds column (None when the table has none)."""
    out, bounds, expected = [], [], 0
    widths = {len(seg) for seg in segments}
    if not widths <= {2, 3} or len(widths) > 1:
        raise ValueError("segments: every entry is (offset, length) or every entry (offset, length, bound)")
    for seg in segments:
        offset, length = int(seg[0]), int(seg[1])
        if offset != expected or length < 0:
            raise ValueError(f"segments must tile the flat buffer in order: ({offset}, {length}) after {expected}")
        out.append((offset, length))
        bounds.append(seg[2] if len(seg) == 3 else None)
        expected += length
    if expected != numel:
        raise ValueError(f"segments cover {expected} entries but the flat buffer has {numel}")
    return out, (bounds if widths == {3} else None)


@dataclass
class Parts:
    """An ordered list of tensors plus, when one exists, a contiguous 1-D view over all of them,
    and the reinit bounds a segment table recorded for them (None when it recorded none)."""

    views: list[torch.Tensor]
    flat: Optional[torch.Tensor]
    bounds: Optional[list] = None

    @property
    def numels(self) -> list[int]:
        return [t.numel() for t in self.views]

    @property
    def offsets(self) -> list[int]:
        offsets, acc = [], 0
        for t in self.views:
            offsets.append(acc)
            acc += t.numel()
        return offsets

    @property
    def numel(self) -> int:
        return sum(self.numels)


def as_parts(x, segments: Optional[Sequence[tuple]] = None, what: str = "params") -> Parts:
    """Normalise a parameter-like input.

    Accepted: an object with ``.data`` (1-D) and ``.segments`` (``FlatParameters``: checked to be
    still attached, see ``check_attached``); a tensor with an optional segment table (a 1-D
    contiguous buffer when segments are given; otherwise the whole tensor is one part); a sequence
    of tensors (each one part). A table's bounds column, if any, becomes ``Parts.bounds``.
    """
    if not isinstance(x, torch.Tensor) and hasattr(x, "segments") and hasattr(x, "data"):
        check_attached = getattr(x, "check_attached", None)
        if check_attached is not None:
            check_attached()  # a stale buffer would be written while the model uses other storage
        segments = x.segments if segments is None else segments
        x = x.data
    if isinstance(x, torch.Tensor):
        if segments is None:
            return Parts([x], x.view(-1) if x.is_contiguous() else None)
        if x.dim() != 1 or not x.is_contiguous():
            raise ValueError(f"{what}: a segment table needs a contiguous 1-D buffer, got shape {tuple(x.shape)}")
        segs, bounds = check_segments(segments, x.numel())
        return Parts([x[o : o + n] for o, n in segs], x, bounds)
    if segments is not None:
        raise ValueError(f"{what}: a segment table goes with a flat tensor, not a sequence")
    views = tensor_list(x, what)
    return Parts(views, adjacent_flat(views))


def like_parts(x: TensorOrSeq, ref: Parts, what: str) -> Parts:
    """Normalise a companion input (saliency, accumulator) to the part structure of ``ref``:
    either one tensor holding the whole concatenation, or one tensor per part with equal numel,
    on the same device."""
    device = ref.views[0].device if ref.views else None
    for t in tensor_list(x, what):
        if device is not None and t.device != device:
            raise ValueError(f"{what}: on {t.device}, the parameters are on {device}")
    if isinstance(x, torch.Tensor):
        if x.numel() != ref.numel:
            raise ValueError(f"{what}: has {x.numel()} entries, expected {ref.numel}")
        if len(ref.views) == 1 and x.shape == ref.views[0].shape and not x.is_contiguous():
            return Parts([x], None)  # the part itself, in its own layout (x.reshape(-1) would copy it)
        flat = x.reshape(-1)
        views, acc = [], 0
        for n in ref.numels:
            views.append(flat[acc : acc + n])
            acc += n
        return Parts(views, flat if x.is_contiguous() else None)
    views = tensor_list(x, what)
    if len(views) != len(ref.views):
        raise ValueError(f"{what}: {len(views)} tensors for {len(ref.views)} parts")
    for v, n in zip(views, ref.numels):
        if v.numel() != n:
            raise ValueError(f"{what}: part of {v.numel()} entries where {n} were expected")
    return Parts(views, adjacent_flat(views))


def check_bounds(bounds, nparts: int) -> list[Optional[float]]:
    """``bounds`` as a list of ``nparts`` floats >= 0 or None (ValueError otherwise)."""
    bounds = list(bounds)
    if len(bounds) != nparts:
        raise ValueError(f"bounds: {len(bounds)} entries for {nparts} parts")
    out = []
    for b in bounds:
        if b is not None:
            b = float(b)
            if not b >= 0.0:
                raise ValueError(f"bounds must be >= 0 or None, got {b}")
        out.append(b)
    return out


def part_bounds(bounds, parts: Parts) -> list[Optional[float]]:
    """The ``bounds`` argument of an op, checked; when None, the bounds its segment table records
    (ValueError when there are none: the op would silently reset or perturb by a guessed bound)."""
    if bounds is None:
        if parts.bounds is None or all(b is None for b in parts.bounds):
            raise ValueError(
                "bounds: none given and the segment table records no reinit bound; pass bounds=, or record "
                "them with flatten_parameters(..., bounds=...) or FlatParameters.bounds = [...]"
            )
        bounds = parts.bounds
    return check_bounds(bounds, len(parts.views))
