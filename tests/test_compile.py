"""The compiled path: same training, and nothing recompiles after the first mega-batch."""
import json

import pytest
import torch

from lure_fast import run as run_module
from lure_fast.cli import main


def graphs_per_megabatch(monkeypatch) -> list[int]:
    """Resets dynamo; the returned list gets the number of graphs compiled so far at every unlearn step
    (the end of each mega-batch but the last)."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    seen = []
    real_forget = run_module.forget_

    def forget_and_count(*a, **k):
        seen.append(counters["stats"]["unique_graphs"])
        return real_forget(*a, **k)

    monkeypatch.setattr(run_module, "forget_", forget_and_count)
    return seen


def epoch_losses(monkeypatch) -> list[float]:
    """The returned list gets every epoch's mean training loss, in order."""
    from lure_fast.train import Trainer
    losses = []
    real = Trainer.train_epoch

    def record(self, *a, **k):
        stats = real(self, *a, **k)
        losses.append(stats["loss"])
        return stats

    monkeypatch.setattr(Trainer, "train_epoch", record)
    return losses


def assert_runs_agree(eager: list[float], compiled: list[float], folder, rel: float, acc_points: float) -> None:
    """Same start, same batches: the first epoch's loss agrees within ``rel`` (kernels differ, so a
    tolerance, not equality); later, SGD amplifies rounding, so only the test accuracy, within points."""
    assert len(eager) == len(compiled) > 1
    assert abs(eager[0] - compiled[0]) <= rel * abs(eager[0]), (eager, compiled)
    a, b = (json.loads((folder / d / "results.json").read_text()) for d in ("eager", "comp"))
    for ma, mb in zip(a["megabatches"], b["megabatches"]):
        assert abs(ma["test_acc"] - mb["test_acc"]) <= acc_points, (ma, mb)


def test_compiled_run_does_not_recompile_after_the_first_megabatch(tmp_path, monkeypatch, capsys):
    """CPU inductor (the GPU test below adds CUDA graphs): replay makes every mega-batch's training and
    validation sets larger, so partial batches change size; they run eagerly. The compiled run trains
    like an eager one."""
    from torch._dynamo.utils import counters
    base = ["run", "--method", "lure", "--preset", "tiny", "--megabatches", "3", "--epochs", "1", "--quiet",
            "--precision", "fp32"]  # fp32: the tolerance below is fp32's (bf16 is the GPU test's case)
    losses = epoch_losses(monkeypatch)
    assert main([*base, "--no-compile", "--out", str(tmp_path / "eager")]) == 0
    eager, losses[:] = list(losses), []
    seen = graphs_per_megabatch(monkeypatch)
    assert main([*base, "--compile", "--out", str(tmp_path / "comp")]) == 0
    assert len(seen) == 2 and seen[0] > 0
    assert counters["stats"]["unique_graphs"] == seen[0] == seen[1]  # mega-batches 2 and 3 compiled nothing
    assert_runs_agree(eager, losses, tmp_path, rel=1e-3, acc_points=5.0)


@pytest.mark.gpu
@pytest.mark.parametrize("precision,rel", [("fp32", 1e-2), ("bf16", 5e-2)])  # bf16: the GPU's default path
def test_compiled_and_eager_runs_agree_on_gpu(tmp_path, monkeypatch, capsys, precision, rel):
    """The issue's check: a compiled run (CUDA graphs) and an eager run of the same tiny mega-batches agree
    within tolerance, nothing recompiles after the first mega-batch, and no graph falls back from CUDA
    graphs (inductor counts each such skip)."""
    from torch._dynamo.utils import counters
    base = ["run", "--method", "lure", "--preset", "tiny", "--megabatches", "3", "--epochs", "2",
            "--device", "cuda", "--quiet", "--precision", precision]
    losses = epoch_losses(monkeypatch)
    assert main([*base, "--no-compile", "--out", str(tmp_path / "eager")]) == 0
    eager, losses[:] = list(losses), []
    seen = graphs_per_megabatch(monkeypatch)
    assert main([*base, "--compile", "--compile-mode", "reduce-overhead", "--out", str(tmp_path / "comp")]) == 0
    assert len(seen) == 2 and seen[0] > 0
    assert counters["stats"]["unique_graphs"] == seen[0] == seen[1]
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    assert_runs_agree(eager, losses, tmp_path, rel=rel, acc_points=5.0)
