"""Speed and memory of the unlearn step: fused Triton ``unlearn_`` against PyTorch baselines.

Run on a CUDA machine:

    pytest benchmarks/bench_unlearn.py --benchmark-enable

For ResNet-18 (11.2 M parameters, 10 classes), ResNet-50 (23.5 M, 10 classes) and
Wide-ResNet-50-2 (68.9 M, 1000 classes), built by torchvision (exact counts are recorded), it times one unlearn step, from the accumulated gradients ``acc`` to the reset weights
(SNIP saliency ``|acc * w|``, global threshold, re-initialisation), in these ways:

- ``fused``: ``saliency("snip", params, acc, out=s)`` + ``unlearn_(params, s, ...)`` on the lists of
  parameter tensors, the trainer's path (``lure_fast/methods.py``): the parameters stay separate
  tensors, so saliency and reset take one launch per parameter, while ``acc`` and ``s`` are views of
  one buffer each (``s`` preallocated, as the trainer writes it over its accumulator; the radix
  passes read ``s`` in one go);
- ``fused-reset``: ``unlearn_`` alone (threshold + reset) from a saliency computed beforehand;
- ``eager``: idiomatic PyTorch: per layer ``abs(acc * w)``, ``cat`` + ``kthvalue`` for the
  threshold, then per layer a mask, a ``uniform_`` draw and a ``where``;
- ``compiled``: the same function under ``torch.compile``;
- ``authors``: the authors' style: per-layer scores, threshold by ``kthvalue`` of a ``.cpu()``
  concatenation, then per layer ``kaiming_uniform_(a=sqrt(5))`` values and a masked assignment;

and the memory floor: the bytes an exact step must move (read ``acc`` and ``w`` once to select
the threshold and once more to mask, write the reset fraction of the weights: 16.8 bytes per
float32 parameter) over the measured device-to-device copy bandwidth. The fused path itself moves
28.8 bytes per parameter (``FUSED_BYTES_PER_PARAM``), so at that bandwidth it cannot come closer than
28.8 / 16.8 = 1.71x the floor; the results record both. Time (median), peak extra memory (``torch.cuda.max_memory_allocated`` above the
allocation before the call) and ratios to ``fused`` go to
``benchmarks/results/unlearn-<device>.json`` and ``.md``. Nothing here asserts a speed.
"""

from __future__ import annotations

import math
import platform
import sys
from pathlib import Path

import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parent))  # results_writer, also when a test loads this file by path
import results_writer  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="benchmarks the CUDA kernels: needs a CUDA device"),
]

FRACTION = 0.2
SEED = 0
MODELS = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "wide_resnet50_2": "Wide-ResNet-50-2"}
NUM_CLASSES = {"resnet18": 10, "resnet50": 10, "wide_resnet50_2": 1000}  # the parameter counts quoted above
# compiled last: from a cold cache it compiles a graph over every layer (minutes for the larger models)
IMPLS = ["fused", "fused-reset", "eager", "authors", "compiled"]
# Bytes moved per float32 parameter. Floor: read acc and w to select the threshold, again to mask,
# write the reset fraction. Fused: saliency (read acc and w, write s), three radix passes over s,
# the reset pass (read s, write the reset fraction; it never reads w).
FLOOR_BYTES_PER_PARAM = 2 * (4 + 4) + FRACTION * 4
FUSED_BYTES_PER_PARAM = (4 + 4 + 4) + 3 * 4 + (4 + FRACTION * 4)
RESULTS_DIR = results_writer.RESULTS_DIR


# ----------------------------------------------------------------------------- the contenders


def kaiming_bound(name: str, p: torch.Tensor):
    """Bound of ``kaiming_uniform_(a=sqrt(5))`` for weights (1-D ones viewed as [n, 1]: fan-in 1);
    None for biases, which the authors never reset."""
    if "weight" not in name:
        return None
    fan_in = p[0].numel() if p.dim() > 1 else 1
    return 1.0 / math.sqrt(fan_in)


def eager_unlearn(params, accs, bounds, fraction):
    saliency = [torch.abs(a * p) for a, p in zip(accs, params)]
    scores = torch.cat([s.reshape(-1) for s in saliency])
    threshold = torch.kthvalue(scores, int(fraction * scores.numel())).values
    for p, s, bound in zip(params, saliency, bounds):
        if bound is None:
            continue
        fresh = torch.empty_like(p).uniform_(-bound, bound)
        p.copy_(torch.where(s <= threshold, fresh, p))


def authors_unlearn(named_params, accs, fraction):
    saliency = [torch.abs(a * p) for a, (_, p) in zip(accs, named_params)]
    all_scores = torch.cat([torch.flatten(s) for s in saliency]).cpu()
    threshold = torch.kthvalue(all_scores, int(fraction * all_scores.numel())).values
    for (name, p), s in zip(named_params, saliency):
        if "weight" not in name:
            continue
        mask = s <= threshold.to(s.device)
        fresh = torch.empty(p.shape if p.dim() > 1 else (p.numel(), 1), device=p.device, dtype=p.dtype)
        torch.nn.init.kaiming_uniform_(fresh, a=math.sqrt(5))
        p.data[mask] = fresh.view_as(p)[mask]


def build(impl: str, model_name: str, device: str = "cuda"):
    """A fresh model on ``device`` and a zero-argument callable running one unlearn step on it."""
    import torchvision

    from lure_fast.kernels import saliency, unlearn_

    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(num_classes=NUM_CLASSES[model_name]).to(device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    bounds = [kaiming_bound(n, p) for n, p in named]
    numels = [p.numel() for _, p in named]
    numel = sum(numels)
    # Accumulated gradients: one flat buffer, as the trainer keeps them.
    acc = torch.randn(numel, device=device, generator=torch.Generator(device).manual_seed(1))
    accs = [v.view_as(p) for v, (_, p) in zip(acc.split(numels), named)]
    params = [p.detach() for _, p in named]
    if impl in ("fused", "fused-reset"):
        # the saliency: one buffer viewed per parameter, allocated outside the measured step
        sal = [v.view_as(p) for v, p in zip(torch.empty(numel, device=device).split(numels), params)]
        if impl == "fused-reset":
            saliency("snip", params, accs, out=sal)
            return model, numel, lambda: unlearn_(params, sal, FRACTION, bounds, SEED)
        return model, numel, lambda: unlearn_(params, saliency("snip", params, accs, out=sal), FRACTION, bounds, SEED)
    if impl == "eager":
        return model, numel, lambda: eager_unlearn(params, accs, bounds, FRACTION)
    if impl == "compiled":
        compiled = torch.compile(eager_unlearn)
        return model, numel, lambda: compiled(params, accs, bounds, FRACTION)
    if impl == "authors":
        return model, numel, torch.no_grad()(lambda: authors_unlearn(named, accs, FRACTION))
    raise ValueError(impl)


def synchronized(fn):
    def run():
        fn()
        torch.cuda.synchronize()

    return run


def peak_extra_bytes(fn) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    return 2 * nbytes * repeats / (start.elapsed_time(end) / 1e3)


# ----------------------------------------------------------------------------- results


@pytest.fixture(scope="module")
def results():
    return {}


def record(table: dict) -> None:
    """Rewrite the results files after every measurement: a session stopped mid-benchmark (a deadline's
    SIGTERM skips fixture teardown) keeps what it measured. Smoke runs (--benchmark-disable) write nothing."""
    timed = {m: r for m, r in table.items() if any("median_s" in v for v in r["impls"].values())}
    if timed:
        write_results(timed)


_BANDWIDTH: list[float] = []


def write_results(table: dict) -> None:
    import triton

    if not _BANDWIDTH:
        _BANDWIDTH.append(copy_bandwidth())
    bandwidth = _BANDWIDTH[0]
    for entry in table.values():
        n = entry["numel"]
        floor_bytes, fused_bytes = FLOOR_BYTES_PER_PARAM * n, FUSED_BYTES_PER_PARAM * n
        entry["floor"] = {
            "bytes": floor_bytes,
            "bytes_per_param": FLOOR_BYTES_PER_PARAM,
            "fused_bytes": fused_bytes,
            "fused_bytes_per_param": FUSED_BYTES_PER_PARAM,
            "copy_bandwidth_Bps": bandwidth,
            "seconds": floor_bytes / bandwidth,
            "fused_bytes_seconds": fused_bytes / bandwidth,  # the best the fused path's own traffic allows
        }
        fused = entry["impls"].get("fused", {}).get("median_s")
        for stats in entry["impls"].values():
            if fused and "median_s" in stats:
                stats["ratio_to_fused"] = stats["median_s"] / fused
        if fused:
            entry["floor"]["fused_over_floor"] = fused / entry["floor"]["seconds"]
    name = torch.cuda.get_device_name()
    payload = {
        "device": name,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "fraction": FRACTION,
        "models": table,
    }
    lines = [
        f"# Unlearn step on {name}",
        "",
        f"fraction {FRACTION}, float32 parameters and accumulated gradients; torch {torch.__version__}, triton {triton.__version__}.",
        "From accumulated gradients to reset weights (SNIP saliency, threshold, re-initialisation); `fused` runs "
        "`saliency` and `unlearn_` on the lists of parameter tensors, the trainer's path (one launch per parameter), "
        "writing the saliency into a buffer allocated beforehand (the trainer writes it over its gradient "
        "accumulator); `fused-reset` is `unlearn_` alone. Peak extra memory: allocated by the call beyond its inputs.",
        f"Memory floor: read acc and w twice and write the reset weights ({FLOOR_BYTES_PER_PARAM:.1f} B/parameter), at the "
        f"measured copy bandwidth ({bandwidth / 1e12:.2f} TB/s). Fused traffic: the fused path moves "
        f"{FUSED_BYTES_PER_PARAM:.1f} B/parameter (saliency: read acc and w, write s, 12; three radix passes over s, 12; "
        f"reset: read s, write the reset weights, {4 + FRACTION * 4:.1f}), so at that bandwidth it cannot beat "
        f"{FUSED_BYTES_PER_PARAM / FLOOR_BYTES_PER_PARAM:.2f}x the floor.",
        "",
        "| model | parameters | implementation | median (ms) | peak extra memory (MiB) | % of parameter bytes "
        "| time / fused |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for model, entry in table.items():
        for impl in IMPLS:
            stats = entry["impls"].get(impl)
            if not stats or "median_s" not in stats:
                continue
            lines.append(
                f"| {MODELS[model]} | {entry['numel'] / 1e6:.1f} M | {impl} | {stats['median_s'] * 1e3:.3f} | "
                f"{stats['peak_extra_bytes'] / 2**20:.1f} | {100 * stats['peak_extra_bytes'] / (4 * entry['numel']):.2f} | "
                f"{stats.get('ratio_to_fused', float('nan')):.2f} |"
            )
        floor = entry["floor"]
        fused = entry["impls"].get("fused", {}).get("median_s")
        ratio = f"{floor['seconds'] / fused:.2f}" if fused else "n/a"
        lines.append(f"| {MODELS[model]} | {entry['numel'] / 1e6:.1f} M | memory floor | {floor['seconds'] * 1e3:.3f} | - | - "
                     f"| {ratio} |")
        traffic = f"{floor['fused_bytes_seconds'] / fused:.2f}" if fused else "n/a"
        lines.append(f"| {MODELS[model]} | {entry['numel'] / 1e6:.1f} M | fused traffic at copy bandwidth "
                     f"| {floor['fused_bytes_seconds'] * 1e3:.3f} | - | - | {traffic} |")
    results_writer.write("unlearn", name, payload, lines, RESULTS_DIR)


# ----------------------------------------------------------------------------- the benchmark


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_unlearn_step(benchmark, results, monkeypatch, model_name, impl):
    from lure_fast.kernels._dispatch import compiled_available

    if not compiled_available():
        pytest.skip("Triton was imported under TRITON_INTERPRET=1: only the interpreter could run")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # compiled kernels, not the interpreter
    model, numel, step = build(impl, model_name)
    run = synchronized(step)
    run()  # compile / autotune / cache warm-up outside the measurements
    extra = peak_extra_bytes(run)
    benchmark.group = MODELS[model_name]
    benchmark.extra_info.update(numel=numel, peak_extra_bytes=extra)
    rounds = 5 if impl == "authors" else 30
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=2)
    entry = results.setdefault(model_name, {"numel": numel, "impls": {}})
    stats = {"peak_extra_bytes": extra}
    if getattr(benchmark, "stats", None) is not None:
        s = benchmark.stats.stats
        stats.update(median_s=s.median, mean_s=s.mean, stddev_s=s.stddev, min_s=s.min, rounds=s.rounds)
    entry["impls"][impl] = stats
    record(results)
    del model
    torch.cuda.empty_cache()
