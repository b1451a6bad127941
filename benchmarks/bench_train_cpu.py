"""The training step on a CPU: the authors' style against lure-fast's CPU path, same images, same process.

    python -m pytest benchmarks/bench_train_cpu.py --benchmark-enable

ResNet-18 (CIFAR stem) on real CIFAR-10 (the JPEG copy at ``../shared/data/cifar10-jpeg`` or
``$LURE_FAST_CIFAR``), batch 64 (the paper's), at the paper's width (64) and a narrow one (16):

- ``authors-fp32`` (baseline): eager fp32, NCHW, a worker-less ``DataLoader`` with per-sample CPU
  transforms, ``loss.item()`` every step, glibc's default allocator (bench_train's loop (a), workers=0);
- ``lure-fast``: the product's ``Trainer`` as a CPU run sets it up: ``--precision auto`` (bf16 autocast
  where the CPU has native bf16; NCHW), foreach SGD, the ``memory`` backend, and the allocator told to
  keep freed memory (``prepare.keep_freed_memory``).

The baseline runs first: the allocator setting is process-wide and cannot be taken back. Each row is the
faster of two timed passes over ``IMAGES[width]`` images after a warm-up; a pass includes its data
loading and augmentation. Also recorded: the process's minor page faults and system CPU seconds over the
timed passes. Written to ``benchmarks/results/train-step-cpu-<cores>core.json`` and ``.md``. Nothing here asserts
a speed.
"""
from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parent))
import bench_train as T  # noqa: E402  (the loops and the data, shared with the GPU benchmark)
import results_writer  # noqa: E402

from lure_fast.config import RunConfig  # noqa: E402
from lure_fast.loaders import load_dataset, make_backend  # noqa: E402
from lure_fast.models import build_model  # noqa: E402
from lure_fast.prepare import keep_freed_memory  # noqa: E402
from lure_fast.train import Trainer, autocast_dtype, cpu_has_native_bf16  # noqa: E402

BATCH = 64
IMAGES = {64: 640, 16: 2560}   # about 20-40 s a pass on two cores
VARIANTS = ("authors-fp32", "lure-fast")


def device_name() -> str:
    return f"cpu-{os.cpu_count()}core"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def build(variant: str, dataset, width: int):
    cpu = torch.device("cpu")
    if variant == "authors-fp32":
        return T.authors_loop(dataset, BATCH, cpu, IMAGES[width], width, workers=0)
    if autocast_dtype(RunConfig(), cpu) is None:
        pytest.skip("this CPU has no native bf16: lure-fast trains fp32 here, the baseline's arithmetic")
    keep_freed_memory()
    cfg = RunConfig(batch_size=BATCH, width=width)  # precision auto: bf16 autocast here, NCHW (prepare.py)
    model = build_model("resnet18", dataset.num_classes, dataset.image_shape[0], width)
    trainer = Trainer(model, cfg, cpu)
    backend = make_backend("memory", dataset, cpu)
    idx = T.epoch_indices(dataset, IMAGES[width])
    train = backend.loader("train", idx, BATCH, augment=True, shuffle=True, seed=0)
    warm = backend.loader("train", idx[:T.WARMUP_BATCHES * BATCH], BATCH, augment=True, shuffle=True, seed=0)

    def epoch(e: int, loader=train) -> int:
        return trainer.train_epoch(loader, e, 0)["n"]

    return T.Loop("lure-fast", BATCH, epoch, lambda: epoch(0, warm), None, model)


def measure(variant: str, dataset, width: int) -> dict:
    loop = build(variant, dataset, width)
    loop.warm_up()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    rate = T.images_per_s(lambda: loop.epoch(1), "cpu", passes=2)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"variant": variant, "width": width, "batch_size": BATCH, "images": IMAGES[width],
            "images_per_s": rate, "minor_faults": r1.ru_minflt - r0.ru_minflt,
            "system_s": r1.ru_stime - r0.ru_stime, "user_s": r1.ru_utime - r0.ru_utime}


@pytest.fixture(scope="module")
def cifar():
    if not T.CIFAR_JPEG.is_dir():
        pytest.skip(f"real CIFAR-10 JPEG copy not found at {T.CIFAR_JPEG} (set LURE_FAST_CIFAR to its folder)")
    return load_dataset(None, str(T.CIFAR_JPEG))


def markdown(doc: dict) -> list[str]:
    lines = [f"# Training step on the CPU: {doc['cpu']}, {doc['threads']} threads", "",
             f"torch {doc['torch']}, Python {doc['python']}; native bf16: {doc['native_bf16']}; "
             f"ResNet-18, batch {BATCH}, real CIFAR-10 (JPEG copy); {doc['date']}, load average "
             f"{doc['load_average']}", "",
             "| width | variant | images/s | x authors | minor faults | system s |", "|---:|---|---:|---:|---:|---:|"]
    base = {r["width"]: r["images_per_s"] for r in doc["runs"] if r["variant"] == "authors-fp32"}
    for r in doc["runs"]:
        ratio = r["images_per_s"] / base[r["width"]] if r["width"] in base else None
        lines.append(f"| {r['width']} | {r['variant']} | {r['images_per_s']:.1f} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}'} | {r['minor_faults']:,} | {r['system_s']:.1f} |")
    return lines


def test_train_step_cpu(benchmark, cifar):
    torch.manual_seed(0)
    doc = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "python": platform.python_version(), "native_bf16": cpu_has_native_bf16(),
           "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": round(os.getloadavg()[0], 2), "runs": []}
    for variant in VARIANTS:  # the baseline first: the allocator setting cannot be undone
        for width in (64, 16):
            doc["runs"].append(measure(variant, cifar, width))
            results_writer.write("train-step", device_name(), doc, markdown(doc))
    benchmark.extra_info.update(doc)
    benchmark.pedantic(lambda: None, rounds=1)
