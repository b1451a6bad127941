"""Loader throughput on real CIFAR-10 (the shared JPEG copy): images per second of one training epoch
(flip + pad-4 crop, shuffled) for the ``ffcv``, ``torch`` (workers = usable cores, the baseline) and
``memory`` backends at batch 512 and 64, and what building a loader costs (FFCV: first build with
its compile, and reuse through ``set_indices``).

    .venv/bin/python -m pytest benchmarks/bench_loaders.py --benchmark-enable -p no:cacheprovider

Runs on the CUDA device when there is one (batches land on it), else on the CPU. Writes
``benchmarks/results/loaders-<host-kind>.{json,md}`` with the device description and the ratios to the
torch baseline. Measures; never asserts a speed.

Where the training-loop benchmark has written ``benchmarks/results/train-<host-kind>.json`` for the same
device (``benchmarks/bench_train.py``; on a GPU both name the file by the device's slug), the report also
checks that the loader keeps up: at each batch size, every backend's images/s over the training step's,
the fastest of the product's variants (eager-bf16-cl, compiled, compiled-cudagraphs) in that file; the
issue asks for at least ``LOADER_HEADROOM`` (2) on the GPU machine.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lure_fast.loaders import load_dataset, make_backend

sys.path.append(str(Path(__file__).resolve().parent))  # results_writer, also when a test loads this file by path
import results_writer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CIFAR_JPEG = Path(os.environ.get("LURE_FAST_CIFAR") or REPO / ".." / "shared" / "data" / "cifar10-jpeg")
RESULTS_DIR = results_writer.RESULTS_DIR
EPOCH_IMAGES = 25_000  # about a CIFAR-10 t=8 full-replay mega-batch 4 (22,500)
BATCHES = (512, 64)
BACKENDS = ("ffcv", "torch", "memory")
# the memory backend's CPU speed hangs on torch's intra-op threads (spin-waiting OpenMP threads collide
# with other work on a small machine), so it is also measured with one thread
THROUGHPUT = ("ffcv", "torch", "memory", "memory-1-thread")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# the training loop's variants the product runs (benchmarks/bench_train.py; not the authors' baseline)
PRODUCT_VARIANTS = ("eager-bf16-cl", "compiled", "compiled-cudagraphs")
LOADER_HEADROOM = 2.0  # loader images/s at least twice what the training step consumes
CORES = len(os.sched_getaffinity(0))

pytestmark = pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason=f"shared CIFAR-10 JPEG copy not found at {CIFAR_JPEG}")

RESULTS: dict = {"throughput": {}, "build": {}, "load_average": {}}


def ffcv_available() -> bool:
    try:
        from lure_fast.loaders import require_ffcv

        require_ffcv()
        return True
    except Exception:
        return False


def host_kind() -> str:
    if DEVICE.type == "cuda":
        return results_writer.device_slug(torch.cuda.get_device_name(0))
    return f"cpu-{CORES}core"


def device_description() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) // 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), None)
    versions = {}
    for pkg in ("torch", "numpy", "ffcv", "numba", "opencv-python-headless"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"host_kind": host_kind(), "device": str(DEVICE), "cpu": cpu, "usable_cores": CORES, "ram_gib": mem,
            "gpu": torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else None,
            "python": platform.python_version(), "versions": versions}


@pytest.fixture(scope="module")
def cifar():
    return load_dataset(path=str(CIFAR_JPEG))


@pytest.fixture(scope="module")
def backends(cifar):
    out = {"torch": make_backend("torch", cifar, DEVICE, workers=CORES),
           "memory": make_backend("memory", cifar, DEVICE)}
    if ffcv_available():
        out["ffcv"] = make_backend("ffcv", cifar, DEVICE)  # writes the cached .beton files on the first run
    return out


@pytest.fixture(scope="module", autouse=True)
def report():
    RESULTS["load_average"]["start"] = os.getloadavg()[0]  # other work on the machine skews the figures
    yield
    RESULTS["load_average"]["end"] = os.getloadavg()[0]
    if RESULTS["throughput"]:
        write_results()


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def run_epoch(loader, epoch: int) -> int:
    n = 0
    for _, y in loader.epoch(epoch):
        n += len(y)
    sync()
    return n


def record(benchmark, table: str, key: str, **extra) -> None:
    if benchmark.stats is None:  # --benchmark-disable: ran once as a smoke test, nothing measured
        return
    s = benchmark.stats.stats
    RESULTS[table][key] = {"median_s": s.median, "min_s": s.min, "max_s": s.max, "rounds": s.rounds, **extra}
    # rewritten after every measurement: a session stopped mid-benchmark (a deadline's SIGTERM skips
    # fixture teardown) keeps what it measured
    RESULTS["load_average"]["end"] = os.getloadavg()[0]
    if RESULTS["throughput"]:
        write_results()


def backend_or_skip(backends, name):
    if name not in backends:
        pytest.skip("ffcv is not importable here; run scripts/install_ffcv.sh .venv/bin/python")
    return backends[name]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", THROUGHPUT)
def test_training_epoch_throughput(benchmark, backends, name, batch):
    backend = backend_or_skip(backends, name.split("-")[0])
    threads = torch.get_num_threads()
    if name == "memory-1-thread":
        torch.set_num_threads(1)
    try:
        measure_epochs(benchmark, backend, name, batch)
    finally:
        torch.set_num_threads(threads)


def measure_epochs(benchmark, backend, name, batch):
    indices = np.random.default_rng(0).permutation(len(backend.dataset.train))[:EPOCH_IMAGES]
    loader = backend.loader("train", indices, batch, augment=True, shuffle=True, seed=0)
    epochs = iter(range(1, 1000))
    run_epoch(loader, 0)  # compile (ffcv), page cache, worker imports: not measured
    benchmark.extra_info.update(images=EPOCH_IMAGES, batch=batch, device=str(DEVICE))
    benchmark.pedantic(lambda: run_epoch(loader, next(epochs)), rounds=3, warmup_rounds=0)
    if benchmark.stats is not None:
        record(benchmark, "throughput", f"{name}/{batch}", backend=name, batch=batch, images=EPOCH_IMAGES,
               torch_threads=torch.get_num_threads(), images_per_s=EPOCH_IMAGES / benchmark.stats.stats.median)


@pytest.mark.parametrize("how", ["first", "reuse"])
@pytest.mark.parametrize("name", BACKENDS)
def test_loader_build_to_first_batch(benchmark, backends, cifar, name, how):
    """Seconds from asking for a loader (first: a fresh backend's first loader, FFCV compiling its pipeline;
    reuse: ``set_indices`` on a warm loader) to holding its first training batch."""
    backend = backend_or_skip(backends, name)
    rng = np.random.default_rng(1)
    warm = backend.loader("train", np.arange(5000), 64, augment=True, shuffle=True, seed=0)
    run_epoch(warm, 0)

    def fresh():
        b = make_backend(name, cifar, DEVICE, **({"workers": CORES} if name == "torch" else {}))
        return (b,), {}

    running = []

    def first_batch(b=None):
        if how == "first":
            loader = b.loader("train", rng.permutation(50_000)[:5000], 64, augment=True, shuffle=True, seed=0)
        else:
            loader = warm
            loader.set_indices(rng.permutation(50_000)[:5000])
        running.append(loader.epoch(0))
        next(running[-1])
        sync()

    def stop(*_):  # ending the abandoned epoch (worker shutdown) is not part of the build cost
        running.pop().close()

    if how == "first":
        benchmark.pedantic(first_batch, setup=fresh, teardown=stop, rounds=3)
    else:
        benchmark.pedantic(first_batch, teardown=stop, rounds=10, warmup_rounds=1)
    record(benchmark, "build", f"{name}/{how}", backend=name, how=how)


@pytest.fixture(scope="module")
def beton_cache():
    if not ffcv_available():
        pytest.skip("ffcv is not importable here; run scripts/install_ffcv.sh .venv/bin/python")
    with tempfile.TemporaryDirectory() as cache:
        yield cache


def test_beton_write(benchmark, cifar, beton_cache):
    """Seconds to write the CIFAR-10 train .beton (raw) and its checksum file into an empty cache, decoding
    the JPEG files in the writer processes (the ffcv path reads them from disk, not from memory)."""
    from lure_fast.loaders import beton_for

    benchmark.pedantic(lambda: beton_for(cifar, "train", cache_dir=beton_cache), rounds=1)
    record(benchmark, "build", "ffcv/write-train-beton", backend="ffcv", how="write")


def test_beton_open_cached(benchmark, cifar, beton_cache):
    """Seconds to reuse the cached CIFAR-10 train .beton as a new process does: ``beton_for`` finding the file
    and checking it (header, tables, labels, sampled pixels, and the SHA-256 of every byte; the per-process
    digest memo is emptied before each round)."""
    from lure_fast.loaders import beton_for, check

    beton_for(cifar, "train", cache_dir=beton_cache)  # written by test_beton_write, or now
    benchmark.pedantic(lambda: beton_for(cifar, "train", cache_dir=beton_cache),
                       setup=check._DIGESTS.clear, rounds=5)
    record(benchmark, "build", "ffcv/open-cached-train-beton", backend="ffcv", how="open")


def fastest_training(train_doc: dict) -> dict[int, dict]:
    """Batch size -> the fastest of ``PRODUCT_VARIANTS`` in a ``train-*.json`` of bench_train.py
    (``{"variant", "images_per_s"}``); batch sizes without a product variant are left out."""
    best: dict[int, dict] = {}
    for run in train_doc.get("runs", []):
        if run.get("variant") not in PRODUCT_VARIANTS or not run.get("images_per_s"):
            continue
        b = int(run["batch_size"])
        if b not in best or run["images_per_s"] > best[b]["images_per_s"]:
            best[b] = {"variant": run["variant"], "images_per_s": float(run["images_per_s"])}
    return best


def loader_vs_training(throughput: dict, train_doc: dict | None, source: str) -> dict:
    """Each measured loader (``RESULTS["throughput"]`` rows) against the training step at its batch size.

    ``train_doc``: the training-loop results (None when ``source`` does not exist). Returns ``source``, a
    ``note`` and ``rows`` of backend, batch, loader and training images/s, the training variant, ``ratio``
    (loader / training, None without a training figure at that batch) and ``meets`` (ratio >= headroom)."""
    out = {"source": source, "needed_ratio": LOADER_HEADROOM, "rows": []}
    if train_doc is None:
        out["note"] = (f"no training-loop results for this device ({source} does not exist): run "
                       "benchmarks/bench_train.py here first to check the loaders against the training step")
        return out
    best = fastest_training(train_doc)
    out.update(training_device=train_doc.get("device"), training_measured=train_doc.get("measured"),
               training_torch=train_doc.get("torch"),
               training={str(b): v for b, v in sorted(best.items())})
    order = {name: i for i, name in enumerate(THROUGHPUT)}
    for row in sorted(throughput.values(), key=lambda r: (-r["batch"], order.get(r["backend"], len(order)))):
        t = best.get(int(row["batch"]))
        ratio = row["images_per_s"] / t["images_per_s"] if t else None
        out["rows"].append({"backend": row["backend"], "batch": row["batch"],
                            "loader_images_per_s": row["images_per_s"],
                            "training_variant": t["variant"] if t else None,
                            "training_images_per_s": t["images_per_s"] if t else None,
                            "ratio": ratio, "meets": None if ratio is None else ratio >= LOADER_HEADROOM})
    missing = sorted({r["batch"] for r in out["rows"] if r["ratio"] is None})
    out["note"] = (f"training figures from {source} (device {train_doc.get('device')}, measured "
                   f"{train_doc.get('measured', '?')}, torch {train_doc.get('torch', '?')}): at each batch size the "
                   f"fastest of {', '.join(PRODUCT_VARIANTS)}" +
                   (f"; none at batch {', '.join(map(str, missing))}" if missing else ""))
    return out


def loader_vs_training_markdown(check: dict) -> list[str]:
    lines = ["", f"Loader against the training step (the issue asks for at least {check['needed_ratio']:g} x the "
                 "images/s the training step consumes on the GPU machine): " + check["note"] + "."]
    if not check["rows"]:
        return lines
    lines += ["", "| backend | batch | loader images/s | training variant | training images/s | loader / training "
                  f"| >= {check['needed_ratio']:g} |", "|---|---:|---:|---|---:|---:|---|"]
    for r in check["rows"]:
        if r["ratio"] is None:
            lines.append(f"| {r['backend']} | {r['batch']} | {r['loader_images_per_s']:,.0f} | - | - | - | - |")
        else:
            lines.append(f"| {r['backend']} | {r['batch']} | {r['loader_images_per_s']:,.0f} | {r['training_variant']} "
                         f"| {r['training_images_per_s']:,.0f} | {r['ratio']:.2f} | {'yes' if r['meets'] else 'NO'} |")
    return lines


def training_results(kind: str) -> tuple[dict | None, str]:
    """The training-loop results file of this device (bench_train.py's ``train-<slug>.json``) and its path
    relative to the repository; None when there is none."""
    path = results_writer.results_path("train", kind, RESULTS_DIR)
    rel = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    return (json.loads(path.read_text()) if path.is_file() else None), rel


def write_results() -> None:
    tp, build = RESULTS["throughput"], RESULTS["build"]
    for row in tp.values():
        base = tp.get(f"torch/{row['batch']}")
        row["ratio_to_torch"] = row["images_per_s"] / base["images_per_s"] if base else None
    doc = {"benchmark": "benchmarks/bench_loaders.py", "date": datetime.date.today().isoformat(),
           "data": "CIFAR-10 JPEG copy (../shared/data/cifar10-jpeg), decoded once into memory; ffcv reads raw .beton",
           "workload": f"one training epoch of {EPOCH_IMAGES:,} shuffled train images, flip + pad-4 crop, float [0,1] "
                       f"batches on {DEVICE}; median of 3 epochs after one unmeasured epoch",
           "baseline": f"torch backend (DataLoader, {CORES} workers, per-sample CPU transforms)",
           "device": device_description(), "load_average_1min": RESULTS["load_average"],
           "throughput": tp, "loader_build": build,
           "loader_vs_training": loader_vs_training(tp, *training_results(host_kind()))}
    d = doc["device"]
    lines = [f"# Loader throughput: {d['host_kind']}", "",
             f"{d['cpu']}, {d['usable_cores']} usable cores, {d['ram_gib']} GiB RAM"
             + (f", {d['gpu']}" if d["gpu"] else ", no GPU") + f"; Python {d['python']}, "
             + ", ".join(f"{k} {v}" for k, v in d["versions"].items()) + f". Measured {doc['date']}.", "",
             f"Workload: {doc['workload']}. Baseline: {doc['baseline']}. 1-minute load average "
             f"{RESULTS['load_average']['start']:.1f} at the start, {RESULTS['load_average']['end']:.1f} at the end "
             "(other processes on the machine slow every backend).", "",
             "| backend | batch | images/s | x torch | torch intra-op threads (main process) |",
             "|---|---:|---:|---:|---:|"]
    for row in sorted(tp.values(), key=lambda r: (-r["batch"], THROUGHPUT.index(r["backend"]))):
        ratio = f"{row['ratio_to_torch']:.1f}" if row["ratio_to_torch"] else "-"
        lines.append(f"| {row['backend']} | {row['batch']} | {row['images_per_s']:,.0f} | {ratio} | "
                     f"{row['torch_threads']} |")
    lines += ["", "Loader build, seconds to the first batch of 5,000 shuffled images at batch 64 (median):", "",
              "| backend | first (fresh backend; ffcv compiles) | reuse (set_indices) |", "|---|---:|---:|"]
    for name in BACKENDS:
        first, reuse = build.get(f"{name}/first"), build.get(f"{name}/reuse")
        if first or reuse:
            lines.append(f"| {name} | {first['median_s']:.3f} | {reuse['median_s']:.4f} |" if first and reuse else
                         f"| {name} | {first['median_s'] if first else '-'} | {reuse['median_s'] if reuse else '-'} |")
    if "ffcv/write-train-beton" in build:
        lines += ["", f"Writing the 50,000-image train .beton (raw, {CORES} writer processes, each decoding its share "
                      "of the JPEG files) into an empty cache: "
                      f"{build['ffcv/write-train-beton']['median_s']:.1f} s."]
    if "ffcv/open-cached-train-beton" in build:
        lines += ["", "Reusing it from the cache in a new process (checks, SHA-256 of every byte): "
                      f"{build['ffcv/open-cached-train-beton']['median_s']:.2f} s."]
    lines += loader_vs_training_markdown(doc["loader_vs_training"])
    results_writer.write("loaders", host_kind(), doc, lines, RESULTS_DIR)
