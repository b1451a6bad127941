"""``lure-fast reproduce NAME``: a table or figure of the paper as one resumable command, our mean ± std
beside the paper's numbers, and every way the runs deviate from the paper's protocol.

The tables' rows and the paper's values live in ``paper.py``. Each row's stream is one folder of runs,
``DIR/<stream>/<variant>[/seed-<s>]`` (``DIR/table1/cifar10/lure/seed-0``), shared by every table and
figure that needs the same runs (Table 9's 0 % row is Table 6's ResNet-18 row); each is one ``compare``,
so finished runs are skipped and killed ones resumed, and the same command again continues where it
stopped. Figures 2 to 5 evaluate Table 6's ResNet-18 runs with ``lure-fast evaluate`` (``DIR/evaluate``,
repeated only when something is missing). ``DIR/report.md`` and ``DIR/report.html`` (figures embedded)
hold the result; ``reproduce_report.py`` writes them.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from . import config as C
from . import paper as P
from .models import min_image_size

NAMES = (*P.TABLES, *P.FIGURES, "all")
SCALES = ("paper", "small", "tiny")  # each the preset of that name
EVAL_DIR = "evaluate"


def targets(name: str) -> tuple[list[str], list[str]]:
    """The tables and figures ``name`` stands for."""
    if name not in NAMES:
        raise C.ConfigError(f"reproduce {name}: unknown; choose one of {', '.join(NAMES)}")
    if name == "all":
        return list(P.TABLES), list(P.FIGURES)
    return ([name], []) if name in P.TABLES else ([], [name])


def megabatches(row: P.Row, scale: str, data: str | None) -> dict:
    """The row's mega-batch count and size at ``scale``: the paper's at ``paper`` (size = training set // t,
    or the few-shot images // t); at a smaller scale, the preset's images cut into t x (the preset's t / 8)
    mega-batches (at least 2, of at least 10 images), so a longer stream keeps its shape."""
    shots_total = None if row.shots is None else row.shots * P.DATASETS[row.dataset]["classes"]
    if scale == "paper":
        return {"megabatches": row.t} | ({} if shots_total is None else {"megabatch_size": shots_total // row.t})
    base = C.resolve({"preset": scale, "method": "bl", **({"data": data} if data else {})})
    total = base.megabatches * base.megabatch_size
    if shots_total is not None:
        total = min(total, shots_total)
    t = min(max(2, round(row.t * base.megabatches / 8)), total // 10)
    return {"megabatches": t, "megabatch_size": total // t}


def stream_settings(row: P.Row, scale: str, profile: str, data: str | None) -> dict:
    """The explicit settings every run of the row's stream shares (method, variant and seed aside)."""
    explicit = {"preset": scale, "profile": profile, "replay": row.replay, **megabatches(row, scale, data)}
    if data is not None:
        explicit["data"] = data
        if row.dataset == "rimagenet":  # its 14 superclasses read from the ImageNet folder
            explicit["dataset"] = "restricted_imagenet"
    if row.arch != "resnet18":
        explicit["arch"] = row.arch
    if row.label_noise:
        explicit["label_noise"] = row.label_noise
    if row.shots is not None:
        explicit["shots"] = row.shots
    return explicit


def data_of(args: argparse.Namespace, dataset: str) -> str | None:
    return {"cifar10": args.data, "cifar100": args.data_cifar100,
            "rimagenet": args.data_rimagenet}[dataset]


def check_data(row: P.Row, path: str, explicit: dict, opened: dict) -> None:
    """Before any compute: ``path`` holds the row's data set (its number of classes) and enough training
    images for the stream (one line naming the flag and the fix otherwise)."""
    from .loaders import load_dataset
    spec = P.DATASETS[row.dataset]
    if path not in opened:
        name = "restricted_imagenet" if row.dataset == "rimagenet" else None
        opened[path] = load_dataset(name, path)
    ds = opened[path]
    if ds.num_classes != spec["classes"]:
        raise C.ConfigError(f"{spec['flag']} {path}: holds {ds.num_classes} classes, but {spec['title']} has "
                            f"{spec['classes']}; point {spec['flag']} at {spec['title']}")
    size = explicit.get("megabatch_size")
    need = explicit["megabatches"] * size if size else explicit["megabatches"] * 10
    if len(ds.train) < need:
        raise C.ConfigError(f"{spec['flag']} {path}: {len(ds.train)} training images, but `{row.stream}` at this "
                            f"scale needs {need}; pass the whole {spec['title']} training set")


def plan(tables: list[str], figures: list[str]) -> dict[str, dict]:
    """``{stream folder: {"row": Row, "variants": {key: Variant}}}``: every run the tables and figures need,
    each stream once with the union of its variants."""
    rows: list[tuple[P.Row, tuple]] = []
    for t in tables:
        rows += [(r, tuple(v for v, _ in r.variants)) for r in P.TABLES[t].rows]
    for f in figures:
        for part in P.FIGURES[f].parts:
            if part[0] == "evaluate":
                rows.append((P.EVAL_ROW, tuple(v for v, _ in P.EVAL_ROW.variants)))
            elif part[0] == "noise":
                rows += [(r, tuple(v for v, _ in r.variants)) for r in P.TABLES["table9"].rows]
            else:  # grid
                rows.append((P.GRID_ROW, tuple(v for v, _ in P.GRID_ROW.variants if v.method in part[1])))
    streams: dict[str, dict] = {}
    for row, variants in rows:
        s = streams.setdefault(row.stream, {"row": row, "variants": {}})
        s["variants"].update({v.key: v for v in variants})
    return streams


def evaluations(figures: list[str]) -> list[str]:
    return sorted({part[1] for f in figures for part in P.FIGURES[f].parts if part[0] == "evaluate"})


def run_folder(out: str, stream: str, key: str, seed: int, seeds: list[int]) -> str:
    return os.path.join(out, stream, key, *([f"seed-{seed}"] if len(seeds) > 1 else []))


def reproduce(args: argparse.Namespace, compare) -> int:
    """Run every stream the named tables and figures need through ``compare(args, out, keys, seeds, cfgs)``
    (the CLI's), evaluate for the figures, and write ``report.md`` and ``report.html``."""
    from .checkpoint import atomic_write
    from .reproduce_report import render
    from .rundir import prepare_out, run_entries
    tables, figures = targets(args.name)
    if args.scale not in SCALES:
        raise C.ConfigError(f"--scale {args.scale}: unknown; choose one of {', '.join(SCALES)}")
    seeds = args.seeds or [0, 1, 2]
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise C.ConfigError(f"--seeds {','.join(map(str, seeds))}: give distinct seeds >= 0, e.g. --seeds 0,1,2")
    fields = {f.name for f in C.fields()}
    todo, missing, opened = {}, {}, {}
    for stream, item in plan(tables, figures).items():
        row = item["row"]
        path = data_of(args, row.dataset)
        if path is None and not (args.scale == "tiny" and row.dataset == "cifar10"):
            missing[stream] = f"pass {P.DATASETS[row.dataset]['flag']} DIR"
            continue
        explicit = {**stream_settings(row, args.scale, args.profile, path), "device": args.device}
        if set(explicit) - fields:  # a setting this build lacks
            missing[stream] = f"needs --{'-'.join(sorted(set(explicit) - fields))}, which this version lacks"
            continue
        if path is not None:
            check_data(row, path, explicit, opened)
        size = min(opened[path].image_shape[1:]) if path is not None else 8  # the embedded digits: 8x8
        need = min_image_size(row.arch, C.resolve({**explicit, "method": "bl"}).vgg)
        if size < need:
            missing[stream] = f"{row.arch} needs images of at least {need}x{need}; the data's are {size}x{size}"
            continue
        # every run's settings validated before any compute
        todo[stream] = {(v.key, s): C.resolve({**explicit, **dict(v.settings), "method": v.method, "seed": s})
                        for v in item["variants"].values() for s in seeds}
    what = evaluations(figures)
    if what and P.EVAL_ROW.stream in missing:
        missing[EVAL_DIR] = missing[P.EVAL_ROW.stream]
    lock = prepare_out(args.out, bool(run_entries(args.out)), False)
    try:
        for stream, cfgs in todo.items():
            out = os.path.join(args.out, stream)
            row = prepare_out(out, bool(run_entries(out)), False)
            try:
                keys = list(dict.fromkeys(k for k, _ in cfgs))
                print(f"[reproduce] {stream}: {len(cfgs)} runs ({', '.join(keys)}) in {out}")
                ns = argparse.Namespace(**{**vars(args), "resume": True, "overwrite": False, "evaluate": None})
                compare(ns, out, keys, seeds, cfgs)
            finally:
                row.release()
        results = {(stream, key): [json.loads(Path(run_folder(args.out, stream, key, s, seeds),
                                                   "results.json").read_text()) for s in seeds]
                   for stream, cfgs in todo.items() for key in dict.fromkeys(k for k, _ in cfgs)}
        ev = None
        if what and EVAL_DIR not in missing:
            ev = evaluate_runs(args, what, seeds)
        md, html = render(args, tables, figures, seeds, results, missing, ev)
        atomic_write(os.path.join(args.out, "report.md"), md.encode())
        atomic_write(os.path.join(args.out, "report.html"), html.encode())
        print(md)
        print(f"report.md and report.html in {args.out}")
    finally:
        lock.release()
    return 0


def evaluate_runs(args: argparse.Namespace, what: list[str], seeds: list[int]) -> dict:
    """``lure-fast evaluate`` of the four methods' runs of Table 6's ResNet-18 row into ``DIR/evaluate``;
    an ``eval.json`` there that already covers these runs and evaluations is read instead."""
    from .evaluate import EVAL_JSON, evaluate
    from .cli import set_threads
    out = os.path.join(args.out, EVAL_DIR)
    dirs = [os.path.join(args.out, P.EVAL_ROW.stream, v.key) for v, _ in P.EVAL_ROW.variants]  # seeds found below
    want = {os.path.abspath(run_folder(args.out, P.EVAL_ROW.stream, v.key, s, seeds))
            for v, _ in P.EVAL_ROW.variants for s in seeds}
    path = os.path.join(out, EVAL_JSON)
    if os.path.isfile(path):
        old = json.loads(Path(path).read_text())
        have = {os.path.abspath(r["folder"]) for r in old.get("runs", [])}
        if have == want and set(what) <= set(old.get("what", [])):
            print(f"[reproduce] {path}: the evaluations are there already")
            return old
        what = sorted(set(what) | set(old.get("what", [])) if have == want else set(what))
    set_threads(args.threads)
    print(f"[reproduce] evaluating {len(want)} runs ({', '.join(what)}) into {out}")
    return evaluate(dirs, what, out=out, device=args.device, quiet=args.quiet,
                    corruptions=args.corruptions)
