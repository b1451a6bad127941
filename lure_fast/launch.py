"""Where the runs of ``compare`` (and ``reproduce``) execute, ``--launcher``:

- ``local`` (the default): in this process with ``--jobs 1``; else in a pool of ``--jobs`` processes, each
  pinned to one GPU (round robin over the visible GPUs) when there are several, or given cores / jobs
  threads on a CPU;
- ``slurm``: each run a SLURM job, submitted through submitit (``--slurm-partition``, ``--slurm-time``,
  ``--slurm-gpus``, ``--slurm-cpus``), all at once; a job timed out or pre-empted is requeued and resumes
  from its last checkpoint;
- ``submitit-local``: each run a local subprocess through submitit's LocalExecutor, ``--jobs`` at a time,
  each on its own GPU where there are several: the slurm path without a cluster.

Every launcher leaves the runs already finished alone (``--resume``: their ``results.json`` is read back,
its settings checked) and resumes the ones with a checkpoint; submitit's files and the jobs' logs go to
``<out>/slurm/``. A SLURM job still queued or running when the command ended (Ctrl-C, a lost login) is
waited for again by the same command with ``--resume``, not submitted twice (``<out>/slurm/jobs.json``).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import config as C

LAUNCHERS = ("local", "slurm", "submitit-local")
SLURM_FLAGS = ("slurm_partition", "slurm_time", "slurm_gpus", "slurm_cpus")
DEFAULT_MINUTES = 24 * 60  # a job's time limit (slurm) or timeout (submitit-local) unless --slurm-time
JOBS_FILE = "jobs.json"    # run folder (relative to the compare folder) -> the SLURM job id that runs it


@dataclass
class Job:
    """One run of a compare: its settings, its folder, its name in messages, and whether it resumes."""
    cfg: C.RunConfig
    folder: str
    label: str
    resume: bool


def add_flags(p: argparse.ArgumentParser) -> None:
    """The launcher flags, shared by ``compare`` and ``reproduce``."""
    g = p.add_argument_group("launcher")
    g.add_argument("--launcher", default="local", metavar="{" + ",".join(LAUNCHERS) + "}",
                   help="where the runs execute: local (this machine: --jobs processes), slurm (a SLURM job per "
                        "run, through submitit) or submitit-local (a local subprocess per run, through submitit, "
                        "--jobs at a time); default local")
    g.add_argument("--slurm-partition", metavar="NAME", help="slurm: the partition (default: the cluster's)")
    g.add_argument("--slurm-time", type=int, metavar="MIN", help=f"minutes per job: slurm's time limit, "
                   f"submitit-local's timeout (default {DEFAULT_MINUTES}); a job that runs out resumes when requeued")
    g.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per job (default: 1, or 0 with --device "
                                                               "cpu; submitit-local: one GPU per job in turn)")
    g.add_argument("--slurm-cpus", type=int, metavar="N", help="slurm: CPUs per task, also torch's threads "
                                                               "(default: the cluster's)")


def check(args: argparse.Namespace) -> None:
    """The launcher flags, before any compute; raises :class:`~lure_fast.config.ConfigError` (one line)."""
    launcher = getattr(args, "launcher", "local")
    if launcher not in LAUNCHERS:
        raise C.ConfigError(f"--launcher {launcher}: unknown; choose one of {', '.join(LAUNCHERS)}")
    given = [f"--{f.replace('_', '-')}" for f in SLURM_FLAGS if getattr(args, f, None) is not None]
    if launcher == "local" and given:
        raise C.ConfigError(f"{given[0]} applies to --launcher slurm or submitit-local; add --launcher slurm, or "
                            f"drop {given[0]}")
    for name, lo in (("slurm_time", 1), ("slurm_gpus", 0), ("slurm_cpus", 1)):
        value = getattr(args, name, None)
        if value is not None and value < lo:
            raise C.ConfigError(f"--{name.replace('_', '-')} {value}: must be at least {lo}")
    partition = getattr(args, "slurm_partition", None)
    if partition is not None and (not partition or any(c.isspace() or c == "," for c in partition)):
        raise C.ConfigError(f"--slurm-partition {partition!r}: give one partition name (no spaces or commas)")
    if launcher != "local":
        require_submitit(launcher)


def require_submitit(launcher: str):
    try:
        import submitit
    except ImportError:
        raise C.ConfigError(f"--launcher {launcher} needs the submitit package, which is not installed here; "
                            "install it (make setup, or pip install submitit) or use --launcher local") from None
    return submitit


def run_all(args: argparse.Namespace, jobs: dict, out: str) -> dict:
    """The results of every job in ``jobs`` (a dict of :class:`Job`), with the same keys."""
    launcher = getattr(args, "launcher", "local")
    if launcher == "local":
        return run_local(args, jobs)
    return run_submitit(args, jobs, out, launcher)


# --------------------------------------------------------------------------- local: this process or a pool


def run_local(args, jobs: dict) -> dict:
    from .cli import set_threads
    from .run import run
    if args.jobs == 1:
        set_threads(args.threads)
        return {k: run(j.cfg, j.folder, resume=j.resume, overwrite=args.overwrite, progress=not args.quiet,
                       label=j.label) for k, j in jobs.items()}
    # each run in its own process: together they keep the GPUs (or the cores) busy
    import concurrent.futures as cf
    import multiprocessing as mp
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    ctx = mp.get_context("spawn")
    gpus = gpu_slots(args.jobs, device_of(jobs))
    init, initargs = None, ()
    if gpus is not None:  # one GPU per worker, set before the worker's torch starts CUDA
        queue = ctx.Queue()
        for g in gpus:
            queue.put(g)
        init, initargs = pin_worker, (queue,)
    with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=init, initargs=initargs) as pool:
        futures = {k: pool.submit(run_job, j.cfg.to_dict(), j.folder, j.resume, args.overwrite, j.label, threads)
                   for k, j in jobs.items()}
        return {k: f.result() for k, f in futures.items()}


def device_of(jobs: dict) -> str:
    """The ``--device`` the jobs ask for (a compare gives every run the same)."""
    return next(iter(jobs.values())).cfg.device if jobs else "cpu"


def gpu_slots(workers: int, device: str) -> list[str] | None:
    """The GPU (a ``CUDA_VISIBLE_DEVICES`` value) for each of ``workers`` processes, round robin over the
    visible GPUs, or None where there is nothing to split: ``--device cpu``, no CUDA, or one GPU."""
    if device == "cpu":
        return None
    import torch
    if not torch.cuda.is_available():
        return None
    n = torch.cuda.device_count()
    if n < 2:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # already narrowed: pin within that list
    ids = [v.strip() for v in visible.split(",")][:n] if visible else [str(i) for i in range(n)]
    return [ids[w % n] for w in range(workers)]


def pin_worker(queue) -> None:
    """A pool worker's initializer: this process sees one GPU, taken from ``queue`` (one per worker)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = queue.get()


def run_job(cfg_dict: dict, folder: str, resume: bool, overwrite: bool, label: str, threads: int | None) -> dict:
    """One run in a worker process (a pool's, or a submitit job's)."""
    from .cli import set_threads
    from .run import run
    set_threads(threads)
    cfg = C.RunConfig(**{**cfg_dict, "lr_milestones": tuple(cfg_dict["lr_milestones"])})
    return run(cfg, folder, resume=resume, overwrite=overwrite, progress=False, label=label)


# --------------------------------------------------------------------------- submitit: slurm, submitit-local


class RunJob:
    """One run as a submitit job. ``__call__`` runs it, resuming from the folder's checkpoint when asked and
    one is there; submitit calls ``checkpoint`` when the job times out or is pre-empted, and requeues what it
    returns: the same run, resuming."""

    def __call__(self, cfg_dict: dict, folder: str, resume: bool, overwrite: bool, label: str,
                 threads: int | None, cwd: str) -> str:
        from .rundir import run_entries
        os.chdir(cwd)  # relative --data and --out as on the command line
        if threads is None and os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
            threads = int(os.environ["SLURM_CPUS_PER_TASK"])
        run_job(cfg_dict, folder, resume and bool(run_entries(folder)), overwrite, label, threads)
        return folder

    def checkpoint(self, cfg_dict, folder, resume, overwrite, label, threads, cwd):
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self, cfg_dict, folder, True, False, label, threads, cwd)


def finished(job: Job) -> bool:
    """Whether ``job`` would only read its results back: resumed, with results.json and no checkpoint."""
    from .checkpoint import Checkpointer
    from .rundir import RESULTS
    return job.resume and os.path.isfile(os.path.join(job.folder, RESULTS)) and not Checkpointer(job.folder).list()


def run_submitit(args, jobs: dict, out: str, launcher: str) -> dict:
    from .checkpoint import RunError
    from .rundir import RESULTS, write_json
    from .run import run
    submitit = require_submitit(launcher)
    slurm = launcher == "slurm"
    logs = os.path.abspath(os.path.join(out, "slurm"))
    os.makedirs(logs, exist_ok=True)
    results = {}
    for k, j in jobs.items():  # finished runs: read back here (their settings checked), never submitted
        if finished(j):
            results[k] = run(j.cfg, j.folder, resume=True, progress=False, label=j.label)
    todo = [k for k in jobs if k not in results]
    if not todo:
        return results
    try:
        ex = submitit.AutoExecutor(folder=logs, cluster="slurm" if slurm else "local")
    except Exception as e:
        raise C.ConfigError(f"--launcher {launcher}: submitit cannot start ({first_line(e)}); "
                            + ("run it where srun and sbatch are (a SLURM login node), or use --launcher "
                               "submitit-local or local" if slurm else "use --launcher local")) from None
    minutes = getattr(args, "slurm_time", None) or DEFAULT_MINUTES
    gpus = getattr(args, "slurm_gpus", None)
    device = device_of(jobs)
    params = {"timeout_min": minutes}
    if slurm:
        params.update(gpus_per_node=gpus if gpus is not None else (0 if device == "cpu" else 1),
                      cpus_per_task=getattr(args, "slurm_cpus", None),
                      slurm_partition=getattr(args, "slurm_partition", None))
        threads, limit, slots = args.threads, len(todo), None
    else:
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
        limit = args.jobs
        slots = None if gpus is not None else gpu_slots(limit, device)  # one GPU per job in flight
        params["gpus_per_node"] = gpus if gpus is not None else (1 if slots else 0)
    ids_path = os.path.join(logs, JOBS_FILE)
    ids = json.loads(Path(ids_path).read_text()) if os.path.isfile(ids_path) else {}
    rel = {k: os.path.relpath(os.path.abspath(jobs[k].folder), os.path.abspath(out)) for k in jobs}
    running = {}  # key -> (submitit job, slot)
    if slurm:  # jobs of an earlier invocation still queued or running: wait for them again
        for k in todo:
            if rel[k] in ids:
                job = submitit.SlurmJob(folder=logs, job_id=ids[rel[k]])
                if not job.done(force_check=True):
                    running[k] = (job, None)
                    print(f"[{launcher}] {jobs[k].label}: job {job.job_id} still {job.state.lower()}, waiting "
                          f"for it", flush=True)
    pending = [k for k in todo if k not in running]
    free = list(range(limit))
    failed = []
    try:
        while pending or running:
            while pending and (slurm or free):
                k = pending.pop(0)
                slot = None if slurm else free.pop(0)
                j = jobs[k]
                ex.update_parameters(name=f"lure-fast-{j.label.replace(' ', '-')}", **params)
                if slots is not None:
                    ex.update_parameters(local_setup=[f"export CUDA_VISIBLE_DEVICES={shlex.quote(slots[slot])}"])
                try:  # submitit prints sbatch's complaint before raising it: the one line below says it
                    with contextlib.redirect_stderr(io.StringIO()):
                        job = ex.submit(RunJob(), j.cfg.to_dict(), os.path.abspath(j.folder), j.resume,
                                        args.overwrite, j.label, threads, os.getcwd())
                except Exception as e:
                    raise C.ConfigError(f"--launcher {launcher}: submitting {j.label} failed ({first_line(e)}); "
                                        + ("check --slurm-partition, --slurm-time, --slurm-gpus and --slurm-cpus, "
                                           "and that sbatch works on this machine" if slurm else
                                           "see the logs in " + logs)) from None
                running[k] = (job, slot)
                ids[rel[k]] = str(job.job_id)
                write_json(ids_path, ids)
                gpu = f" on GPU {slots[slot]}" if slots is not None else ""
                print(f"[{launcher}] {j.label}: job {job.job_id} submitted{gpu} (logs in {logs})", flush=True)
            time.sleep(10 if slurm else 0.5)
            for k, (job, slot) in list(running.items()):
                if not job.done():
                    continue
                del running[k]
                if slot is not None:
                    free.append(slot)
                j = jobs[k]
                if os.path.isfile(os.path.join(j.folder, RESULTS)):
                    print(f"[{launcher}] {j.label}: job {job.job_id} finished", flush=True)
                else:
                    failed.append((k, job, why(job)))
                    print(f"[{launcher}] {j.label}: job {job.job_id} failed: {failed[-1][2]}", flush=True)
    finally:
        if running and not slurm:  # local jobs end with this command (a SLURM job goes on, found again later)
            for job, _ in running.values():
                job.cancel(check=False)
            for job, _ in running.values():
                job.wait()
        elif running:
            print(f"[{launcher}] {len(running)} SLURM job(s) go on; the same command with --resume waits for "
                  "them", file=sys.stderr)
    if failed:
        k, job, reason = failed[0]
        raise RunError(f"{len(failed)} of {len(todo)} runs failed, first {jobs[k].label} (job {job.job_id}): "
                       f"{reason}; its log is in {logs}; fix that and run the same command with --resume, which "
                       "resumes them")
    for k in todo:  # read back here, settings checked
        results[k] = run(jobs[k].cfg, jobs[k].folder, resume=True, progress=False, label=jobs[k].label)
    return results


def first_line(e: BaseException) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def why(job) -> str:
    """A failed job's reason in one line: the last line of the error it raised, or how it ended without one."""
    if not job.paths.result_pickle.exists():  # killed: by a signal, its time limit, memory, or cancelled
        return f"it ended without a result (state {job.state}): killed, out of time or out of memory"
    e = job.exception()
    if e is None:
        return "it returned without writing results.json"
    # submitit's message: the job's traceback between two dashed lines, then where its logs are
    parts = [p for p in re.split(r"^-{8,}$", str(e), flags=re.M) if p.strip()]
    trace = parts[1] if len(parts) > 2 else str(e)
    lines = [s.strip() for s in trace.splitlines() if s.strip()]
    return (lines[-1] if lines else type(e).__name__)[:400]
