"""When the Triton kernels run, and how they are declared.

The Triton path is taken for CUDA tensors, and for CPU tensors when the environment variable
``TRITON_INTERPRET`` is set (Triton's interpreter: how the tests exercise the kernels on machines
without a GPU). Every other call goes to the exact PyTorch reference in ``reference.py``.
The choice is made at call time, so the variable may be set after this package was imported.

Triton itself fixes interpreted-or-compiled for every ``@triton.jit`` function when it is defined,
its own library (``tl.sum``, ``tl.zeros``, ...) included. Our kernels are declared with ``jit`` below,
whose launches follow the variable at launch time instead; nothing in Triton is changed for other
code (see ``_interpreting``).
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import torch

try:
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction
except ImportError:  # Triton ships for Linux only: elsewhere the references serve every call
    triton = None
    tl = None

# Triton fixes interpreted-or-compiled for its own library functions when it is imported.
_IMPORTED_INTERPRETED = triton is not None and not isinstance(tl.zeros, JITFunction)

_TRUE = {"1", "true", "yes", "on"}

# Launch shape of the element-wise kernels: 16 fp32 per thread, four 16-byte loads each.
BLOCK = 4096
NUM_WARPS = 8


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET`` asks for Triton's CPU interpreter (read at every call)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE


def _launch_interpreted() -> bool:
    # Set at Triton's import, the variable made Triton's own library interpreted-only: from then
    # on nothing can be compiled in this process, so CUDA tensors go through the interpreter too.
    return _IMPORTED_INTERPRETED or interpreting()


def compiled_available() -> bool:
    """False when Triton was imported under ``TRITON_INTERPRET``: no kernel can be compiled."""
    return triton is not None and not _IMPORTED_INTERPRETED


def use_triton(t: torch.Tensor) -> bool:
    """Whether an op on tensor ``t`` takes the Triton path.

    True for CUDA tensors (when Triton is installed) and for CPU tensors while
    ``TRITON_INTERPRET=1``; False otherwise, in which case the PyTorch reference runs.
    CUDA tensors run compiled kernels, or the interpreter while it is asked for (or was, when
    Triton was imported: see ``compiled_available``).
    """
    if triton is None:
        return False
    if t.device.type == "cuda":
        return True
    return t.device.type == "cpu" and interpreting()


if triton is not None:
    _LOCK = threading.RLock()
    _MISSING = object()
    # while one of our interpreted launches runs: its thread, the nesting depth, what __call__ was
    _STATE = {"owner": None, "depth": 0, "saved": _MISSING, "call": None}
    _DEVICE_FUNCTIONS: dict = {}  # python function -> its InterpretedFunction

    def _interpreted_call(self, *args, **kwargs):
        # A JITFunction called inside one of our interpreted launches (a device function of ours,
        # or of triton.language compiled at Triton's import): interpret it. On another thread,
        # Triton's own behaviour.
        if _STATE["owner"] != threading.get_ident():
            return _STATE["call"](self, *args, **kwargs)
        interpreted = _DEVICE_FUNCTIONS.get(self.fn)
        if interpreted is None:
            interpreted = _DEVICE_FUNCTIONS[self.fn] = InterpretedFunction(self.fn)
        return interpreted(*args, **kwargs)

    @contextmanager
    def _interpreting():
        """For the length of one interpreted launch of our kernels, on this thread, calls of
        ``JITFunction``s (which outside a kernel just raise) interpret the function instead.

        Triton's interpreter meets such calls whenever ``TRITON_INTERPRET`` was set after Triton's
        import (our own device functions are ``JITFunction``s in any case). ``JITFunction.__call__``
        is swapped only while the launch runs and restored after it, as Triton's interpreter does
        with ``triton.language`` during its own launches; other threads see Triton's behaviour.
        """
        with _LOCK:
            if _STATE["depth"] == 0:
                _STATE.update(owner=threading.get_ident(), saved=JITFunction.__dict__.get("__call__", _MISSING),
                              call=JITFunction.__call__)
                JITFunction.__call__ = _interpreted_call
            _STATE["depth"] += 1
            try:
                yield
            finally:
                _STATE["depth"] -= 1
                if _STATE["depth"] == 0:
                    if _STATE["saved"] is _MISSING:
                        del JITFunction.__call__
                    else:
                        JITFunction.__call__ = _STATE["saved"]
                    _STATE.update(owner=None, saved=_MISSING)

    class _Kernel(JITFunction):
        """A ``triton.jit`` kernel that runs under Triton's interpreter when ``TRITON_INTERPRET``
        is set at launch time rather than at import time."""

        def __init__(self, fn, **kwargs):
            super().__init__(fn, **kwargs)
            self._interpreted = InterpretedFunction(fn)

        def run(self, *args, grid, warmup, **kwargs):
            if not _launch_interpreted():
                return super().run(*args, grid=grid, warmup=warmup, **kwargs)
            with _interpreting():
                return self._interpreted.run(*args, grid=grid, warmup=warmup, **kwargs)


def jit(fn=None, **kwargs):
    """``triton.jit`` whose compiled/interpreted choice follows ``TRITON_INTERPRET`` per launch."""
    if fn is None:
        return lambda f: jit(f, **kwargs)
    if triton is None:
        return fn  # never launched: use_triton() is False without Triton
    return _Kernel(fn, **kwargs)


def launch_options() -> dict:
    """Compile options shared by every launch.

    Floating-point contraction is off so that ``a * b + c`` rounds twice, exactly like the
    separate PyTorch ops of the references (bit-identical results on GPU, not only in the interpreter).
    """
    return {"num_warps": NUM_WARPS, "enable_fp_fusion": False}


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
