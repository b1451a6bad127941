"""--launcher local|slurm|submitit-local for compare and reproduce, and one GPU per worker of --jobs J."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
from argparse import Namespace

import pytest
import torch

from lure_fast import launch
from lure_fast.cli import main

TINY = ["--preset", "tiny", "--quiet", "--threads", "1"]
SUBMITIT = ["compare", "--launcher", "submitit-local", *TINY]


def strip(res: dict) -> list[dict]:
    return [{k: v for k, v in m.items() if "seconds" not in k} for m in res["megabatches"]]


def read(path) -> dict:
    return json.loads(path.read_text())


def test_compare_through_submitit_local_then_a_rerun_skips_the_finished_runs(tmp_path, capsys):
    out = tmp_path / "c"
    assert main([*SUBMITIT, "--methods", "bl,lure", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[submitit-local] bl: job" in printed and "[submitit-local] lure: job" in printed
    table = (out / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "Method" not in line]
    assert len(rows) == 2 and rows[0].startswith("| BL") and rows[1].startswith("| LURE")
    assert "2 runs (as submitit-local jobs, 1 at a time)" in table
    for m in ("bl", "lure"):
        assert f"| {read(out / m / 'results.json')['summary']['cer']} |" in table
    assert read(out / "summary.json")["launcher"] == "submitit-local"
    ids = read(out / "slurm" / "jobs.json")
    assert sorted(ids) == ["bl", "lure"]
    assert all((out / "slurm" / f"{i}_0_log.err").exists() for i in ids.values())  # the jobs' logs
    # each job ran the very run compare runs in-process
    assert main(["compare", *TINY, "--methods", "bl,lure", "--out", str(tmp_path / "here")]) == 0
    for m in ("bl", "lure"):
        assert strip(read(out / m / "results.json")) == strip(read(tmp_path / "here" / m / "results.json"))
    # the same command again: nothing submitted, nothing trained, the table written anew
    capsys.readouterr()
    logs, stamps = sorted(os.listdir(out / "slurm")), {m: (out / m / "results.json").stat().st_mtime_ns
                                                         for m in ("bl", "lure")}
    assert main([*SUBMITIT, "--methods", "bl,lure", "--out", str(out), "--resume"]) == 0
    assert "job" not in capsys.readouterr().out
    assert sorted(os.listdir(out / "slurm")) == logs
    assert {m: (out / m / "results.json").stat().st_mtime_ns for m in ("bl", "lure")} == stamps
    assert "All 2 runs were finished already" in (out / "table.md").read_text()


def test_a_killed_job_resumes_from_its_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "c"
    args = [*SUBMITIT, "--methods", "bl", "--out", str(out)]
    monkeypatch.setenv("LURE_FAST_FAULT", "epoch_end:2:0")  # the job (a fresh process) SIGKILLs itself there
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of 1 runs failed, first bl (job" in err[0], err
    assert "it ended without a result" in err[0] and "run the same command with --resume" in err[0]
    assert not (out / "bl" / "results.json").exists()
    first = read(out / "bl" / "progress.json")["megabatches"][0]
    first.pop("split_seconds")  # its checkpoint share grows after progress.json is written
    monkeypatch.delenv("LURE_FAST_FAULT")
    assert main([*args, "--resume"]) == 0
    res = read(out / "bl" / "results.json")
    again = {k: v for k, v in res["megabatches"][0].items() if k != "split_seconds"}
    assert again == first  # mega-batch 1 came from the checkpoint, its wall time included
    assert len(res["megabatches"]) == 2
    assert len(read(out / "slurm" / "jobs.json")) == 1  # one run, its latest job


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_job_that_fails_is_one_line_with_its_error(tmp_path, capsys):
    assert main([*SUBMITIT, "--methods", "bl", "--device", "cuda", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lure-fast: error: 1 of 1 runs failed, first bl (job "), err
    assert "ConfigError: --device cuda: no CUDA device is available here" in err[0]


@pytest.mark.parametrize("argv,needle", [
    (["--launcher", "kubernetes"], "--launcher kubernetes: unknown; choose one of local, slurm, submitit-local"),
    (["--slurm-time", "60"], "--slurm-time applies to --launcher slurm or submitit-local"),
    (["--launcher", "slurm", "--slurm-gpus", "-1"], "--slurm-gpus -1: must be at least 0"),
    (["--launcher", "slurm", "--slurm-time", "0"], "--slurm-time 0: must be at least 1"),
    (["--launcher", "slurm", "--slurm-partition", "a b"], "--slurm-partition 'a b': give one partition name"),
])
@pytest.mark.parametrize("command", ["compare", "reproduce"])
def test_bad_launcher_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle, command):
    head = ["compare", *TINY, "--methods", "bl"] if command == "compare" else ["reproduce", "table1", "--scale", "tiny"]
    assert main([*head, *argv, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lure-fast: error: ") and needle in err[0], err
    assert not (tmp_path / "c").exists()  # refused before any folder or compute


def test_slurm_without_submitit_names_the_package(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    assert main(["compare", *TINY, "--methods", "bl", "--launcher", "slurm", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--launcher slurm needs the submitit package" in err[0], err


def test_slurm_where_there_is_no_slurm_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no srun, no sbatch: nothing reaches a real cluster
    assert main(["compare", *TINY, "--methods", "bl", "--launcher", "slurm", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'submitit cannot start (RuntimeError: Could not detect "srun"' in err[0], err
    assert "a SLURM login node" in err[0]


# --------------------------------------------------------------------------- one GPU per worker


def fake_gpus(monkeypatch, n: int):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def test_workers_are_pinned_round_robin_over_the_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_gpus(monkeypatch, 4)
    assert launch.gpu_slots(6, "auto") == ["0", "1", "2", "3", "0", "1"]
    assert launch.gpu_slots(3, "cuda") == ["0", "1", "2"]
    assert launch.gpu_slots(6, "cpu") is None  # --device cpu: threads, as on a CPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # already narrowed: pin within the list
    fake_gpus(monkeypatch, 2)
    assert launch.gpu_slots(3, "auto") == ["5", "7", "5"]
    fake_gpus(monkeypatch, 1)
    assert launch.gpu_slots(3, "auto") is None  # one GPU: nothing to split
    fake_gpus(monkeypatch, 0)
    assert launch.gpu_slots(3, "auto") is None  # the CPU


def test_the_pool_gives_each_worker_its_gpu(monkeypatch):
    """run_local hands the pool an initializer that pins each worker to the next GPU of the list."""
    import concurrent.futures as cf
    seen = {}

    class Stop(Exception):
        pass

    def pool(workers, mp_context=None, initializer=None, initargs=()):
        seen.update(workers=workers, initializer=initializer, queue=initargs[0] if initargs else None)
        raise Stop

    monkeypatch.setattr(cf, "ProcessPoolExecutor", pool)
    monkeypatch.setattr(launch, "gpu_slots", lambda workers, device: ["3", "5"][:workers])
    from lure_fast import config as C
    jobs = {k: launch.Job(C.resolve({"preset": "tiny"}), f"x/{k}", k, False) for k in ("bl", "lure")}
    with pytest.raises(Stop):
        launch.run_local(Namespace(jobs=2, threads=1, overwrite=False, quiet=True), jobs)
    assert seen["workers"] == 2 and seen["initializer"] is launch.pin_worker
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    launch.pin_worker(seen["queue"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    launch.pin_worker(seen["queue"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def visible_after(delay: float) -> str:
    time.sleep(delay)  # long enough that the two tasks land on two workers
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_pinned_workers_see_one_gpu_each():
    """In real spawned workers: each sees only its own GPU, set before anything in it starts CUDA."""
    import concurrent.futures as cf
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    for g in ("3", "5"):
        queue.put(g)
    with cf.ProcessPoolExecutor(2, mp_context=ctx, initializer=launch.pin_worker, initargs=(queue,)) as pool:
        seen = sorted(pool.map(visible_after, [2.0, 2.0]))
    assert seen == ["3", "5"]


def test_submitit_local_jobs_take_one_gpu_each(tmp_path, capsys, monkeypatch):
    """submitit-local: each job in flight gets its own GPU (here a pretend list, the runs on the CPU)."""
    monkeypatch.setattr(launch, "gpu_slots", lambda workers, device: ["7", "9"][:workers])
    assert main([*SUBMITIT, "--methods", "bl,lure", "--jobs", "2", "--epochs", "1",
                 "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "bl: job" in printed and "submitted on GPU 7" in printed and "submitted on GPU 9" in printed
    line = {m: next(s for s in printed.splitlines() if f"] {m}: job" in s and "submitted" in s) for m in ("bl", "lure")}
    assert line["bl"].endswith(f"GPU 7 (logs in {tmp_path / 'c' / 'slurm'})")
    assert "GPU 9" in line["lure"]


STAND_INS = {  # just enough of SLURM for submitit: sbatch runs the job script here, srun runs its command
    "sbatch": r'''#!/bin/bash
d="$FAKE_SLURM"; n=$((4242 + $(ls "$d" | grep -c '\.sh$')))
cp "$1" "$d/$n.sh"
echo "Submitted batch job $n"
cpus=$(grep -o 'cpus-per-task=[0-9]*' "$1" | cut -d= -f2)
( sleep ${FAKE_DELAY:-1}; SLURM_JOB_ID=$n SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_LOCALID=0 SLURM_NODEID=0 SLURM_JOB_NUM_NODES=1 \
  SLURM_JOB_NODELIST=localhost SLURM_CPUS_PER_TASK=${cpus:-1} bash "$d/$n.sh" ) >"$d/$n.stand-in.log" 2>&1 &
''',
    "srun": r'''#!/bin/bash
while [ $# -gt 0 ]; do case "$1" in
  --output) out=${2//%j/$SLURM_JOB_ID}; shift 2;; --error) err=${2//%j/$SLURM_JOB_ID}; shift 2;;
  --*) shift;; *) break;; esac; done
exec "$@" >>"${out//%t/0}" 2>>"${err//%t/0}"
''',
    "sacct": r'''#!/bin/bash
echo "JobID|State|NodeList"
for id in ${@: -1}; do for j in ${id//,/ }; do echo "$j|RUNNING|localhost"; done; done
''',
}


def stand_in_slurm(tmp_path, monkeypatch):
    bin_, jobs = tmp_path / "bin", tmp_path / "sbatch"
    bin_.mkdir(), jobs.mkdir()
    for name, text in STAND_INS.items():
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(jobs))
    return jobs


def test_the_slurm_path_against_stand_ins_for_sbatch_and_srun(tmp_path, capsys, monkeypatch):
    """No cluster here: stand-ins for sbatch, srun and sacct run the job on this machine, which shows what
    the SLURM path submits (the #SBATCH lines from the --slurm-* flags) and that it collects the run."""
    jobs = stand_in_slurm(tmp_path, monkeypatch)
    out = tmp_path / "c"
    assert main(["compare", "--launcher", "slurm", "--slurm-partition", "debug", "--slurm-time", "30",
                 "--slurm-cpus", "1", "--device", "cpu", "--preset", "tiny", "--quiet", "--methods", "bl",
                 "--out", str(out)]) == 0
    script = (jobs / "4242.sh").read_text()
    for line in ("--partition=debug", "--time=30", "--cpus-per-task=1", "--gpus-per-node=0",
                 "--job-name=lure-fast-bl", f"--output={out / 'slurm'}/%j_0_log.out"):
        assert f"#SBATCH {line}\n" in script, script
    assert "[slurm] bl: job 4242 finished" in capsys.readouterr().out
    assert json.loads((out / "slurm" / "jobs.json").read_text()) == {"bl": "4242"}
    res = read(out / "bl" / "results.json")
    assert len(res["megabatches"]) == 2 and "| BL" in (out / "table.md").read_text()


def test_a_slurm_job_still_queued_is_waited_for_again_not_submitted_twice(tmp_path, capsys, monkeypatch):
    jobs = stand_in_slurm(tmp_path, monkeypatch)
    monkeypatch.setenv("FAKE_DELAY", "6")  # the job starts 6 s after sbatch: still queued when we come back
    args = ["compare", "--launcher", "slurm", "--device", "cpu", *TINY, "--methods", "bl",
            "--out", str(tmp_path / "c")]
    sleep, calls = time.sleep, []

    def interrupted(s):  # Ctrl-C while waiting for the job
        calls.append(s)
        if len(calls) == 1:
            raise KeyboardInterrupt
        sleep(s)

    monkeypatch.setattr(launch.time, "sleep", interrupted)
    assert main(args) == 130
    assert "1 SLURM job(s) go on" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert "[slurm] bl: job 4242 still running, waiting for it" in capsys.readouterr().out
    assert sorted(p.name for p in jobs.glob("*.sh")) == ["4242.sh"]  # submitted once
    assert len(read(tmp_path / "c" / "bl" / "results.json")["megabatches"]) == 2


def test_sbatch_refusing_a_job_is_one_line(tmp_path, capsys, monkeypatch):
    jobs = stand_in_slurm(tmp_path, monkeypatch)
    (tmp_path / "bin" / "sbatch").write_text("#!/bin/bash\necho 'sbatch: error: invalid partition specified: "
                                             "nope' >&2\nexit 1\n")
    assert main(["compare", "--launcher", "slurm", "--slurm-partition", "nope", "--device", "cpu", *TINY,
                 "--methods", "bl", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lure-fast: error: --launcher slurm: submitting bl failed ("), err
    assert "check --slurm-partition, --slurm-time, --slurm-gpus and --slurm-cpus" in err[0]
    assert not list(jobs.glob("*.sh"))
