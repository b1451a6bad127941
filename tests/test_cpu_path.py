"""The CPU path: bf16 autocast and channels-last where the CPU computes bf16 natively, fp32 elsewhere;
the allocator keeps freed memory; and a bf16 run learns as well as an fp32 one."""
import statistics
import sys

import pytest
import torch

from lure_fast import config as C
from lure_fast import prepare as P
from lure_fast import train as T
from lure_fast.run import run

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_cpus_native_bf16(monkeypatch, native):
    monkeypatch.setattr(T, "cpu_has_native_bf16", lambda: native)
    assert T.autocast_dtype(C.RunConfig(), CPU) == (torch.bfloat16 if native else None)
    assert T.autocast_dtype(C.RunConfig(precision="fp32"), CPU) is None
    assert T.autocast_dtype(C.RunConfig(precision="bf16"), CPU) == torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_a_cpu_run_records_its_precision_and_stays_nchw(tmp_path, monkeypatch, native):
    monkeypatch.setattr(T, "cpu_has_native_bf16", lambda: native)
    s = P.prepare(C.resolve({"preset": "tiny", "device": "cpu"}), CPU)
    conv = next(m for m in s.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 3)
    assert conv.weight.is_contiguous() and not conv.weight.is_contiguous(memory_format=torch.channels_last)
    res = run(C.resolve({"preset": "tiny", "device": "cpu"}), str(tmp_path / "r"), progress=False)
    assert res["precision"] == ("bf16" if native else "fp32")


def test_bf16_cpu_runs_with_odd_batches_complete(tmp_path):
    """12x12 images in mega-batches of 45 and 90 training images at batch 32 end in batches of 13 and 26:
    under bf16 autocast, a channels-last model corrupted the heap in backward there (torch 2.14.1,
    AVX512-BF16), killing the process; the CPU path stays NCHW. In a fresh process, so a crash fails only
    this test."""
    from lf_helpers import run_cli
    from test_cli import write_pngs
    data = write_pngs(tmp_path / "pngs")
    p = run_cli("run", "--data", str(data), "--loader", "memory", "--preset", "tiny", "--megabatch-size", "50",
                "--precision", "bf16", "--device", "cpu", "--method", "lure", "--quiet", "--out", str(tmp_path / "r"))
    assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_allocator_keeps_freed_memory():
    import ctypes
    assert P.keep_freed_memory()
    # glibc's mallinfo2 reports no mmapped blocks for a large allocation made afterwards
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("this glibc has no mallinfo2")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                  "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2().hblkhd
    t = torch.empty(64 << 20, dtype=torch.uint8)  # 64 MB: mmapped under glibc's defaults
    t.fill_(1)
    assert libc.mallinfo2().hblkhd == before  # no new mmapped block: it came from the heap
    del t


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two shared cores mostly wait for each other
    yield
    torch.set_num_threads(threads)


def test_a_bf16_run_learns_as_well_as_fp32(tmp_path, one_thread):
    """Three seeds each on the embedded digits (tests/test_learning.py's short run): bf16's mean test
    accuracy is within twice the seeds' spread (at least 2 points) of fp32's, and both far above chance."""
    acc = {}
    for precision in ("fp32", "bf16"):
        acc[precision] = [run(C.resolve({"megabatches": 2, "epochs": 3, "batch_size": 64, "width": 8,
                                         "augment": False, "method": "bl", "seed": s, "device": "cpu",
                                         "precision": precision, "checkpoint_every": 0}),
                              str(tmp_path / f"{precision}-{s}"), progress=False)["summary"]["test_acc"]
                          for s in (0, 1, 2)]
    mean = {p: statistics.fmean(v) for p, v in acc.items()}
    spread = max(statistics.stdev(acc["fp32"]), statistics.stdev(acc["bf16"]), 2.0)
    assert min(mean.values()) > 80, acc
    assert mean["bf16"] >= mean["fp32"] - 2 * spread, acc
    print("test accuracy by precision:", acc)
