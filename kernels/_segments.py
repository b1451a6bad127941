"""Per-block tables that let one launch cover a whole flat buffer made of segments with
different bounds: program ``p`` handles entries ``[start_p, end_p)``, all inside one segment,
with that segment's bound. Built once per (segments, bounds, device) and cached."""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import torch

from ._dispatch import cdiv

_CACHE: "OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()
_CACHE_SIZE = 32


def block_table(
    numels: Sequence[int], bounds: Sequence[Optional[float]], block: int, device: torch.device, none_bound
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ranges, bound)``: int64 ``[nblocks, 2]`` of ``(start, end)`` flat offsets and float32
    ``[nblocks]`` bounds, on ``device``. Segments whose bound is None get ``none_bound``, or no
    blocks at all when ``none_bound`` is None (they are never touched)."""
    key = (tuple(numels), tuple(bounds), block, str(device), none_bound)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    ranges, values, offset = [], [], 0
    for n, b in zip(numels, bounds):
        if b is None:
            b = none_bound
        if b is not None:
            end = offset + n
            for start in range(offset, end, block):
                ranges.append((start, min(start + block, end)))
                values.append(b)
        offset += n
    table = (
        torch.tensor(ranges, dtype=torch.int64).reshape(-1, 2).to(device),
        torch.tensor(values, dtype=torch.float32).to(device),
    )
    _CACHE[key] = table
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return table


def nblocks(numels: Sequence[int], block: int) -> int:
    return sum(cdiv(n, block) for n in numels)
