"""``lure-fast reproduce NAME``: a table of the paper as one resumable command, our mean ± std beside the
paper's numbers, and every way the run deviates from the paper's protocol.

Each row of a table (a dataset) is one ``compare`` over the table's methods and seeds in
``DIR/<table>/<dataset>/``; finished runs are skipped and killed ones resumed, so the same command again
continues where it stopped. ``DIR/report.md`` holds the tables. The paper's numbers (SPEC §6) are typed in
from the paper with their table number.
"""
from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from . import config as C

# SPEC §6: ResNet-18, test accuracy % and CER, the paper's means
PAPER = {
    "table1": {"title": "Table 1: full replay, t = 8", "settings": {"replay": "full"},
               "rows": {"cifar10": {"bl": (89.47, 11760), "llf": (91.43, 10103), "sp": (91.76, 10206),
                                    "lure": (93.32, 9622)},
                        "cifar100": {"bl": (62.96, 39010), "llf": (67.04, 34575), "sp": (64.48, 36303),
                                     "lure": (69.60, 33037)}}},
    "table2": {"title": "Table 2: buffer replay, t = 8", "settings": {"replay": "buffer"},
               "rows": {"cifar10": {"bl": (88.01, 15784), "llf": (87.51, 15045), "sp": (84.62, 15549),
                                    "lure": (89.8, 13629)}}},
    "table3": {"title": "Table 3: no replay, t = 8", "settings": {"replay": "none"},
               "rows": {"cifar10": {"bl": (80.86, 16789), "llf": (86.11, 15294), "sp": (81.92, 16133),
                                    "lure": (88.96, 13953)}}},
    "table6": {"title": "Table 6: full replay, t = 4", "settings": {"replay": "full"}, "half_megabatches": True,
               "rows": {"cifar10": {"bl": (89.31, 5657), "llf": (91.80, 5466), "sp": (90.50, 5667),
                                    "lure": (93.73, 4409)}}},
}
NAMES = (*PAPER, "all")
NOT_YET = ("table4", "table5", "table7", "table8", "table9", "fig2", "fig3", "fig4", "fig5", "fig6")
SCALES = {"paper": "paper", "small": "small", "tiny": "tiny"}  # scale -> preset
METHODS = ("bl", "lure", "sp", "llf")
DATA_FLAG = {"cifar10": "--data", "cifar100": "--data-cifar100"}


def tables(name: str) -> list[str]:
    if name in NOT_YET:
        raise C.ConfigError(f"reproduce {name}: not available yet (it needs the evaluations or grids of issues 13 "
                            f"and 15); available: {', '.join(NAMES)}")
    if name not in NAMES:
        raise C.ConfigError(f"reproduce {name}: unknown; choose one of {', '.join(NAMES)}")
    return list(PAPER) if name == "all" else [name]


def row_settings(table: str, scale: str, profile: str, data: str | None) -> dict:
    """The explicit settings of one row's runs (method and seed aside)."""
    spec = PAPER[table]
    preset = SCALES[scale]
    explicit = {"preset": preset, "profile": profile, **spec["settings"]}
    if data is not None:
        explicit["data"] = data
    if spec.get("half_megabatches"):  # the same images in half as many mega-batches (8 x 6,250 -> 4 x 12,500)
        base = C.resolve({**explicit, "method": "bl"})
        t = max(2, base.megabatches // 2)
        explicit["megabatches"] = t
        if base.megabatch_size is not None:
            explicit["megabatch_size"] = base.megabatches * base.megabatch_size // t
    return explicit


def _cell(values: list[float], spec: str) -> str:
    mean = statistics.fmean(values)
    return format(mean, spec) if len(values) < 2 else f"{format(mean, spec)} ± {format(statistics.stdev(values), spec)}"


def report(out: str, names: list[str], scale: str, profile: str, seeds: list[int], results: dict,
           missing: dict) -> str:
    """Markdown: the scale and profile first, then per table our values, the paper's and the difference."""
    lines = [f"# lure-fast reproduce: scale {scale}, profile {profile}, seeds {', '.join(map(str, seeds))}", ""]
    deviations = []
    if scale != "paper":
        deviations.append(f"scale `{scale}` (the `{SCALES[scale]}` preset's stream, network and epochs), not the "
                          "paper's: absolute numbers are not comparable, the ordering and the gaps are what to read")
    if profile != "paper":
        deviations.append(f"profile `{profile}`: the published code's behaviour (docs/protocol.md)")
    streams = []
    for name in names:
        spec = PAPER[name]
        lines += [f"## {spec['title']}", "",
                  "| data | method | test acc (ours) | paper | ours − paper | CER (ours) | paper | ours − paper |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for dataset, paper_rows in spec["rows"].items():
            if (name, dataset) in missing:
                lines.append(f"| {dataset} | not run | | | | | | {missing[(name, dataset)]} |")
                continue
            bl = results[(name, dataset)]["bl"][0]
            c, mb1 = bl["config"], bl["megabatches"][0]
            streams.append(f"{spec['title'].split(':')[0]}, {dataset}: {c['megabatches']} mega-batches of "
                           f"{mb1['train_size'] + mb1['val_size']}, {c['replay']} replay, {c['epochs']} epochs, "
                           f"{c['arch']} width {c['width']}")
            for method, (p_acc, p_cer) in paper_rows.items():
                rs = results[(name, dataset)][method]
                acc = [r["summary"]["test_acc"] for r in rs]
                cer = [r["summary"]["cer"] for r in rs]
                lines.append(f"| {dataset} | {method_label(rs[0])} | {_cell(acc, '.2f')} | {p_acc:.2f} | "
                             f"{statistics.fmean(acc) - p_acc:+.2f} | {_cell(cer, '.0f')} | {p_cer} | "
                             f"{statistics.fmean(cer) - p_cer:+.0f} |")
            first = results[(name, dataset)]["bl"][0]
            data_name = first.get("dataset", {}).get("name", dataset)
            if data_name != dataset:
                deviations.append(f"{spec['title'].split(':')[0]}, row {dataset}: ran on `{data_name}`")
            if first.get("dataset", {}).get("layout") == "imagefolder":
                deviations.append(f"{spec['title'].split(':')[0]}, row {dataset}: images read from an ImageFolder "
                                  "(the project's CIFAR-10 copy is JPEG, quality 75), not the released pickles")
        lines.append("")
    for (name, dataset), why in missing.items():
        deviations.append(f"{PAPER[name]['title'].split(':')[0]}, row {dataset}: not run ({why})")
    lines += ["## What ran", ""] + [f"- {x}" for x in streams] + [""]
    lines += ["## Deviations from the paper", ""] + [f"- {d}" for d in dict.fromkeys(deviations)] + \
             ([] if deviations else ["- none"])
    return "\n".join(lines) + "\n"


def method_label(result: dict) -> str:
    from .report import method_label as label
    return label(result)


def reproduce(args: argparse.Namespace, compare) -> int:
    """Run every row of the named table(s) through ``compare(args, out, methods, seeds, cfgs)`` (the CLI's)
    and write ``report.md``."""
    import json

    from .checkpoint import atomic_write
    from .rundir import prepare_out, run_entries
    names = tables(args.name)
    if args.scale not in SCALES:
        raise C.ConfigError(f"--scale {args.scale}: unknown; choose one of {', '.join(SCALES)}")
    seeds = args.seeds or [0, 1, 2]
    data = {"cifar10": args.data, "cifar100": args.data_cifar100}
    plan, missing = {}, {}
    for name in names:
        for dataset in PAPER[name]["rows"]:
            path = data[dataset]
            if path is None and not (args.scale == "tiny" and dataset == "cifar10"):
                missing[(name, dataset)] = f"pass {DATA_FLAG[dataset]} DIR"
                continue
            explicit = {**row_settings(name, args.scale, args.profile, path), "device": args.device}
            # every run's settings validated before any compute
            plan[(name, dataset)] = {(m, s): C.resolve({**explicit, "method": m, "seed": s})
                                     for m in METHODS for s in seeds}
    lock = prepare_out(args.out, bool(run_entries(args.out)), False)
    try:
        results = {}
        for (name, dataset), cfgs in plan.items():
            out = os.path.join(args.out, name, dataset)
            row = prepare_out(out, bool(run_entries(out)), False)  # refuses a folder of other settings below
            try:
                print(f"[reproduce] {PAPER[name]['title']}, {dataset}: {len(cfgs)} runs in {out}")
                ns = argparse.Namespace(**{**vars(args), "resume": True, "overwrite": False, "evaluate": None})
                compare(ns, out, list(METHODS), seeds, cfgs)
            finally:
                row.release()
            folders = {(m, s): os.path.join(out, m, *([f"seed-{s}"] if len(seeds) > 1 else [])) for m in METHODS
                       for s in seeds}
            results[(name, dataset)] = {m: [json.loads(Path(folders[(m, s)], "results.json").read_text())
                                            for s in seeds] for m in METHODS}
        md = report(args.out, names, args.scale, args.profile, seeds, results, missing)
        atomic_write(os.path.join(args.out, "report.md"), md.encode())
        print(md)
        print(f"report.md in {args.out}")
    finally:
        lock.release()
    return 0
