"""Importing and running ``lure_fast.kernels`` changes nothing in Triton for other code.

A fresh Python process defines a plain ``@triton.jit`` kernel, runs it on the CPU under
``TRITON_INTERPRET=1`` and calls a plain ``JITFunction`` outside any kernel; then it imports
``lure_fast.kernels``, runs every op on the CPU under the interpreter, and does the same again.
The results, the errors, and the attributes of Triton's ``JITFunction`` and ``InterpretedFunction``
classes must be the same object for object. The variable is set either before Triton's import
(``@triton.jit`` then makes interpreted functions, Triton's library included) or after the plain
kernel's definition (as in the kernel tests: it and Triton's library are then compiled-only
``JITFunction``s, and launching it on CPU tensors fails the same way before and after).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = r'''
import json, os, sys
import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction


@triton.jit
def plain_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(out_ptr + offs, tl.cumsum(x, 0) * 2.0 + tl.zeros((BLOCK,), tl.float32), mask=offs < n)
    tl.store(out_ptr + n, tl.sum(x, 0))


def plain_device_function(x):
    return x + 1


if sys.argv[1] == "late":
    os.environ["TRITON_INTERPRET"] = "1"  # after Triton's import and the kernel's definition


def outcome(fn):
    try:
        return ["returned", repr(fn())]
    except Exception as err:
        return ["raised", type(err).__name__, str(err)]


def launch():
    x = torch.arange(10, dtype=torch.float32)
    out = torch.zeros(11)
    plain_kernel[(1,)](x, out, 10, BLOCK=16)
    return out.tolist()


def observe():
    return {
        "kernel": type(plain_kernel).__name__,
        "launch": outcome(launch),
        "call": outcome(lambda: JITFunction(plain_device_function)(1.0)),
    }


def classes():
    return {cls: dict(vars(cls)) for cls in (JITFunction, InterpretedFunction)}


def same_classes(a, b):
    return all(a[c].keys() == b[c].keys() and all(a[c][k] is b[c][k] for k in a[c]) for c in a)


before, classes_before = observe(), classes()
import lure_fast.kernels as K

classes_imported = classes()
gen = torch.Generator().manual_seed(0)
params = [torch.randn(4, 3, 2, 2, generator=gen).contiguous(memory_format=torch.channels_last), torch.randn(7, generator=gen)]
acc = [torch.zeros_like(p) for p in params]
assert K.use_triton(params[0])
K.accumulate_(acc, [torch.randn(p.shape, generator=gen) for p in params], "sum")
sal = K.saliency("snip", params, acc=acc, out=acc)
K.saliency("random", params, seed=1)
K.kth_smallest(sal, 5)
reset = K.unlearn_(params, sal, 0.5, [0.5, None], seed=2)
K.shrink_perturb_(params, 0.5, 0.1, [0.5, 1.0], seed=3)
K.counter_uniform(5, seed=4)
after, classes_after = observe(), classes()
print(json.dumps({
    "before": before, "after": after, "reset": reset,
    "classes_untouched_by_import": same_classes(classes_before, classes_imported),
    "classes_untouched_by_ops": same_classes(classes_before, classes_after),
}))
'''


@pytest.mark.parametrize("when", ["at-start", "late"])
def test_plain_triton_kernels_behave_the_same_after_importing_and_running_the_ops(when, tmp_path):
    pytest.importorskip("triton")
    script = tmp_path / "plain_triton.py"  # a file: Triton reads a jit function's source
    script.write_text(_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if when == "at-start":
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run(
        [sys.executable, str(script), when], cwd=Path(__file__).resolve().parents[2], env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["reset"] > 0  # the ops really ran the Triton path
    assert seen["classes_untouched_by_import"] and seen["classes_untouched_by_ops"]
    assert seen["after"] == seen["before"]
    before = seen["before"]
    # what Triton does on its own, so that the comparison above means something
    assert before["call"][:2] == ["raised", "RuntimeError"] and "outside of the scope of a kernel" in before["call"][2]
    if when == "at-start":
        assert before["kernel"] == "InterpretedFunction"
        sums = [float(sum(range(i + 1))) for i in range(10)]
        assert before["launch"] == ["returned", repr([2 * s for s in sums] + [45.0])]
    else:
        assert before["kernel"] == "JITFunction" and before["launch"][0] == "raised"


def test_jitfunction_is_tritons_own_after_an_interpreted_launch(monkeypatch):
    """The same in this process, after the kernels ran here (cheap; the subprocess test above is the
    one that also sees the state before the import)."""
    triton_jit = pytest.importorskip("triton.runtime.jit")
    import torch

    from lure_fast.kernels import counter_uniform, unlearn_

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    names = set(vars(triton_jit.JITFunction))
    assert unlearn_([torch.zeros(9)], [torch.arange(9.0)], 0.5, [1.0], seed=0) == 4
    counter_uniform(3, seed=0)
    assert set(vars(triton_jit.JITFunction)) == names
    assert triton_jit.JITFunction.__dict__["__call__"].__module__ == "triton.runtime.jit"
