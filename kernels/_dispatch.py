"""When the Triton kernels run, and how they are declared.

The Triton path is taken for CUDA tensors, and for CPU tensors when the environment variable
``TRITON_INTERPRET`` is set (Triton's interpreter: how the tests exercise the kernels on machines
without a GPU). Every other call goes to the exact PyTorch reference in ``reference.py``.
The choice is made at call time, so the variable may be set after this package was imported.
"""

from __future__ import annotations

import os

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

    def _interpret_device_calls() -> None:
        """Let JIT functions be called as device functions under the interpreter.

        Triton picks interpreted or compiled for every ``@triton.jit`` function, its own library
        (``tl.zeros``, ``tl.sum``'s combine function, ...) included, when the function is defined,
        i.e. at import. When ``TRITON_INTERPRET`` is set only later, the interpreter meets compiled
        ``JITFunction``s whose ``__call__`` just raises; this makes such a call interpret the
        function instead. Outside the interpreter the original ``__call__`` (an error) is kept.
        """
        if getattr(JITFunction, "_lure_interpretable", False):
            return
        compiled_call = JITFunction.__call__

        def __call__(self, *args, **kwargs):
            if not _launch_interpreted():
                return compiled_call(self, *args, **kwargs)
            interpreted = self.__dict__.get("_lure_interpreted")
            if interpreted is None:
                interpreted = self._lure_interpreted = InterpretedFunction(self.fn)
            return interpreted(*args, **kwargs)

        JITFunction.__call__ = __call__
        JITFunction._lure_interpretable = True

    class _Kernel(JITFunction):
        """A ``triton.jit`` kernel that runs under Triton's interpreter when ``TRITON_INTERPRET``
        is set at launch time rather than at import time."""

        def __init__(self, fn, **kwargs):
            super().__init__(fn, **kwargs)
            self._lure_interpreted = InterpretedFunction(fn)

        def run(self, *args, grid, warmup, **kwargs):
            if _launch_interpreted():
                _interpret_device_calls()
                return self._lure_interpreted.run(*args, grid=grid, warmup=warmup, **kwargs)
            return super().run(*args, grid=grid, warmup=warmup, **kwargs)


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
