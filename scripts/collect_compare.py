#!/usr/bin/env python3
"""One results file from one or more ``lure-fast compare`` folders run with the same settings (e.g. bl,lure
in one invocation and sp,llf in another): every run's config and per-mega-batch records, the paper-style
table over all methods (mean ± std over seeds), the curves, each invocation's wall time.

    collect_compare.py --name small --device cpu-2core --what "..." DIR [DIR ...] [--out-dir benchmarks/results]

Writes ``<out-dir>/<name>-<device>.{json,md}`` and ``<name>-<device>-curves.png``. Refuses (exit 2) folders
whose runs differ in anything but method and seed, so a table never mixes settings.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import results_writer  # noqa: E402
from lure_fast.methods import METHODS  # noqa: E402
from lure_fast.report import curves, summary, table  # noqa: E402

PER_RUN = {"method", "seed", "data", "device"}  # what may differ between runs of one table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--device", required=True, help="a device slug for the file name, e.g. cpu-2core")
    ap.add_argument("--what", default="")
    ap.add_argument("--out-dir", type=Path, default=results_writer.RESULTS_DIR)
    a = ap.parse_args(argv)
    groups, invocations, shared = {}, [], None
    for folder in a.folders:
        table_md = (folder / "table.md").read_text() if (folder / "table.md").exists() else ""
        wall = re.search(r"Wall time ([\d.]+) s for (\d+) runs \((\d+) at a time\)", table_md)
        runs = sorted(folder.glob("*/seed-*/results.json"))
        if not runs:
            print(f"collect_compare: {folder}: no */seed-*/results.json; pass a finished compare folder", file=sys.stderr)
            return 2
        invocations.append({"folder": folder.name, "runs": len(runs), "wall_s": float(wall[1]) if wall else None,
                            "jobs": int(wall[3]) if wall else None})
        for path in runs:
            r = json.loads(path.read_text())
            rest = {k: v for k, v in r["config"].items() if k not in PER_RUN}
            if shared is None:
                shared = rest
            elif rest != shared:
                diff = sorted(k for k in set(rest) | set(shared) if rest.get(k) != shared.get(k))
                print(f"collect_compare: {path}: settings differ from the first run's ({', '.join(diff)}); "
                      "collect only runs of one setting", file=sys.stderr)
                return 2
            groups.setdefault(r["config"]["method"], []).append(r)
    order = list(METHODS)
    groups = dict(sorted(groups.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    for rs in groups.values():
        rs.sort(key=lambda r: r["config"]["seed"])
    md = table(groups)
    walls = [i for i in invocations if i["wall_s"] is not None]
    total = sum(i["wall_s"] for i in walls)
    parts = " + ".join(f"{i['wall_s']:.0f} s ({i['runs']} runs, {i['jobs']} at a time)" for i in walls)
    md += f"\nWall time: {parts} = {total:.0f} s ({total / 60:.1f} min).\n"
    doc = {"what": a.what, "device": next(iter(groups.values()))[0]["device"], "invocations": invocations,
           "wall_seconds": total, "summary": summary(groups),
           "runs": {m: {str(r["config"]["seed"]): {k: r[k] for k in ("config", "precision", "loader", "megabatches",
                                                                      "summary", "split_seconds") if k in r}
                        for r in rs} for m, rs in groups.items()}}
    lines = [f"# {a.what}" if a.what else f"# {a.name}", "", md]
    path = results_writer.write(a.name, a.device, doc, lines, a.out_dir)
    curves(groups, str(path.with_name(path.stem + "-curves.png")))
    print(md)
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
