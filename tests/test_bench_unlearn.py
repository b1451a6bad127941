"""The unlearn benchmark's results writer on the CPU (fake measurements; the benchmark itself needs CUDA):
every measured implementation gets a row with its share of the parameter bytes, the floor row, the
ratios to ``fused``; results are rewritten after each measurement. Nothing is timed."""
import importlib.util
import json
import sys

import pytest
import torch

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
    bench.record(table)
    md = (fake_gpu / "unlearn-nvidia-h100-80gb-hbm3.md").read_text()
    rows = {line.split("|")[3].strip(): line for line in md.splitlines() if line.startswith("| ResNet-18")}
    assert set(rows) == {"fused", "eager", "memory floor"}
    assert "| 100.00 |" in rows["eager"] and "| 0.01 |" in rows["fused"]  # peak extra, % of parameter bytes
    assert rows["eager"].rstrip(" |").endswith("50.00")  # time / fused
    floor_s = (2 * 8 * n + 0.2 * 4 * n) / 3.0e12
    assert f"| {floor_s * 1e3:.3f} |" in rows["memory floor"]
