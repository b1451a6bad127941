#!/usr/bin/env python3
"""Sequential against concurrent ``lure-fast compare``: one report from the two runs' table.md files.

    jobs_report.py --device "NVIDIA H100 80GB HBM3" \\
        --run sequential /tmp/lf-jobs/seq  "lure-fast compare ... --jobs 1" \\
        --run concurrent /tmp/lf-jobs/conc "lure-fast compare ... --jobs 4" [--out-dir benchmarks/results]

``compare`` ends each table.md with the line "Wall time X s for N runs (J at a time): Y training images/s
in aggregate."; this reads that line from each run's folder and writes
``<out-dir>/compare-jobs-<device-slug>.{json,md}``: the device, each command line, its wall time and
aggregate training images/s, and the ratio concurrent / sequential of the aggregate rates (and of the wall
times), with each run's table below. A run without a table.md (stopped at the deadline) is reported as
unfinished; then the exit status is 1. Standard library only (it runs on the GPU machine after the runs).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WALL_LINE = re.compile(r"Wall time ([0-9.]+) s for (\d+) runs \((\d+) at a time\): ([0-9,.]+) training images/s "
                       r"in aggregate\.")


def device_slug(name: str) -> str:
    """As benchmarks/bench_train.py names its files: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def parse_wall_line(text: str) -> dict | None:
    """The wall-time line of a compare table.md, as numbers; None when there is none."""
    m = WALL_LINE.search(text)
    if not m:
        return None
    return {"wall_s": float(m.group(1)), "runs": int(m.group(2)), "jobs": int(m.group(3)),
            "images_per_s": float(m.group(4).replace(",", "")), "line": m.group(0)}


def read_run(label: str, folder: str, command: str) -> dict:
    """One run's entry: its command and folder, and the parsed wall-time line and table when its table.md
    exists (``finished`` False otherwise)."""
    table = Path(folder) / "table.md"
    entry = {"label": label, "folder": str(folder), "command": command, "finished": False}
    if table.is_file():
        text = table.read_text()
        parsed = parse_wall_line(text)
        if parsed:
            entry.update(parsed, finished=True, table=text.strip())
        else:
            entry["problem"] = f"{table} has no wall-time line"
    else:
        entry["problem"] = f"no {table} (the run did not finish: stopped at the deadline, or failed; see its log)"
    return entry


def summarise(device: str, runs: list[dict], date: str | None = None) -> dict:
    """The report: ``runs`` as ``read_run`` gives them, the first the sequential one (the reference), plus
    the ratios of every other finished run to it."""
    doc = {"benchmark": "scripts/jobs_report.py (lure-fast compare, one run at a time against several)",
           "device": device, "slug": device_slug(device), "date": date or datetime.date.today().isoformat(),
           "host_cpu_cores": os.cpu_count(), "runs": runs, "ratios": {}}
    base = runs[0] if runs else None
    for r in runs[1:]:
        if base and base["finished"] and r["finished"]:
            doc["ratios"][f"{r['label']}/{base['label']}"] = {
                "images_per_s": r["images_per_s"] / base["images_per_s"],
                "wall_s": r["wall_s"] / base["wall_s"],
            }
    return doc


def markdown(doc: dict) -> str:
    lines = [f"# lure-fast compare: runs one at a time against concurrently, on {doc['device']}", "",
             f"Measured {doc['date']} ({doc['host_cpu_cores']} CPU cores). Each command trains every method "
             "on the same stream; the aggregate rate is the training images of all its runs over its wall "
             "time (start-up, evaluation and unlearning included), as compare prints it.", "",
             "| run | methods at a time | runs | wall time (s) | aggregate training images/s | command |",
             "|---|---:|---:|---:|---:|---|"]
    for r in doc["runs"]:
        if r["finished"]:
            lines.append(f"| {r['label']} | {r['jobs']} | {r['runs']} | {r['wall_s']:.1f} | {r['images_per_s']:,.0f} "
                         f"| `{r['command']}` |")
        else:
            lines.append(f"| {r['label']} | - | - | unfinished | - | `{r['command']}` |")
    lines.append("")
    for key, ratio in doc["ratios"].items():
        a, b = key.split("/")
        lines.append(f"{a} / {b}: {ratio['images_per_s']:.2f} x the aggregate images/s "
                     f"(wall time {ratio['wall_s']:.2f} x).")
    for r in doc["runs"]:
        if not r["finished"]:
            lines.append(f"{r['label']}: {r['problem']}.")
    for r in doc["runs"]:
        if r["finished"]:
            lines += ["", f"## {r['label']} (`{r['folder']}/table.md`)", "", r["table"]]
    return "\n".join(lines) + "\n"


def write(doc: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"compare-jobs-{doc['slug']}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(doc))
    return stem.with_suffix(".json"), stem.with_suffix(".md")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", required=True, help="the GPU's name (torch.cuda.get_device_name())")
    p.add_argument("--run", nargs=3, action="append", metavar=("LABEL", "FOLDER", "COMMAND"), required=True,
                   help="a compare run: its label, --out folder and command line; the first is the reference")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)
    runs = [read_run(label, folder, command) for label, folder, command in args.run]
    doc = summarise(args.device, runs)
    paths = write(doc, Path(args.out_dir))
    print(markdown(doc))
    print(f"jobs_report: wrote {paths[0]} and {paths[1]}")
    return 0 if all(r["finished"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
