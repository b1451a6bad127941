"""The ``Example::`` blocks of the package's and the ops' docstrings run as written, on the Triton path
(under the interpreter) and on the reference path, given a small model and a loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lure_fast.kernels as K

# the package and every op (the references document themselves by pointing at their op)
DOCUMENTED = {"package": K, **{n: getattr(K, n) for n in K.__all__ if "reference" not in n and n != "use_triton"}}


def example(obj) -> str:
    """The ``>>>`` lines of ``obj``'s ``Example::`` blocks, as code."""
    blocks = (obj.__doc__ or "").split("Example::")[1:]
    return "\n".join(line.strip()[4:] for block in blocks for line in block.splitlines() if line.strip().startswith(">>> "))


@pytest.mark.parametrize("path", ["triton", "reference"])
@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_docstring_example_runs(monkeypatch, name, path):
    if path == "triton":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    else:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
    assert K.use_triton(next(model.parameters())) == (path == "triton")
    params = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    before = [p.detach().clone() for p in model.parameters()]
    namespace = {
        "torch": torch, "nn": nn, "model": model, "loss": model(torch.randn(2, 3, 4, 4)).square().sum(),
        "params": params, "acc": [torch.rand(p.shape) for p in params],
        **{n: getattr(K, n) for n in K.__all__},
    }
    code = example(DOCUMENTED[name])
    assert code, f"{name}: no example in its docstring"
    exec(compile(code, f"<example of {name}>", "exec"), namespace)
    if name == "package":
        assert namespace["n"] > 0
    if name in ("package", "unlearn_", "shrink_perturb_"):
        assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))  # in place
