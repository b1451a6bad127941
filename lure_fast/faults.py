"""Fault injection for the crash-and-resume tests: with ``LURE_FAST_FAULT=point:a:b...`` set, the
process kills itself with SIGKILL when it reaches that point (e.g. ``batch:2:1:3`` = mega-batch 2,
epoch 1, batch 3; ``unlearn:1``; ``epoch_end:1:0``; ``checkpoint_write:3`` = the third checkpoint,
half written). Unset, ``fault`` is a dictionary-free string comparison away from free."""
from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("LURE_FAST_FAULT") or None


def fault(point: str, *where: int) -> None:
    if _TARGET is not None and _TARGET == ":".join([point, *map(str, where)]):
        os.kill(os.getpid(), signal.SIGKILL)
