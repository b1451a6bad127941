"""Free space, checked before a write that can fill a disk (a ``.beton``, a decoded-image cache, a
checkpoint): one line saying how much the write needs and how much is free, before anything is written."""
from __future__ import annotations

import os
import shutil

from .errors import DataError


def human(n: float) -> str:
    """Bytes as text: ``512 B``, ``3.1 MiB``, ``1.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes free to this user on the file system that holds ``folder`` (or its nearest existing parent:
    the folder may not exist yet); None where that cannot be told."""
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def require_space(folder: str | os.PathLike, need: int, what: str, fix: str = "free some space",
                  error: type[Exception] = DataError) -> None:
    """Raise ``error`` (one line) unless ``folder``'s file system has ``need`` bytes free for ``what``.
    Where the free space cannot be told, the write goes ahead and reports its own error."""
    free = free_bytes(folder)
    if free is not None and free < need:
        raise error(f"{what}: needs {human(need)} in {folder} but {human(free)} is free there; {fix}")
