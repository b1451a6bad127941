"""Runs survive crashes and bad input: SIGKILL at several points, resume, and get the same results."""
import errno
import json
import os
import signal

import pytest
import torch

from lure_fast.checkpoint import Checkpointer, RunError, atomic_write
from lure_fast.cli import main
from lure_fast.rundir import run_entries

from lf_helpers import run_cli

# 3 mega-batches x 3 epochs, so unlearning happens twice and each mega-batch has inner epochs
# --checkpoint-interval 0: a checkpoint after every epoch, however short (the default waits 30 s between them)
BASE = ["run", "--method", "lure", "--preset", "tiny", "--megabatches", "3", "--epochs", "3"]
RUN = [*BASE, "--checkpoint-interval", "0", "--quiet"]


def comparable(res: dict) -> dict:
    """Everything but wall times, which no two runs share."""
    mbs = [{k: v for k, v in m.items() if "seconds" not in k} for m in res["megabatches"]]
    summary = {k: v for k, v in res["summary"].items() if k != "seconds"}
    return {"config": res["config"], "megabatches": mbs, "summary": summary}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "run"
    p = run_cli(*RUN, "--out", str(out))
    assert p.returncode == 0, p.stderr
    return comparable(json.loads((out / "results.json").read_text()))


@pytest.mark.parametrize("point", [
    "batch:2:1:1",        # mid-epoch
    "epoch_end:1:1",      # between epochs, just after a checkpoint
    "unlearn:2",          # during the unlearn step (importance computed, weights not yet reset)
    "checkpoint_write:4",  # half-way through writing a checkpoint
])
def test_kill_and_resume_gives_identical_results(tmp_path, uninterrupted, point):
    out = tmp_path / "run"
    killed = run_cli(*RUN, "--out", str(out), env={"LURE_FAST_FAULT": point})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    assert not (out / "results.json").exists()
    assert not [f for f in os.listdir(out) if f.endswith(".pt")] or \
        Checkpointer(str(out)).latest() is not None  # whatever is on disk reads back whole
    resumed = run_cli(*RUN, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(json.loads((out / "results.json").read_text())) == uninterrupted


def test_progress_holds_the_finished_megabatches_while_a_run_is_under_way(tmp_path, uninterrupted):
    out = tmp_path / "run"
    killed = run_cli(*RUN, "--out", str(out), env={"LURE_FAST_FAULT": "epoch_end:3:0"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    progress = comparable(json.loads((out / "progress.json").read_text()))
    assert progress["config"] == uninterrupted["config"]
    assert progress["megabatches"] == uninterrupted["megabatches"][:2]  # mega-batches 1 and 2, as they end up
    assert progress["summary"]["test_acc"] == uninterrupted["megabatches"][1]["test_acc"]
    assert run_cli(*RUN, "--out", str(out), "--resume").returncode == 0
    assert (out / "results.json").exists() and not (out / "progress.json").exists()


def test_without_resume_an_earlier_run_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "run"
    assert run_cli(*RUN, "--out", str(out), env={"LURE_FAST_FAULT": "epoch_end:2:0"}).returncode == -signal.SIGKILL
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    p = run_cli(*RUN, "--out", str(out))
    assert p.returncode == 2 and "pass --resume to continue it, --overwrite to replace it" in p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before


def test_resume_with_other_settings_is_refused_naming_them(tmp_path):
    out = tmp_path / "run"
    # checkpoints are written in the background; by epoch 3's first batch the first one has landed
    assert run_cli(*RUN, "--out", str(out), env={"LURE_FAST_FAULT": "batch:1:2:0"}).returncode == -signal.SIGKILL
    # the run's files; the lock file is bookkeeping (the refused resume took the lock, then let it go)
    before = {f: (out / f).read_bytes() for f in run_entries(str(out))}
    p = run_cli(*RUN, "--lr", "0.05", "--seed", "3", "--out", str(out), "--resume")
    assert p.returncode == 2, p.stderr
    assert "lr (now 0.05, was 0.1)" in p.stderr and "seed (now 3, was 0)" in p.stderr
    assert {f: (out / f).read_bytes() for f in run_entries(str(out))} == before


def test_overwrite_replaces_an_earlier_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RUN[:-1], "--quiet", "--epochs", "1", "--out", str(out)]) == 0
    assert main([*RUN, "--epochs", "1", "--method", "bl", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["method"] == "bl"


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, uninterrupted):
    out = tmp_path / "run"
    assert run_cli(*RUN, "--out", str(out), env={"LURE_FAST_FAULT": "epoch_end:2:1"}).returncode == -signal.SIGKILL
    ckpts = sorted(f for f in os.listdir(out) if f.startswith("ckpt-") and f.endswith(".pt"))
    assert len(ckpts) >= 2  # (three if the kill fell between a write and its pruning)
    newest = out / ckpts[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte: the checksum must catch it
    newest.write_bytes(bytes(data))
    p = run_cli(*RUN, "--out", str(out), "--resume")
    assert p.returncode == 0, p.stderr
    assert f"checkpoint {ckpts[-1]} is damaged (checksum mismatch); using the one before it" in p.stderr
    assert comparable(json.loads((out / "results.json").read_text())) == uninterrupted


def test_no_usable_checkpoint_stops_with_a_clear_message(tmp_path):
    out = tmp_path / "run"
    assert run_cli(*RUN, "--out", str(out), env={"LURE_FAST_FAULT": "epoch_end:1:1"}).returncode == -signal.SIGKILL
    for f in os.listdir(out):
        if f.startswith("ckpt-"):
            (out / f).write_bytes((out / f).read_bytes()[:100])  # truncated
    p = run_cli(*RUN, "--out", str(out), "--resume")
    assert p.returncode == 2
    assert "truncated" in p.stderr and "no usable checkpoint to resume from" in p.stderr.splitlines()[-1]


def test_checkpoint_reader_rejects_foreign_and_truncated_files(tmp_path):
    c = Checkpointer(str(tmp_path))
    c.save({"x": torch.arange(3)}, 1, 0)
    c.wait()
    path = tmp_path / "ckpt-0001-0000.pt"
    assert torch.equal(Checkpointer.read(str(path))["x"], torch.arange(3))
    path.write_bytes(b"PK\x03\x04" + b"\0" * 60)
    with pytest.raises(ValueError, match="not a lure-fast checkpoint"):
        Checkpointer.read(str(path))


def test_old_checkpoints_are_pruned(tmp_path):
    c = Checkpointer(str(tmp_path), keep=2)
    for e in range(5):
        c.save({"e": e}, 1, e)
    c.wait()
    assert c.list() == ["ckpt-0001-0003.pt", "ckpt-0001-0004.pt"]
    assert c.latest()["e"] == 4


def test_non_finite_loss_stops_naming_megabatch_and_epoch(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RUN, "--lr", "1e30", "--lr-milestones", "3,3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "the loss became nan in mega-batch 1, epoch 1" in err or "the loss became inf in mega-batch 1, epoch 1" in err
    assert "last good checkpoint" in err and "\n" not in err
    assert not (out / "results.json").exists()


def test_a_full_disk_is_reported_plainly_and_the_old_file_kept(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_bytes(b"old")
    import builtins
    real_open = builtins.open

    class Full:
        def __init__(self, f): self.f = f
        def __enter__(self): return self
        def __exit__(self, *a): self.f.close()
        def write(self, b): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        def flush(self): pass
        def fileno(self): return self.f.fileno()

    monkeypatch.setattr(builtins, "open", lambda p, m="r", *a, **k: Full(real_open(p, m, *a, **k)) if str(p).endswith(".tmp") else real_open(p, m, *a, **k))
    with pytest.raises(RunError, match="No space left on device; free some space"):
        atomic_write(str(path), b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["results.json"]


def test_an_unwritable_out_is_refused_before_any_compute(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([*RUN, "--out", str(blocker / "run")]) == 2
    assert "cannot write there" in capsys.readouterr().err
    assert main([*RUN, "--out", str(blocker)]) == 2
    assert "is a file; pass a folder" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    assert main([*RUN, "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "no CUDA device is available here" in capsys.readouterr().err


def test_compare_resumes_each_method(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "bl,lure", "--preset", "tiny", "--quiet", "--out", str(out)]
    killed = run_cli(*args, env={"LURE_FAST_FAULT": "unlearn:1"})  # only LURE unlearns: bl finishes first
    assert killed.returncode == -signal.SIGKILL
    bl_before = (out / "bl" / "results.json").read_bytes()
    p = run_cli(*args, "--resume")
    assert p.returncode == 0, p.stderr
    assert (out / "bl" / "results.json").read_bytes() == bl_before  # finished work is not redone
    assert (out / "lure" / "results.json").exists() and (out / "table.md").exists()


def test_compare_resume_starts_a_method_killed_before_its_first_checkpoint(tmp_path, capsys):
    out = tmp_path / "cmp"
    (out / "bl").mkdir(parents=True)  # what a kill during bl's first epoch leaves behind
    assert main(["compare", "--methods", "bl", "--preset", "tiny", "--quiet", "--out", str(out), "--resume"]) == 0
    assert (out / "bl" / "results.json").exists() and (out / "table.md").exists()


def test_a_failed_background_write_is_reported_by_the_next_save_or_wait(tmp_path):
    c = Checkpointer(str(tmp_path / "gone"))  # the folder does not exist: the write fails in the thread
    c.save({"x": torch.zeros(2)}, 1, 0)
    with pytest.raises(RunError, match="cannot write .*ckpt-0001-0000.pt"):
        c.wait()
    c.wait()  # reported once


def test_a_checkpoint_holds_the_state_of_when_it_was_saved(tmp_path):
    c = Checkpointer(str(tmp_path))
    t = torch.zeros(3)
    c.save({"t": t, "nested": [t]}, 1, 0)
    t += 1  # training goes on while the thread writes
    c.wait()
    saved = Checkpointer.read(str(tmp_path / "ckpt-0001-0000.pt"))
    assert torch.equal(saved["t"], torch.zeros(3)) and torch.equal(saved["nested"][0], torch.zeros(3))


@pytest.mark.parametrize("interval,expected", [
    ("0", [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2)]),  # every epoch and mega-batch
    ("3600", [(2, 0), (3, 0)]),  # epochs shorter than the interval: mega-batch boundaries only
])
def test_checkpoint_interval_skips_epoch_checkpoints_but_never_megabatch_ones(tmp_path, monkeypatch, interval,
                                                                            expected):
    from lure_fast.checkpoint import Checkpointer

    saved = []
    original = Checkpointer.save
    monkeypatch.setattr(Checkpointer, "save",
                        lambda self, state, mb, epoch: saved.append((mb, epoch)) or original(self, state, mb, epoch))
    assert main([*BASE, "--quiet", "--checkpoint-interval", interval, "--out", str(tmp_path / "run")]) == 0
    assert saved == expected


def test_resume_may_change_how_often_checkpoints_are_written(tmp_path, uninterrupted):
    out = tmp_path / "run"
    assert run_cli(*RUN, "--out", str(out), env={"LURE_FAST_FAULT": "batch:2:1:0"}).returncode == -signal.SIGKILL
    resumed = run_cli(*BASE, "--quiet", "--checkpoint-every", "2", "--checkpoint-interval", "5", "--out", str(out),
                      "--resume")
    assert resumed.returncode == 0, resumed.stderr
    got = comparable(json.loads((out / "results.json").read_text()))
    assert (got["config"]["checkpoint_every"], got["config"]["checkpoint_interval"]) == (2, 5.0)
    def results_only(res):  # the module's fixture is shared: compare copies
        return {**res, "config": {k: v for k, v in res["config"].items() if not k.startswith("checkpoint_")}}
    assert results_only(got) == results_only(uninterrupted)
