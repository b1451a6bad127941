"""The unlearn benchmark on the CPU (the benchmark itself needs CUDA): its results writer with fake
measurements (every measured implementation gets a row with its share of the parameter bytes, the
floor and fused-traffic rows, the ratios to ``fused``; results are rewritten after each measurement),
and its fused contenders on a tiny model under Triton's interpreter. Nothing is timed."""
import importlib.util
import json
import sys

import pytest
import torch
from torch import nn

from lf_helpers import REPO


def _load_bench():
    name = "lure_fast_bench_unlearn"  # not 'bench_unlearn': pytest may import the benchmark by that name
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "bench_unlearn.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture
def fake_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(bench, "_BANDWIDTH", [3.0e12])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    return tmp_path


def test_record_writes_after_each_measurement_and_skips_smoke_runs(fake_gpu):
    n = 11_000_000
    table = {"resnet18": {"numel": n, "impls": {"fused": {"peak_extra_bytes": 4096}}}}  # smoke run: no median
    bench.record(table)
    assert not list(fake_gpu.iterdir())
    table["resnet18"]["impls"]["fused"].update(median_s=1e-4)
    bench.record(table)
    doc = json.loads((fake_gpu / "unlearn-nvidia-h100-80gb-hbm3.json").read_text())
    assert doc["models"]["resnet18"]["impls"]["fused"]["ratio_to_fused"] == 1.0
    table["resnet18"]["impls"]["eager"] = {"peak_extra_bytes": 4 * n, "median_s": 5e-3}
    table["resnet18"]["impls"]["fused-reset"] = {"peak_extra_bytes": 0, "median_s": 3e-4}
    bench.record(table)
    md = (fake_gpu / "unlearn-nvidia-h100-80gb-hbm3.md").read_text()
    rows = {line.split("|")[3].strip(): line for line in md.splitlines() if line.startswith("| ResNet-18")}
    assert set(rows) == {"fused", "fused-reset", "eager", "memory floor", "fused traffic at copy bandwidth"}
    assert "| 100.00 |" in rows["eager"] and "| 0.01 |" in rows["fused"]  # peak extra, % of parameter bytes
    assert rows["eager"].rstrip(" |").endswith("50.00")  # time / fused
    assert rows["fused-reset"].rstrip(" |").endswith("3.00")
    floor_s = (2 * 8 * n + 0.2 * 4 * n) / 3.0e12
    assert f"| {floor_s * 1e3:.3f} |" in rows["memory floor"]
    # the fused path's own traffic: 28.8 B/parameter against the floor's 16.8
    traffic_s = 28.8 * n / 3.0e12
    assert f"| {traffic_s * 1e3:.3f} |" in rows["fused traffic at copy bandwidth"]
    assert rows["fused traffic at copy bandwidth"].rstrip(" |").endswith(f"{traffic_s / 1e-4:.2f}")
    assert "28.8 B/parameter" in md and "16.8 B/parameter" in md and "1.71x the floor" in md
    floor = json.loads((fake_gpu / "unlearn-nvidia-h100-80gb-hbm3.json").read_text())["models"]["resnet18"]["floor"]
    assert floor["bytes_per_param"] == pytest.approx(16.8) and floor["fused_bytes_per_param"] == pytest.approx(28.8)
    assert floor["fused_bytes_seconds"] == pytest.approx(traffic_s)


class _CountingLaunches:
    """Stands in for a Triton kernel: counts its launches, then launches it."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


@pytest.mark.parametrize("impl", ["fused", "fused-reset"])
def test_fused_is_the_per_tensor_path_and_resets_what_the_reference_resets(monkeypatch, impl):
    import torchvision

    from lure_fast.kernels import unlearn as unlearn_module

    tiny = lambda num_classes: nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, num_classes))
    monkeypatch.setattr(torchvision.models, "tiny", tiny, raising=False)
    monkeypatch.setitem(bench.NUM_CLASSES, "tiny", 10)
    counter = _CountingLaunches(unlearn_module._unlearn_kernel)
    monkeypatch.setattr(unlearn_module, "_unlearn_kernel", counter)
    after = {}
    for path in ("triton", "reference"):
        if path == "triton":
            monkeypatch.setenv("TRITON_INTERPRET", "1")  # the Triton path on CPU tensors
        else:
            monkeypatch.delenv("TRITON_INTERPRET")  # the PyTorch reference
        model, numel, step = bench.build(impl, "tiny", device="cpu")
        before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        step()
        after[path] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        assert 0 < int((after[path] != before).sum()) < numel
    weights = sum(1 for n, _ in tiny(10).named_parameters() if "weight" in n)
    assert counter.launches == weights  # one launch per bounded parameter (the Triton path only): the trainer's path
    assert torch.equal(after["triton"], after["reference"])  # same threshold, same counter-based values
