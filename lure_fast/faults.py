"""Named points of a run where a test may step in; production code only marks them.

``point(name, *where)`` is one comparison with None unless a hook is set. The crash-and-resume tests
set one through the environment: with ``LURE_FAST_FAULT=name:a:b...`` the process kills itself with
SIGKILL at that point (``batch:2:1:3`` = mega-batch 2, epoch 1, batch 3; ``epoch_end:1:0``;
``unlearn:1``; ``checkpoint_write:3`` = the third checkpoint, half written). The ``epoch`` point
(mega-batch, epoch) tells the hook where a ``batch`` point stands, so the step needs no position.
``run:n`` marks the n-th run this process starts (a ``compare`` or ``reproduce`` runs several), and
targets joined by ``+`` are met in order: ``run:2+epoch_end:1:0`` kills inside the second run only.
"""
from __future__ import annotations

import os
import signal
from typing import Callable

HOOK: Callable[[str, tuple], None] | None = None


def point(name: str, *where: int) -> None:
    if HOOK is not None:
        HOOK(name, where)


RUNS = 0  # runs started by this process


def run_started() -> None:
    global RUNS
    RUNS += 1
    point("run", RUNS)


class KillAt:
    """A hook that SIGKILLs this process when it has reached every one of ``target``'s points in order
    (``name:a:b...``, joined by ``+``)."""

    def __init__(self, target: str):
        self.targets, self.epoch = target.split("+"), ()

    def __call__(self, name: str, where: tuple) -> None:
        if name == "epoch":
            self.epoch = where
        elif name == "batch":
            where = (*self.epoch, *where)
        if self.targets[0] == ":".join([name, *map(str, where)]):
            self.targets.pop(0)
            if not self.targets:
                os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get("LURE_FAST_FAULT"):
    HOOK = KillAt(os.environ["LURE_FAST_FAULT"])
