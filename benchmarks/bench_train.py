"""Speed and memory of the training loop: the authors' eager fp32 loop against the product's
bf16 channels-last ``Trainer``, eager and compiled.

Run on a CUDA machine:

    LURE_FAST_CIFAR=/path/to/cifar10-jpeg python -m pytest benchmarks/bench_train.py --benchmark-enable

ResNet-18 (CIFAR stem, 10 classes) on real CIFAR-10 (the ImageFolder JPEG copy at
``../shared/data/cifar10-jpeg``, or the folder in ``$LURE_FAST_CIFAR``), at batch 64 (the paper's)
and 512, trained in four ways:

- ``authors-fp32`` (a): the authors' style: a plain ``DataLoader`` over the CPU dataset with
  per-sample CPU transforms and a worker per core (the ``torch`` backend), fp32, ``loss.item()``
  every step, ``optimizer.zero_grad()``, ``torch.optim.SGD`` with its default (non-fused) update;
- ``eager-bf16-cl`` (b): the product's ``Trainer``, bf16 autocast, channels-last, the ``memory``
  backend (the dataset on the GPU, flips and crops drawn there), fused SGD, no host sync in an epoch;
- ``compiled`` (c): (b) with ``torch.compile(mode='default')``;
- ``compiled-cudagraphs`` (d): (b) with ``torch.compile(mode='reduce-overhead')`` (CUDA graphs).

Each variant is warmed up (compiled, CUDA graphs recorded) on a few batches, then one whole epoch of
``EPOCH_IMAGES`` images runs untimed (it gives the peak memory), then whole epochs are timed (median).
An epoch includes its data loading and augmentation. For (a) (at the training batch size) and (b)
(at the product's eval batch, 1024) the faster of two passes over the 10,000 test images gives the
eval rate. Every image count is a multiple of both batch sizes, so the compiled variants never meet
a partial batch (the product runs those eagerly).

Written to ``benchmarks/results/train-<device>.json`` and ``.md``: images/s, peak GPU memory
(``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``), the ratio to (a), the
training FLOP rate against the GPU's dense bf16 peak (data-sheet figure and a measured 8192^3 bf16
matrix product), and the authors' loop extrapolated to the whole Table-1 protocol. A run of some of
the cases (``-k 64``) keeps the other cases of an earlier file of the same device and torch version,
so the benchmark can be split over sessions. Nothing here asserts a speed.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lure_fast.config import RunConfig
from lure_fast.loaders import load_dataset, make_backend
from lure_fast.models import build_model
from lure_fast.train import Trainer

sys.path.append(str(Path(__file__).resolve().parent))  # results_writer, also when a test loads this file by path
import results_writer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = results_writer.RESULTS_DIR
CIFAR_JPEG = Path(os.environ.get("LURE_FAST_CIFAR") or REPO / ".." / "shared" / "data" / "cifar10-jpeg")

VARIANTS = {
    "authors-fp32": "(a) authors' style: eager fp32, torch DataLoader + per-sample CPU transforms, "
                    "loss.item() every step, non-fused SGD",
    "eager-bf16-cl": "(b) Trainer: eager, bf16 autocast, channels-last, memory backend on the GPU, fused SGD",
    "compiled": "(c) Trainer + torch.compile(mode='default')",
    "compiled-cudagraphs": "(d) Trainer + torch.compile(mode='reduce-overhead'), CUDA graphs",
}
BASELINE = "authors-fp32"
COMPILE_MODES = {"compiled": "default", "compiled-cudagraphs": "reduce-overhead"}
BATCHES = (64, 512)
EPOCH_IMAGES = 25_088    # 49 x 512 = 392 x 64: about a t=8 full-replay mega-batch 4 (22,500), full batches only
WARMUP_BATCHES = 10      # compile, then CUDA-graph warm-up and recording (reduce-overhead needs a few calls)
ROUNDS = {"authors-fp32": 3, "eager-bf16-cl": 5, "compiled": 5, "compiled-cudagraphs": 5}

# ResNet-18 (CIFAR stem, 10 classes), counted by torch.utils.flop_counter.FlopCounterMode (a multiply-add
# is 2 FLOP, as in the peak figures below): 1.11 GFLOP forward per image, 3.33 GFLOP per training image
# (forward + backward). SPEC §7's 0.56 and 1.7 are the same costs in multiply-adds.
# tests/test_bench_train.py recounts them.
FORWARD_FLOP = 1.1108e9
TRAIN_FLOP = 3.3290e9
# Dense bf16 tensor-core peak from the vendors' data sheets (FLOP/s), by a fragment of the device
# name; the first match wins, so specific names come before general ones.
BF16_DENSE_PEAK = (
    ("GH200", 989.4e12), ("H200 NVL", 835e12), ("H200", 989.4e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12),
    ("H100", 989.4e12),  # SXM ('NVIDIA H100 80GB HBM3')
    ("A100", 312e12), ("L40S", 362.05e12), ("L4", 121e12),
)

# The Table-1 protocol (SPEC §2, §7): CIFAR-10, 8 mega-batches of 6,250 (5,625 train + 625 validation),
# full replay, 50 epochs each. Training: 50 epochs on 5,625*i images for i = 1..8. Evaluation: the
# validation set (625*i) and the 10,000 test images every epoch (the authors' code), and the selected
# model on its training set once per mega-batch (for the generalisation gap): SPEC §7's ≈ 5.3 M.
PROTOCOL_TRAIN_IMAGES = 50 * 5625 * sum(range(1, 9))                                   # 10,125,000
PROTOCOL_EVAL_IMAGES = 50 * (625 * sum(range(1, 9)) + 8 * 10_000) + 5625 * sum(range(1, 9))  # 5,327,500

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="benchmarks GPU training: needs a CUDA device"),
]


# ----------------------------------------------------------------------------- the loops


@dataclass
class Loop:
    """One variant's training loop. ``epoch(e)`` trains one epoch over the fixed index set (order and
    augmentation from ``(seed, e)``) and returns the images it trained on; ``warm_up()`` runs
    ``WARMUP_BATCHES`` batches the same way; ``evaluate()`` (None where not measured) makes one pass over
    the test set and returns the images it saw. All three return once the device is done."""
    variant: str
    batch_size: int
    epoch: Callable[[int], int]
    warm_up: Callable[[], int]
    evaluate: Callable[[], int] | None
    model: torch.nn.Module
    loader_workers: int | None = None  # DataLoader worker processes, for (a)


def epoch_indices(dataset, images: int, seed: int = 0) -> np.ndarray:
    """``images`` training indices drawn without replacement (the JPEG folder is sorted by class)."""
    return np.random.default_rng(seed).permutation(len(dataset.train))[:images]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def authors_loop(dataset, batch_size: int, device, images: int, width: int = 64, workers: int | None = None,
                 seed: int = 0) -> Loop:
    """(a): the authors' loop, as their code is written, over the ``torch`` backend (a DataLoader with
    ``workers`` processes, default one per core; per-sample CPU transforms; pinned host-to-device copies)."""
    device = torch.device(device)
    c = dataset.image_shape[0]
    model = build_model("resnet18", dataset.num_classes, c, width).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    backend = make_backend("torch", dataset, device, workers=workers)
    idx = epoch_indices(dataset, images, seed)
    train = backend.loader("train", idx, batch_size, augment=True, shuffle=True, seed=seed)
    warm = backend.loader("train", idx[:WARMUP_BATCHES * batch_size], batch_size, augment=True, shuffle=True, seed=seed)
    test = backend.loader("test", np.arange(len(dataset.test)), batch_size)

    def epoch(e: int, loader=train) -> int:
        model.train()
        n, running = 0, 0.0
        for x, y in loader.epoch(e):
            out = model(x)
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item()  # the authors' per-step host sync
            n += int(y.shape[0])
        synchronize(device)
        return n

    @torch.no_grad()
    def evaluate() -> int:
        model.eval()
        n = correct = 0
        for x, y in test.epoch(0):
            correct += int((model(x).argmax(1) == y).sum().item())
            n += int(y.shape[0])
        return n

    return Loop("authors-fp32", batch_size, epoch, lambda: epoch(0, warm), evaluate, model, backend.workers)


def trainer_loop(variant: str, dataset, batch_size: int, device, images: int, width: int = 64,
                 seed: int = 0) -> Loop:
    """(b)-(d): the product's ``Trainer`` (bf16, channels-last, memory backend), eager or compiled."""
    device = torch.device(device)
    mode = COMPILE_MODES.get(variant)
    cfg = RunConfig(precision="bf16", compile=mode is not None, compile_mode=mode or "default",
                    batch_size=batch_size, width=width, seed=seed)
    if mode is not None:
        torch._dynamo.reset()  # fresh compile: no guards, shapes or CUDA-graph pools from another variant
    c = dataset.image_shape[0]
    model = build_model("resnet18", dataset.num_classes, c, width).to(device, memory_format=torch.channels_last)
    backend = make_backend("memory", dataset, device, channels_last=True)
    trainer = Trainer(model, cfg, device)
    idx = epoch_indices(dataset, images, seed)
    train = backend.loader("train", idx, batch_size, augment=True, shuffle=True, seed=seed)
    warm = backend.loader("train", idx[:WARMUP_BATCHES * batch_size], batch_size, augment=True, shuffle=True, seed=seed)
    test = backend.loader("test", np.arange(len(dataset.test)), cfg.eval_batch_size)

    def epoch(e: int, loader=train) -> int:
        n = trainer.train_epoch(loader, e, 0)["n"]  # reads its sums once, at the end
        synchronize(device)
        return n

    def evaluate() -> int:
        n = trainer.evaluate(test)["n"]
        synchronize(device)
        return n

    # compiled variants: their eval would compile a second (inference) graph; only eager eval is timed
    return Loop(variant, batch_size, epoch, lambda: epoch(0, warm), None if mode else evaluate, model)


def build_loop(variant: str, dataset, batch_size: int, device, images: int = EPOCH_IMAGES, width: int = 64,
               workers: int | None = None, seed: int = 0) -> Loop:
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant}: unknown; choose one of {', '.join(VARIANTS)}")
    if variant == "authors-fp32":
        return authors_loop(dataset, batch_size, device, images, width, workers, seed)
    return trainer_loop(variant, dataset, batch_size, device, images, width, seed)


# ----------------------------------------------------------------------------- measuring


def peak_memory(fn, device) -> tuple[int | None, int | None, int | None]:
    """(peak bytes allocated while ``fn()`` ran, bytes allocated before it, peak bytes reserved by the
    caching allocator); (None, None, None) off CUDA. The reserved peak also holds what CUDA graphs keep
    in their private pools, which replays use without it counting as allocated."""
    if torch.device(device).type != "cuda":
        fn()
        return None, None, None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(), before, torch.cuda.max_memory_reserved()


def images_per_s(fn, device, passes: int = 2) -> float:
    """Images per second of the fastest of ``passes`` calls of ``fn`` (which returns its image count)."""
    best = float("inf")
    for _ in range(passes):
        synchronize(torch.device(device))
        t0 = time.perf_counter()
        n = fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return 1.0 / best


def matmul_peak(n: int = 8192, repeats: int = 10) -> float:
    """Measured bf16 matrix-product rate in FLOP/s (n x n x n, random data, after 3 warm-ups)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1e3)


def spec_peak(device_name: str) -> float | None:
    """Data-sheet dense bf16 FLOP/s for ``device_name``, None for a device not in the table."""
    return next((peak for frag, peak in BF16_DENSE_PEAK if frag.lower() in device_name.lower()), None)


def extrapolate_protocol(train_images_per_s: float, eval_images_per_s: float | None = None,
                         loop: str = "this loop", eval_note: str = "measured") -> dict:
    """Wall time of the Table-1 protocol (``PROTOCOL_TRAIN_IMAGES`` training + ``PROTOCOL_EVAL_IMAGES``
    evaluation images) at the given rates: an extrapolation, not a measurement (no start-up, compile,
    unlearn or checkpoint time). Without an eval rate, evaluation is assumed to cost a forward pass
    (``FORWARD_FLOP / TRAIN_FLOP`` of a training image)."""
    assumed = eval_images_per_s is None
    if assumed:
        eval_images_per_s = train_images_per_s * TRAIN_FLOP / FORWARD_FLOP
    train_s = PROTOCOL_TRAIN_IMAGES / train_images_per_s
    eval_s = PROTOCOL_EVAL_IMAGES / eval_images_per_s
    total = train_s + eval_s
    rate = ("assumed at 3x the training rate (a forward pass)" if assumed
            else f"{eval_images_per_s:,.0f} images/s ({eval_note})")
    return {
        "kind": "extrapolation",
        "train_images": PROTOCOL_TRAIN_IMAGES, "eval_images": PROTOCOL_EVAL_IMAGES,
        "train_images_per_s": train_images_per_s, "eval_images_per_s": eval_images_per_s,
        "eval_rate_assumed": assumed,
        "train_s": train_s, "eval_s": eval_s, "total_s": total, "total_h": total / 3600,
        "text": (f"Extrapolated, not measured: {loop} would take about {total / 3600:.2f} h for the whole Table-1 "
                 f"protocol ({PROTOCOL_TRAIN_IMAGES / 1e6:.1f} M training images at {train_images_per_s:,.0f} "
                 f"images/s, {PROTOCOL_EVAL_IMAGES / 1e6:.1f} M evaluation images at {rate}); start-up, "
                 f"compilation, unlearn steps and checkpoints not included. Training alone: "
                 f"{train_s / 3600:.2f} h."),
    }


def extrapolate_authors_protocol(images_per_s_a: float, eval_images_per_s: float | None = None) -> dict:
    """The authors'-style loop (a) extrapolated to the whole Table-1 protocol; see ``extrapolate_protocol``."""
    return extrapolate_protocol(images_per_s_a, eval_images_per_s, "the authors'-style fp32 loop")


MEASURED = ("variant", "batch_size", "images_per_s", "epoch_s", "epoch_s_min", "rounds", "peak_memory_bytes",
            "peak_reserved_bytes", "resident_memory_bytes", "warmup_s", "eval_images_per_s", "cudagraph_skips",
            "loader_workers")


def results_path(device_name: str, out_dir: Path = RESULTS_DIR) -> Path:
    return results_writer.results_path("train", device_name, out_dir)


def earlier_runs(runs: list[dict], device_name: str, torch_version: str, out_dir: Path = RESULTS_DIR) -> list[dict]:
    """The measurements of an earlier results file of the same device and torch version for the
    (variant, batch size) pairs missing from ``runs``, so a benchmark split over several sessions
    (``-k 64``, then ``-k 512``) ends in one file."""
    path = results_path(device_name, out_dir)
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    if old.get("device") != device_name or old.get("torch") != torch_version:
        return []
    have = {(r["variant"], r["batch_size"]) for r in runs}
    return [{k: r.get(k) for k in MEASURED} for r in old.get("runs", []) if (r["variant"], r["batch_size"]) not in have]


def write_results(runs: list[dict], device_name: str, matmul_flops: float | None, out_dir: Path = RESULTS_DIR,
                  meta: dict | None = None) -> Path:
    """Write ``train-<device>.json`` and ``.md`` into ``out_dir``; returns the JSON's path.

    ``runs``: one dict per measured (variant, batch size) with the keys of ``MEASURED``
    (``eval_images_per_s`` None where not measured). Adds to each ``ratio_to_authors`` (None without
    a baseline at that batch size), ``train_tflops``, ``fraction_of_spec_peak`` and
    ``fraction_of_measured_peak``.
    """
    spec = spec_peak(device_name)
    base = {r["batch_size"]: r for r in runs if r["variant"] == BASELINE}
    out = []
    for r in runs:
        r = dict(r)
        flops = r["images_per_s"] * TRAIN_FLOP
        b = base.get(r["batch_size"])
        r["ratio_to_authors"] = r["images_per_s"] / b["images_per_s"] if b else None
        r["train_tflops"] = flops / 1e12
        r["fraction_of_spec_peak"] = flops / spec if spec else None
        r["fraction_of_measured_peak"] = flops / matmul_flops if matmul_flops else None
        out.append(r)
    order = {v: i for i, v in enumerate(VARIANTS)}
    out.sort(key=lambda r: (r["batch_size"], order.get(r["variant"], len(order))))
    paper = base.get(64)
    authors = extrapolate_authors_protocol(paper["images_per_s"], paper.get("eval_images_per_s")) if paper else None
    # the product's variants at the paper's batch, to plan a full run; compiled variants time no eval,
    # so they take the eager bf16 eval rate (the product compiles eval too: a conservative figure)
    at64 = {r["variant"]: r for r in out if r["batch_size"] == 64 and r["variant"] != BASELINE}
    eager_eval = at64.get("eager-bf16-cl", {}).get("eval_images_per_s")
    product = {v: extrapolate_protocol(r["images_per_s"], r.get("eval_images_per_s") or eager_eval, f"`{v}`",
                                       "measured" if r.get("eval_images_per_s") else "eager-bf16-cl's, measured")
               for v, r in at64.items()}
    payload = {
        "device": device_name,
        **(meta or {}),
        "model": "ResNet-18, CIFAR stem, 10 classes",
        "epoch_images": EPOCH_IMAGES,
        "variants": VARIANTS,
        "baseline_variant": BASELINE,
        "train_gflop_per_image": TRAIN_FLOP / 1e9,
        "forward_gflop_per_image": FORWARD_FLOP / 1e9,
        "peak_bf16_flops": {"spec_dense": spec, "measured_matmul_8192": matmul_flops},
        "runs": out,
        "authors_protocol_batch_64": authors,
        "product_protocol_batch_64": product,
    }
    return results_writer.write("train", device_name, payload, _markdown(payload), out_dir)


def _fmt(v, spec: str, scale: float = 1.0, missing: str = "-") -> str:
    return missing if v is None else format(v * scale, spec)


def _markdown(p: dict) -> list[str]:
    spec, measured = p["peak_bf16_flops"]["spec_dense"], p["peak_bf16_flops"]["measured_matmul_8192"]
    versions = ", ".join(f"{k} {p[k]}" for k in ("torch", "triton", "cuda", "python") if p.get(k))
    lines = [
        f"# Training loop on {p['device']}",
        "",
        f"{p['model']}; real CIFAR-10 (JPEG copy); {p['epoch_images']:,} training images per epoch, flip + "
        f"pad-4 crop, data loading included; median of timed epochs after a warm-up. {versions}.",
        "",
        *[f"- `{k}`: {v}" for k, v in p["variants"].items()],
        "",
        f"FLOP rate: images/s x {p['train_gflop_per_image']:.2f} GFLOP per training image (torch's FLOP counter; "
        "a multiply-add is 2 FLOP), against the "
        f"dense bf16 peak: data sheet {_fmt(spec, ',.0f', 1e-12, 'unknown')} TFLOP/s, measured 8192^3 bf16 "
        f"matrix product {_fmt(measured, ',.0f', 1e-12, 'not measured')} TFLOP/s. Peak memory: "
        "`torch.cuda.max_memory_allocated` over an epoch (model, optimizer, activations; for (b)-(d) also the "
        "whole uint8 dataset on the GPU, about 184 MB); reserved: `max_memory_reserved`, which also counts "
        "CUDA graphs' private pools. TF32 for fp32 (a): cuDNN "
        f"{p.get('cudnn_allow_tf32', '?')}, matmul {p.get('matmul_allow_tf32', '?')}; (a)'s DataLoader workers: "
        f"{next((r.get('loader_workers') for r in p['runs'] if r.get('loader_workers')), '?')}. Eval: 10,000 test images, (a) at the training batch size, "
        "(b) at batch 1024.",
        "",
        "| batch | variant | images/s | x (a) | peak GPU memory (MiB) | reserved (MiB) | TFLOP/s | % of bf16 spec "
        "| % of measured peak | eval images/s | warm-up (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in p["runs"]:
        lines.append(
            f"| {r['batch_size']} | {r['variant']} | {r['images_per_s']:,.0f} | {_fmt(r['ratio_to_authors'], '.2f')} | "
            f"{_fmt(r['peak_memory_bytes'], ',.0f', 2**-20)} | {_fmt(r.get('peak_reserved_bytes'), ',.0f', 2**-20)} | "
            f"{r['train_tflops']:.1f} | "
            f"{_fmt(r['fraction_of_spec_peak'], '.1f', 100)} | {_fmt(r['fraction_of_measured_peak'], '.1f', 100)} | "
            f"{_fmt(r.get('eval_images_per_s'), ',.0f')} | {_fmt(r.get('warmup_s'), '.1f')} |")
    if p["authors_protocol_batch_64"]:
        lines += ["", p["authors_protocol_batch_64"]["text"]]
    for e in p["product_protocol_batch_64"].values():
        lines += ["", e["text"]]
    for r in p["runs"]:
        if r.get("cudagraph_skips"):
            lines += ["", f"**{r['variant']} at batch {r['batch_size']}: inductor skipped CUDA graphs "
                          f"{r['cudagraph_skips']} time(s)**, so that row is not a CUDA-graph figure (the reason is "
                          "in the benchmark's log)."]
    return lines


# ----------------------------------------------------------------------------- the benchmark


@pytest.fixture(scope="module")
def cifar():
    if not CIFAR_JPEG.is_dir():
        pytest.skip(f"real CIFAR-10 JPEG copy not found at {CIFAR_JPEG} (set LURE_FAST_CIFAR to its folder)")
    return load_dataset(None, str(CIFAR_JPEG))


class Recorder(list):
    """The measured runs; the results files are rewritten after every measurement, so a session stopped
    mid-benchmark (a deadline's SIGTERM skips fixture teardown) keeps what it measured."""

    def __init__(self):
        super().__init__()
        self.peak = None

    def append(self, run: dict) -> None:
        super().append(run)
        import triton

        name = torch.cuda.get_device_name()
        if self.peak is None:
            self.peak = matmul_peak()
        meta = {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
                "python": platform.python_version(), "cpu_cores": len(os.sched_getaffinity(0)),
                "data": str(CIFAR_JPEG.resolve()), "measured": time.strftime("%Y-%m-%d"),
                # what the fp32 baseline (a) ran with: TF32 makes it faster than strict fp32
                "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
        runs = list(self)
        write_results(runs + earlier_runs(runs, name, torch.__version__), name, self.peak, meta=meta)


@pytest.fixture(scope="module")
def results():
    return Recorder()  # only measured runs are recorded (not --benchmark-disable smoke runs)


def measure(loop: Loop, benchmark, device) -> dict | None:
    """Warm up, one untimed epoch for the peak memory, timed epochs through ``benchmark``; the record for
    ``write_results``, or None when pytest-benchmark is disabled (a smoke run)."""
    from torch._dynamo.utils import counters
    skips = counters["inductor"]["cudagraph_skips"]
    t0 = time.perf_counter()
    loop.warm_up()  # compiles, records CUDA graphs
    warmup_s = time.perf_counter() - t0
    peak, resident, reserved = peak_memory(lambda: loop.epoch(0), device)  # one whole untimed epoch
    epochs = iter(range(1, 1_000))
    benchmark.group = f"batch {loop.batch_size}"
    benchmark.extra_info.update(variant=VARIANTS[loop.variant], epoch_images=EPOCH_IMAGES, peak_memory_bytes=peak)
    benchmark.pedantic(lambda: loop.epoch(next(epochs)), rounds=ROUNDS[loop.variant], iterations=1, warmup_rounds=0)
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    s = stats.stats
    return {"variant": loop.variant, "batch_size": loop.batch_size, "images_per_s": EPOCH_IMAGES / s.median,
            "epoch_s": s.median, "epoch_s_min": s.min, "rounds": s.rounds,
            "peak_memory_bytes": peak, "peak_reserved_bytes": reserved, "resident_memory_bytes": resident,
            "warmup_s": warmup_s, "loader_workers": loop.loader_workers,
            "eval_images_per_s": images_per_s(loop.evaluate, device) if loop.evaluate else None,
            # graphs inductor ran without CUDA graphs although asked to (its log says why); (d) only
            "cudagraph_skips": (counters["inductor"]["cudagraph_skips"] - skips
                                if COMPILE_MODES.get(loop.variant) == "reduce-overhead" else None)}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("batch_size", BATCHES)
def test_train_loop(benchmark, cifar, results, batch_size, variant):
    device = torch.device("cuda")
    torch.manual_seed(0)
    loop = build_loop(variant, cifar, batch_size, device)
    try:
        record = measure(loop, benchmark, device)
        if record is not None:
            results.append(record)
    finally:  # free the model, compiled graphs and CUDA-graph pools before the next variant, even after a failure
        del loop
        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()
