"""Kill soak: SIGKILL a small CPU run at random instants, resume it each time, and check that every resumed
``results.json`` equals an uninterrupted run's, wall times aside.

    python scripts/kill_soak.py                      # 50 kills of the default tiny run
    python scripts/kill_soak.py --kills 10 --seed 3 -- run --method sp --preset tiny --threads 1 --quiet

Each trial starts the run in a fresh folder, sleeps a random time drawn uniformly from just before the
uninterrupted run took its folder (90 % of its start-up time, mostly torch's import) to its end, kills it
with SIGKILL, then continues it the way a user would: ``--resume`` where the folder holds a run, a plain
start where the kill came before anything was written, and the ``--overwrite`` that the one-line message
names where no checkpoint had landed yet.
The resumed run must finish and its results must equal the uninterrupted run's in everything but the
fields that hold seconds. Prints one JSON summary (docs/safety.md quotes one); exit 1 on any difference.
Not part of the test suite: 50 trials take several minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the digits, 3 mega-batches of 300, 5 epochs at width 12, a checkpoint after every epoch: a few seconds
# of training after 3-4 s of start-up and set-up on two CPU cores; 50 trials take about ten minutes
DEFAULT = ["run", "--method", "lure", "--preset", "tiny", "--megabatches", "3", "--megabatch-size", "300",
           "--epochs", "5", "--width", "12", "--checkpoint-interval", "0", "--threads", "1", "--quiet"]
LOCK = ".lure-fast.lock"


def cli(args: list[str], out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lure_fast", *args, "--out", str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(args: list[str], out: Path) -> subprocess.CompletedProcess:
    p = cli(args, out)
    stdout, stderr = p.communicate()
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


def without_seconds(obj):
    """``obj`` with every key that holds seconds (``seconds``, ``split_seconds``, ``forget_seconds``...) left out."""
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj


def stage(out: Path) -> str:
    """Where the kill left the folder."""
    if not out.exists():
        return "before the folder was made"
    names = [f for f in os.listdir(out) if f != LOCK]
    if "results.json" in names:
        return "after the results were written"
    if any(f.startswith("ckpt-") and f.endswith(".pt") for f in names):
        return "with a checkpoint on disk"
    return "before the first checkpoint" if names else "before anything was written"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill instants")
    ap.add_argument("--keep", help="keep the trials' folders under this folder (default: a temporary one)")
    ap.add_argument("command", nargs="*", help="the lure-fast command to soak (after --); default: " + " ".join(DEFAULT))
    a = ap.parse_args()
    args = a.command or DEFAULT
    rng = random.Random(a.seed)
    root = Path(a.keep or tempfile.mkdtemp(prefix="kill-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    t0, base = time.perf_counter(), root / "uninterrupted"
    p = cli(args, base)
    while p.poll() is None and not (base / LOCK).exists():  # the interpreter's start-up: torch's import
        time.sleep(0.005)
    startup = time.perf_counter() - t0
    _, stderr = p.communicate()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        print(stderr, file=sys.stderr)
        return 1
    reference = without_seconds(json.loads((root / "uninterrupted" / "results.json").read_text()))

    trials, stages, ways, differing = [], {}, {}, []
    for k in range(a.kills):
        out = root / f"trial-{k:03d}"
        delay = rng.uniform(0.9 * startup, wall)  # a few before the run takes its folder, the rest in the run
        p = cli(args, out)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.communicate()
        killed = p.returncode == -signal.SIGKILL  # else it had already ended
        where = stage(out) if killed else "after the run had ended"
        has_run = out.exists() and any(f != LOCK for f in os.listdir(out))
        way = "--resume" if has_run else "a plain start"
        r = finish(args + (["--resume"] if has_run else []), out)
        if r.returncode == 2 and "no usable checkpoint to resume from" in r.stderr:
            way = "--overwrite (no checkpoint had landed)"
            r = finish(args + ["--overwrite"], out)
        same = r.returncode == 0 and \
            without_seconds(json.loads((out / "results.json").read_text())) == reference
        stages[where] = stages.get(where, 0) + 1
        ways[way] = ways.get(way, 0) + 1
        trials.append({"trial": k, "kill_after_s": round(delay, 3), "killed": killed, "stage": where,
                       "continued_with": way, "exit": r.returncode, "identical": same})
        if not same:
            differing.append({"trial": k, "stderr": r.stderr.strip().splitlines()[-3:]})
        print(f"trial {k + 1}/{a.kills}: killed after {delay:.2f} s {where}; {way}: "
              f"{'identical' if same else 'DIFFERENT'}", file=sys.stderr, flush=True)
        if not a.keep and same:
            shutil.rmtree(out, ignore_errors=True)

    summary = {"command": "lure-fast " + " ".join(args), "kills": a.kills, "seed": a.seed,
               "uninterrupted_wall_s": round(wall, 2), "startup_s": round(startup, 2),
               "identical": sum(t["identical"] for t in trials), "differing": differing,
               "killed_while_running": sum(t["killed"] for t in trials), "stages": stages, "continued_with": ways,
               "soak_wall_s": round(time.perf_counter() - t_start, 1), "python": sys.version.split()[0],
               "cpus": os.cpu_count(), "trials": trials}
    print(json.dumps(summary, indent=2))
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if not differing else 1


if __name__ == "__main__":
    sys.exit(main())
