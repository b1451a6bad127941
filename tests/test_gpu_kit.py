"""The GPU session kit without a GPU: the compressed repack of the packed CIFAR-10 copy gives back the same
files, byte for byte; the jobs report reads compare's table.md; the loader benchmark's check against the
training step; the session script's step list. Nothing is timed."""
import importlib.util
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lf_helpers import REPO, SHARED


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


repack_npz = _load("lure_fast_repack_npz", REPO / "scripts" / "repack_npz.py")
jobs_report = _load("lure_fast_jobs_report", REPO / "scripts" / "jobs_report.py")


def pack_tool():
    """``pack_imagefolder.py`` from ../shared (or a .carry/ filled by gpu_bundle.sh); skips without one."""
    for path in (SHARED / "tools" / "pack_imagefolder.py", REPO / ".carry" / "pack_imagefolder.py"):
        if path.is_file():
            return _load("lure_fast_pack_imagefolder", path)
    pytest.skip("pack_imagefolder.py not found (../shared/tools is absent)")


def tiny_imagefolder(root: Path) -> dict[str, bytes]:
    """train/ and test/ with two classes of small JPEG and PNG files; returns relative path -> bytes."""
    rng = np.random.default_rng(0)
    files = {}
    for split, per_class in (("train", 3), ("test", 2)):
        for c in ("cat", "dog"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                fmt = "PNG" if i == 0 else "JPEG"
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, fmt)
                name = f"{c}{i}.{'png' if fmt == 'PNG' else 'jpg'}"
                (folder / name).write_bytes(buf.getvalue())
                files[f"{split}/{c}/{name}"] = buf.getvalue()
    return files


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- repack_npz.py


def test_repacked_npz_unpacks_to_the_same_files(tmp_path):
    tool = pack_tool()
    original = tiny_imagefolder(tmp_path / "tree")
    tool.pack(str(tmp_path / "tree"), str(tmp_path / "packed.npz"))
    sizes = repack_npz.repack(str(tmp_path / "packed.npz"), str(tmp_path / "repacked.npz"))
    assert sizes["dst_bytes"] == (tmp_path / "repacked.npz").stat().st_size
    with zipfile.ZipFile(tmp_path / "repacked.npz") as z:  # really compressed, every member
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
    assert repack_npz.differences(str(tmp_path / "packed.npz"), str(tmp_path / "repacked.npz")) == []
    tool.unpack(str(tmp_path / "repacked.npz"), str(tmp_path / "unpacked"))
    assert tree_bytes(tmp_path / "unpacked") == original


def save(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_differences_names_every_kind_of_mismatch(tmp_path):
    base = {"bytes": np.arange(10, dtype=np.uint8), "labels": np.array([0, 1], dtype=np.int16),
            "names": np.array([b"a.jpg", b"b.jpg"]), "classes": np.array(["cat", "dog"])}
    a = save(tmp_path / "a.npz", **base)
    assert repack_npz.differences(a, save(tmp_path / "same.npz", **base)) == []
    changed = {**base, "bytes": np.r_[np.arange(9, dtype=np.uint8), np.uint8(99)]}
    assert repack_npz.differences(a, save(tmp_path / "v.npz", **changed)) == ["bytes: values differ (1 of 10 elements)"]
    retyped = {**base, "labels": base["labels"].astype(np.int64)}
    assert repack_npz.differences(a, save(tmp_path / "t.npz", **retyped)) == ["labels: dtype int16 != int64"]
    reshaped = {**base, "bytes": base["bytes"].reshape(2, 5)}
    assert repack_npz.differences(a, save(tmp_path / "s.npz", **reshaped)) == ["bytes: shape (10,) != (2, 5)"]
    fewer = {k: v for k, v in base.items() if k != "names"}
    assert repack_npz.differences(a, save(tmp_path / "m.npz", **fewer)) == [f"names: only in {a}"]


def test_repack_refuses_a_copy_that_differs(tmp_path, monkeypatch, capsys):
    src = save(tmp_path / "src.npz", bytes=np.arange(100, dtype=np.uint8), labels=np.zeros(3, dtype=np.int16))
    dst = tmp_path / "dst.npz"

    def corrupting(s, d):  # a writer that loses a byte's value
        np.savez_compressed(d, bytes=np.r_[np.arange(99, dtype=np.uint8), np.uint8(7)],
                            labels=np.zeros(3, dtype=np.int16))

    monkeypatch.setattr(repack_npz, "write_compressed", corrupting)
    with pytest.raises(repack_npz.RepackError, match="bytes: values differ"):
        repack_npz.repack(src, str(dst))
    assert not dst.exists()  # a wrong copy is never left behind
    assert repack_npz.main([src, str(dst)]) == 1
    assert "bytes: values differ" in capsys.readouterr().err and not dst.exists()


def test_repack_main_writes_a_checked_copy(tmp_path, capsys):
    src = save(tmp_path / "src.npz", bytes=np.zeros(1000, dtype=np.uint8), classes=np.array(["a", "b"]))
    assert repack_npz.main([src, str(tmp_path / "dst.npz")]) == 0
    assert "every array checked equal" in capsys.readouterr().out
    assert (tmp_path / "dst.npz").stat().st_size < Path(src).stat().st_size
    assert repack_npz.main([src, src]) == 1  # never over its own source
    assert repack_npz.main([src]) == 2


# ----------------------------------------------------------------------------- jobs_report.py


def fake_table(folder: Path, wall: float, runs: int, jobs: int, rate: str) -> None:
    folder.mkdir(parents=True)
    (folder / "table.md").write_text(
        "cifar10-jpeg, resnet18, 8 mega-batches\n\n| Method | Test Acc (↑) |\n|---|---:|\n| BL | 60.00 |\n\n"
        f"Wall time {wall} s for {runs} runs ({jobs} at a time): {rate} training images/s in aggregate.\n")


def test_parse_wall_line():
    line = "Wall time 123.4 s for 4 runs (1 at a time): 12,345 training images/s in aggregate."
    assert jobs_report.parse_wall_line(f"| table |\n\n{line}\n") == {
        "wall_s": 123.4, "runs": 4, "jobs": 1, "images_per_s": 12345.0, "line": line}
    assert jobs_report.parse_wall_line("no such line") is None


def test_jobs_report_ratio_and_files(tmp_path, capsys):
    fake_table(tmp_path / "seq", 400.0, 4, 1, "10,000")
    fake_table(tmp_path / "conc", 160.0, 4, 4, "25,000")
    rc = jobs_report.main(["--device", "NVIDIA H100 80GB HBM3", "--out-dir", str(tmp_path / "results"),
                           "--run", "sequential", str(tmp_path / "seq"), "lure-fast compare --jobs 1",
                           "--run", "concurrent", str(tmp_path / "conc"), "lure-fast compare --jobs 4"])
    assert rc == 0
    doc = json.loads((tmp_path / "results" / "compare-jobs-nvidia-h100-80gb-hbm3.json").read_text())
    assert doc["device"] == "NVIDIA H100 80GB HBM3"
    assert [r["command"] for r in doc["runs"]] == ["lure-fast compare --jobs 1", "lure-fast compare --jobs 4"]
    assert [(r["wall_s"], r["images_per_s"], r["jobs"]) for r in doc["runs"]] == [(400.0, 10000.0, 1),
                                                                                   (160.0, 25000.0, 4)]
    assert doc["ratios"]["concurrent/sequential"] == pytest.approx({"images_per_s": 2.5, "wall_s": 0.4})
    md = (tmp_path / "results" / "compare-jobs-nvidia-h100-80gb-hbm3.md").read_text()
    assert "| sequential | 1 | 4 | 400.0 | 10,000 | `lure-fast compare --jobs 1` |" in md
    assert "concurrent / sequential: 2.50 x the aggregate images/s (wall time 0.40 x)." in md
    assert "| BL | 60.00 |" in md  # each run's own table follows
    assert "compare-jobs-nvidia-h100-80gb-hbm3.md" in capsys.readouterr().out


def test_jobs_report_unfinished_run(tmp_path):
    fake_table(tmp_path / "seq", 400.0, 4, 1, "10,000")
    rc = jobs_report.main(["--device", "cpu", "--out-dir", str(tmp_path),
                           "--run", "sequential", str(tmp_path / "seq"), "a",
                           "--run", "concurrent", str(tmp_path / "conc"), "b"])
    assert rc == 1
    doc = json.loads((tmp_path / "compare-jobs-cpu.json").read_text())
    assert [r["finished"] for r in doc["runs"]] == [True, False] and doc["ratios"] == {}
    assert "| concurrent | - | - | unfinished | - | `b` |" in (tmp_path / "compare-jobs-cpu.md").read_text()


# ----------------------------------------------------------------------------- bench_loaders.py's check


@pytest.fixture(scope="module")
def bench_loaders():
    return _load("lure_fast_bench_loaders", REPO / "benchmarks" / "bench_loaders.py")


TRAIN_DOC = {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "measured": "2026-11-21", "runs": [
    {"variant": "authors-fp32", "batch_size": 64, "images_per_s": 90_000.0},  # not the product's: ignored
    {"variant": "eager-bf16-cl", "batch_size": 64, "images_per_s": 10_000.0},
    {"variant": "compiled", "batch_size": 64, "images_per_s": 14_000.0},
    {"variant": "compiled-cudagraphs", "batch_size": 64, "images_per_s": 20_000.0},
    {"variant": "eager-bf16-cl", "batch_size": 512, "images_per_s": 30_000.0},
    {"variant": "compiled", "batch_size": 512, "images_per_s": 25_000.0},
]}
THROUGHPUT = {
    "torch/512": {"backend": "torch", "batch": 512, "images_per_s": 45_000.0},
    "memory/512": {"backend": "memory", "batch": 512, "images_per_s": 600_000.0},
    "memory/64": {"backend": "memory", "batch": 64, "images_per_s": 100_000.0},
    "ffcv/64": {"backend": "ffcv", "batch": 64, "images_per_s": 39_000.0},
    "memory/256": {"backend": "memory", "batch": 256, "images_per_s": 1.0},  # no training figure at 256
}


def test_fastest_training_variant_per_batch(bench_loaders):
    assert bench_loaders.fastest_training(TRAIN_DOC) == {
        64: {"variant": "compiled-cudagraphs", "images_per_s": 20_000.0},
        512: {"variant": "eager-bf16-cl", "images_per_s": 30_000.0}}


def test_loader_over_training_ratios(bench_loaders):
    check = bench_loaders.loader_vs_training(THROUGHPUT, TRAIN_DOC, "benchmarks/results/train-x.json")
    rows = {(r["backend"], r["batch"]): r for r in check["rows"]}
    assert rows["memory", 512]["ratio"] == pytest.approx(20.0) and rows["memory", 512]["meets"] is True
    assert rows["torch", 512]["ratio"] == pytest.approx(1.5) and rows["torch", 512]["meets"] is False
    assert rows["torch", 512]["training_variant"] == "eager-bf16-cl"
    assert rows["ffcv", 64]["ratio"] == pytest.approx(1.95) and rows["ffcv", 64]["meets"] is False
    assert rows["memory", 64]["training_variant"] == "compiled-cudagraphs" and rows["memory", 64]["meets"] is True
    assert rows["memory", 256]["ratio"] is None and rows["memory", 256]["meets"] is None
    assert [r["batch"] for r in check["rows"]] == [512, 512, 256, 64, 64]  # largest batch first
    assert "train-x.json" in check["note"] and "none at batch 256" in check["note"]
    md = "\n".join(bench_loaders.loader_vs_training_markdown(check))
    assert "| torch | 512 | 45,000 | eager-bf16-cl | 30,000 | 1.50 | NO |" in md
    assert "| memory | 512 | 600,000 | eager-bf16-cl | 30,000 | 20.00 | yes |" in md
    assert "| memory | 256 | 1 | - | - | - | - |" in md


def test_loader_check_without_a_training_file(bench_loaders, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_loaders, "RESULTS_DIR", tmp_path)
    doc, source = bench_loaders.training_results("nvidia-h100-80gb-hbm3")
    assert doc is None and source.endswith("train-nvidia-h100-80gb-hbm3.json")
    check = bench_loaders.loader_vs_training(THROUGHPUT, doc, source)
    assert check["rows"] == [] and "does not exist" in check["note"]
    assert "does not exist" in "\n".join(bench_loaders.loader_vs_training_markdown(check))


def test_write_results_reads_the_training_file_of_the_device(bench_loaders, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_loaders, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(bench_loaders, "RESULTS", {"throughput": json.loads(json.dumps(THROUGHPUT)), "build": {},
                                                   "load_average": {"start": 0.5, "end": 0.7}})
    for row in bench_loaders.RESULTS["throughput"].values():
        row["torch_threads"] = 1
    kind = bench_loaders.host_kind()
    (tmp_path / f"train-{kind}.json").write_text(json.dumps(TRAIN_DOC))
    bench_loaders.write_results()
    doc = json.loads((tmp_path / f"loaders-{kind}.json").read_text())
    assert doc["loader_vs_training"]["source"].endswith(f"train-{kind}.json")
    assert len(doc["loader_vs_training"]["rows"]) == len(THROUGHPUT)
    md = (tmp_path / f"loaders-{kind}.md").read_text()
    assert "Loader against the training step" in md and "| memory | 64 | 100,000 | compiled-cudagraphs |" in md


# ----------------------------------------------------------------------------- the shell scripts


@pytest.mark.parametrize("script", ["gpu_session.sh", "gpu_bundle.sh", "check_gpu_versions.sh"])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(REPO / "scripts" / script)], check=True)


def test_session_refuses_an_unknown_step_before_any_work(tmp_path):
    p = subprocess.run(["bash", str(REPO / "scripts" / "gpu_session.sh")], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), "STEPS": "tests paperz"})
    assert p.returncode == 2 and "unknown step 'paperz'" in p.stderr
    assert not (tmp_path / "out").exists()


def session(tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_session.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), **env})


def test_session_refuses_an_unknown_mode(tmp_path):
    p = session(tmp_path, MODE="detached")
    assert p.returncode == 2 and "unknown MODE 'detached'" in p.stderr and not (tmp_path / "out").exists()


def test_attach_without_a_worker_says_so(tmp_path):
    p = session(tmp_path, MODE="attach", BG=str(tmp_path / "bg"))
    assert p.returncode == 4 and "no detached session" in p.stderr and "MODE=detach" in p.stderr
    assert "no detached session" in (tmp_path / "out" / "summary.txt").read_text()


def test_detach_leaves_a_running_worker_alone(tmp_path):
    bg = tmp_path / "bg"
    (bg / "out").mkdir(parents=True)
    (bg / "out" / "summary.txt").write_text("kernels rc=0 seconds=100\n")
    worker = subprocess.Popen(["sleep", "60"])  # stands for a worker under way
    try:
        (bg / "worker.pid").write_text(f"{worker.pid}\n")
        p = session(tmp_path, MODE="detach", BG=str(bg))
        assert p.returncode == 2 and f"already running in {bg} (pid {worker.pid})" in p.stderr
        assert (bg / "out" / "summary.txt").read_text() == "kernels rc=0 seconds=100\n"  # nothing lost
        # attach follows it for WAIT_S and brings back what there is, saying it still runs
        p = session(tmp_path, MODE="attach", BG=str(bg), WAIT_S="0")
        assert p.returncode == 3, p.stdout + p.stderr
        assert "[attach] kernels rc=0" in p.stdout and "still running" in p.stdout
        assert (tmp_path / "out" / "summary.txt").read_text() == "kernels rc=0 seconds=100\n"
        assert (tmp_path / "out" / "results.tar.gz").stat().st_size > 0
    finally:
        worker.kill()
        worker.wait()
    (bg / "done").write_text("0\n")  # a finished worker: attach returns its status at once
    p = session(tmp_path, MODE="attach", BG=str(bg), WAIT_S="100")
    assert p.returncode == 0 and "the worker finished (rc=0)" in p.stdout
