"""The training-loop benchmark's pieces run on the CPU: every variant's loop trains on tiny random data,
the results writer produces its documented keys, the protocol extrapolation adds up. Nothing is timed."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from lf_helpers import REPO
from lure_fast.loaders import Dataset, Split


def _load_bench():
    name = "lure_fast_bench_train"  # not 'bench_train': pytest may import the benchmark itself by that name
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_bench()
BATCH = 8


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: with several intra-op threads on a busy small machine, spin-waiting threads make
    a two-batch epoch take seconds instead of tens of milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    split = lambda n: Split(torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g),
                            torch.randint(0, 10, (n,), generator=g))
    return Dataset("random", "random", split(4 * BATCH), split(2 * BATCH), [str(c) for c in range(10)])


def _trains(variant, dataset):
    """Warm-up, one epoch of two batches and (where the variant measures it) an eval pass run; the
    weights move and stay finite."""
    loop = bench.build_loop(variant, dataset, BATCH, "cpu", images=2 * BATCH, width=8, workers=0)
    before = [p.detach().clone() for p in loop.model.parameters()]
    assert loop.warm_up() == 2 * BATCH  # fewer images than WARMUP_BATCHES batches: all of them
    assert loop.epoch(1) == 2 * BATCH
    after = list(loop.model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    if loop.evaluate is not None:
        assert loop.evaluate() == len(dataset.test)
    return loop


@pytest.mark.parametrize("variant", ["authors-fp32", "eager-bf16-cl"])
def test_eager_loops_train(tiny, variant):
    loop = _trains(variant, tiny)
    assert loop.evaluate is not None
    if variant == "eager-bf16-cl":
        assert loop.model.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_compiled_loop_trains(tiny):
    """One compiled variant (CUDA graphs are a no-op on the CPU, so 'default' covers the code path);
    the tiny model compiles in about 35 s on two idle cores with a cold inductor cache (47 s with the other
    core busy), about 4 s from the cache."""
    torch._dynamo.reset()
    try:
        loop = _trains("compiled", tiny)
        assert loop.evaluate is None  # compiled variants time no eval (it would compile a second graph)
    finally:
        torch._dynamo.reset()


def _fake_runs():
    runs = []
    for batch in bench.BATCHES:
        for i, variant in enumerate(bench.VARIANTS):
            ips = 1000.0 * (i + 1) * (2 if batch == 512 else 1)
            runs.append({"variant": variant, "batch_size": batch, "images_per_s": ips,
                         "epoch_s": bench.EPOCH_IMAGES / ips, "epoch_s_min": bench.EPOCH_IMAGES / ips, "rounds": 3,
                         "peak_memory_bytes": (i + 1) * 2**30, "peak_reserved_bytes": (i + 2) * 2**30,
                         "resident_memory_bytes": 2**28, "warmup_s": 1.0 + i,
                         "loader_workers": 16 if variant == bench.BASELINE else None,
                         "eval_images_per_s": 3000.0 if i < 2 else None})
    return runs


def test_results_writer_documented_keys(tmp_path):
    path = bench.write_results(_fake_runs(), "NVIDIA H100 80GB HBM3", 800e12, tmp_path, meta={"torch": "x"})
    assert path.name == "train-nvidia-h100-80gb-hbm3.json"
    p = json.loads(path.read_text())
    assert {"device", "torch", "model", "epoch_images", "variants", "baseline_variant", "train_gflop_per_image",
            "forward_gflop_per_image", "peak_bf16_flops", "runs", "authors_protocol_batch_64",
            "product_protocol_batch_64"} <= set(p)
    assert p["peak_bf16_flops"] == {"spec_dense": 989.4e12, "measured_matmul_8192": 800e12}
    assert len(p["runs"]) == 8
    keys = {"variant", "batch_size", "images_per_s", "epoch_s", "rounds", "peak_memory_bytes", "peak_reserved_bytes",
            "resident_memory_bytes", "warmup_s", "eval_images_per_s", "ratio_to_authors", "train_tflops",
            "fraction_of_spec_peak", "fraction_of_measured_peak"}
    for r in p["runs"]:
        assert keys <= set(r)
    by = {(r["batch_size"], r["variant"]): r for r in p["runs"]}
    assert by[(64, "authors-fp32")]["ratio_to_authors"] == 1.0
    assert by[(512, "compiled-cudagraphs")]["ratio_to_authors"] == 4.0
    r = by[(64, "compiled")]
    assert r["train_tflops"] == pytest.approx(3000 * bench.TRAIN_FLOP / 1e12)
    assert r["fraction_of_spec_peak"] == pytest.approx(3000 * bench.TRAIN_FLOP / 989.4e12)
    assert r["fraction_of_measured_peak"] == pytest.approx(3000 * bench.TRAIN_FLOP / 800e12)
    a = p["authors_protocol_batch_64"]
    assert a["kind"] == "extrapolation" and a["eval_rate_assumed"] is False
    assert a["total_s"] == pytest.approx(bench.PROTOCOL_TRAIN_IMAGES / 1000 + bench.PROTOCOL_EVAL_IMAGES / 3000)
    product = p["product_protocol_batch_64"]
    assert set(product) == {"eager-bf16-cl", "compiled", "compiled-cudagraphs"}
    assert product["compiled"]["eval_images_per_s"] == 3000.0  # the eager bf16 eval rate stands in
    md = path.with_suffix(".md").read_text()
    assert "| batch | variant | images/s | x (a) |" in md and "Extrapolated, not measured" in md
    assert md.count("\n| 64 |") == 4 and md.count("\n| 512 |") == 4
    assert "| 64 | compiled | 3,000 | 3.00 | 3,072 | 4,096 |" in md  # peak allocated, then reserved (MiB)
    assert "(a)'s DataLoader workers: 16." in md and "Training alone: " in a["text"]


def test_cudagraph_skips_are_flagged(tmp_path):
    runs = _fake_runs()
    for r in runs:
        r["cudagraph_skips"] = None if r["variant"] != "compiled-cudagraphs" else (2 if r["batch_size"] == 512 else 0)
    path = bench.write_results(runs, "Some GPU", None, tmp_path)
    by = {(r["batch_size"], r["variant"]): r for r in json.loads(path.read_text())["runs"]}
    assert by[(512, "compiled-cudagraphs")]["cudagraph_skips"] == 2 and by[(64, "compiled")]["cudagraph_skips"] is None
    md = path.with_suffix(".md").read_text()
    assert "compiled-cudagraphs at batch 512: inductor skipped CUDA graphs 2 time(s)" in md
    assert "at batch 64: inductor skipped" not in md  # none skipped there: no note


def test_results_writer_without_baseline_or_known_peak(tmp_path):
    runs = [r for r in _fake_runs() if r["variant"] == "compiled"]
    p = json.loads(bench.write_results(runs, "Some GPU", None, tmp_path).read_text())
    assert p["authors_protocol_batch_64"] is None
    assert all(r["ratio_to_authors"] is None and r["fraction_of_spec_peak"] is None
               and r["fraction_of_measured_peak"] is None for r in p["runs"])
    assert "| - |" in (tmp_path / "train-some-gpu.md").read_text()


def test_authors_protocol_extrapolation():
    assert bench.PROTOCOL_TRAIN_IMAGES == 10_125_000  # SPEC §7: ≈ 10.1 M
    assert round(bench.PROTOCOL_EVAL_IMAGES / 1e5) == 53  # SPEC §7: ≈ 5.3 M
    e = bench.extrapolate_authors_protocol(1000.0)
    assert e["eval_rate_assumed"] is True
    assert e["eval_images_per_s"] == pytest.approx(1000.0 * bench.TRAIN_FLOP / bench.FORWARD_FLOP)
    assert e["total_h"] == pytest.approx((e["train_s"] + e["eval_s"]) / 3600)
    assert e["text"].startswith("Extrapolated, not measured")


def test_spec_peak_by_device_name():
    assert bench.spec_peak("NVIDIA H100 PCIe") == 756e12
    assert bench.spec_peak("NVIDIA H100 80GB HBM3") == bench.spec_peak("NVIDIA H200") == 989.4e12
    assert bench.spec_peak("NVIDIA H200 NVL") == bench.spec_peak("NVIDIA H100 NVL") == 835e12
    assert bench.spec_peak("NVIDIA L40S") == 362.05e12
    assert bench.spec_peak("Some GPU") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip without a CUDA device")
def test_benchmark_skips_without_cuda():
    env = {**os.environ, "LURE_FAST_CIFAR": str(REPO / "no-such-folder")}
    r = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "benchmarks" / "bench_train.py"), "-q", "-rs",
                        "-p", "no:cacheprovider", "--benchmark-enable"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "8 skipped" in r.stdout and "needs a CUDA device" in r.stdout


def test_a_split_run_keeps_the_other_cases_of_the_same_device(tmp_path):
    runs = _fake_runs()
    first = [r for r in runs if r["batch_size"] == 64]
    bench.write_results(first, "NVIDIA H200", None, tmp_path, meta={"torch": "2.11"})
    second = [dict(r, images_per_s=r["images_per_s"] + 1) for r in runs if r["batch_size"] == 512]
    assert bench.earlier_runs(second, "NVIDIA H200", "2.12", tmp_path) == []  # another torch: not mixed
    merged = second + bench.earlier_runs(second, "NVIDIA H200", "2.11", tmp_path)
    p = json.loads(bench.write_results(merged, "NVIDIA H200", None, tmp_path, meta={"torch": "2.11"}).read_text())
    cases = lambda rs: sorted((r["batch_size"], r["variant"]) for r in rs)  # noqa: E731
    assert cases(p["runs"]) == cases(runs)
    assert p["authors_protocol_batch_64"] is not None  # the batch-64 baseline came from the first file
    # a re-measured case replaces the earlier one
    again = [dict(first[0], images_per_s=7.0)]
    kept = bench.earlier_runs(again, "NVIDIA H200", "2.11", tmp_path)
    assert len(kept) == 7 and all((r["variant"], r["batch_size"]) != ("authors-fp32", 64) for r in kept)


def test_flop_constants_are_what_torch_counts_for_the_model():
    """FLOP (a multiply-add is 2), as the peak figures are; SPEC §7 quotes multiply-adds (0.56, 1.7 G)."""
    from torch.utils.flop_counter import FlopCounterMode
    from lure_fast.models import build_model

    model = build_model("resnet18", 10, 3, 64)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    with FlopCounterMode(display=False) as fwd:
        model(x)
    with FlopCounterMode(display=False) as train:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    assert fwd.get_total_flops() / 2 == pytest.approx(bench.FORWARD_FLOP, rel=1e-3)
    assert train.get_total_flops() / 2 == pytest.approx(bench.TRAIN_FLOP, rel=1e-3)
