"""One writer per run folder: a second run, compare or resume on a folder in use is refused with one line
naming the process that holds it; the lock dies with its process, so a killed run resumes at once."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lure_fast.checkpoint import RunError
from lure_fast.cli import main
from lure_fast.rundir import LOCK, FolderLock, prepare_out

from lf_helpers import REPO, run_cli

TINY = ["--preset", "tiny", "--quiet", "--threads", "1"]


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv", [["run", *TINY], ["run", *TINY, "--resume"], ["run", *TINY, "--overwrite"],
                                  ["compare", "--methods", "bl", *TINY], ["compare", "--methods", "bl", *TINY,
                                                                          "--resume"]])
def test_a_folder_in_use_is_refused_naming_the_holder(tmp_path, argv):
    out = tmp_path / "run"
    out.mkdir()
    (out / "progress.json").write_text("{}\n")  # something to resume, or to keep
    lock = prepare_out(str(out), resume=True, overwrite=False)  # this test process is the writer
    try:
        before = files(out)
        p = run_cli(*argv, "--out", str(out))
        assert p.returncode == 2, p.stderr
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
        assert f"--out {out}: another lure-fast process (pid {os.getpid()}) is writing there" in p.stderr
        assert files(out) == before
    finally:
        lock.release()


def test_a_method_folder_in_use_stops_compare_with_one_line(tmp_path):
    out = tmp_path / "cmp"
    (out / "bl").mkdir(parents=True)
    lock = FolderLock(str(out / "bl"))
    try:
        p = run_cli("compare", "--methods", "bl", *TINY, "--out", str(out), "--resume")
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert f"--out {out / 'bl'}: another lure-fast process" in p.stderr
    finally:
        lock.release()


def test_two_concurrent_runs_on_one_folder_one_refused_the_other_intact(tmp_path, capsys):
    args = ["run", "--method", "lure", *TINY, "--megabatches", "4", "--epochs", "4"]
    ref = tmp_path / "ref"
    assert run_cli(*args, "--out", str(ref)).returncode == 0
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "lure_fast", *args, "--out", str(out)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not ((out / LOCK).exists() and (out / LOCK).read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.time() < deadline, "the first run never took its lock"
            time.sleep(0.01)
        assert main([*args, "--out", str(out)]) == 2  # the second writer, from this process
        assert first.poll() is None, "the first run ended before the second started: nothing was tested"
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"another lure-fast process (pid {first.pid}) is writing there" in err
        assert main([*args, "--out", str(out), "--overwrite"]) == 2  # nor may it replace the run under way
        assert main([*args, "--out", str(out), "--resume"]) == 2
    finally:
        stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr

    def comparable(res):
        return [{k: v for k, v in m.items() if "seconds" not in k} for m in res["megabatches"]]

    assert comparable(json.loads((out / "results.json").read_text())) == \
        comparable(json.loads((ref / "results.json").read_text()))
    assert sorted(os.listdir(out)) == ["model.safetensors", "results.json"]  # the lock file went with its holder


def test_a_killed_runs_folder_resumes_at_once(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--method", "lure", *TINY, "--checkpoint-interval", "0", "--out", str(out)]
    killed = run_cli(*args, env={"LURE_FAST_FAULT": "epoch_end:2:0"})
    assert killed.returncode == -signal.SIGKILL
    dead = int((out / LOCK).read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(dead, 0)
    t0 = time.perf_counter()
    lock = prepare_out(str(out), resume=True, overwrite=False)  # taken at once: no wait, no stale-lock step
    assert time.perf_counter() - t0 < 1
    lock.release()
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "results.json").exists()


def test_a_forked_worker_does_not_keep_the_lock(tmp_path):
    """A worker forked while the lock is held (decoders, loader workers) closes its copy: if the run is
    killed and the worker lingers, the folder is still free."""
    lock = FolderLock(str(tmp_path))
    ready, started = os.pipe()
    child = os.fork()
    if child == 0:  # the worker (fork's hooks have run by now): outlives its parent's hold on the lock
        os.write(started, b"1")
        time.sleep(30)
        os._exit(0)
    try:
        assert os.read(ready, 1) == b"1"
        lock.release()  # as the kernel does when the run dies
        again = FolderLock(str(tmp_path))
        again.release()
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(ready)
        os.close(started)


def test_the_lock_file_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("999999\n")  # left by a run that ended
    with pytest.raises(RunError, match="nothing to resume there"):
        prepare_out(str(out), resume=True, overwrite=False)
    assert main(["run", "--method", "bl", *TINY, "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["model.safetensors", "results.json"]


@pytest.mark.parametrize("how", ["run folder", "--out"])
def test_evaluate_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path, how):
    """evaluate writes eval.json and figures into its --out (default: the one run folder it is given)."""
    held = tmp_path / "held"
    held.mkdir()
    lock = FolderLock(str(held))
    lock.claim()
    try:
        args = ["evaluate", str(held)] if how == "run folder" else ["evaluate", str(tmp_path), "--out", str(held)]
        p = run_cli(*args)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert f"another lure-fast process (pid {os.getpid()}) is writing there" in p.stderr
        assert os.listdir(held) == [LOCK]
    finally:
        lock.release()
