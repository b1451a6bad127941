#!/usr/bin/env python3
"""How much does each forgetting step change a trained model? Train mega-batch 1 once (the best-validation
epoch kept, as a run does), then apply each method's forgetting step to a copy and measure, right after it
and before any relearning: the test accuracy, the accuracy on the mega-batch's own training set, and the
relative change of the parameters, ||theta' - theta|| / ||theta||.

    python scripts/forget_probe.py --data ../shared/data/cifar10-jpeg --seeds 0,1,2 --out probe.json

Settings come from ``--preset`` (default ``small``) and any ``--set key=value``; methods and their variants
from ``--variants`` (``method`` or ``method:key=value:key=value``, comma-separated). Prints a Markdown table
(mean ± std over the seeds) and writes every measurement to ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lure_fast import config as C  # noqa: E402
from lure_fast.methods import forget_  # noqa: E402
from lure_fast.prepare import prepare, resolve_device  # noqa: E402
from lure_fast.train import Trainer  # noqa: E402

DEFAULT_VARIANTS = ("lure,lure:reinit_scope=code,lure:reinit_fraction=0.4,lure:importance=random,"
                    "sp,llf,fc,cold")


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_variant(text: str) -> tuple[str, dict]:
    method, *pairs = text.split(":")
    return method, {k: parse_value(v) for k, v in (p.split("=", 1) for p in pairs)}


def probe(cfg: C.RunConfig, variants: list[tuple[str, dict]]) -> list[dict]:
    device = resolve_device(cfg.device)
    s = prepare(dataclasses.replace(cfg, method="cold"), device, notes=False)  # cold: keeps the initial weights
    trainer = Trainer(s.model, cfg, device)
    mb = s.stream.megabatches[0]
    s.point_at(mb)
    best = -1.0
    for epoch in range(cfg.epochs):
        trainer.train_epoch(s.train, epoch, epoch)
        val = trainer.evaluate(s.val)["acc"]
        if val > best:
            best = val
            trainer.snapshot_best()
    trainer.restore_best()

    def accuracies():
        test = trainer.evaluate(s.test)["acc"]
        s.clean.set_indices(mb.train)
        train = trainer.evaluate(s.clean)["acc"]
        s.clean.set_indices(mb.val if s.clean is s.val else mb.train)
        return test, train

    model0, opt0 = copy.deepcopy(s.model.state_dict()), copy.deepcopy(trainer.optimizer.state_dict())
    theta0 = torch.cat([p.detach().flatten().float() for p in s.model.parameters()])
    test0, train0 = accuracies()
    rows = [{"variant": "trained (no forgetting)", "test_acc": test0, "train_acc": train0, "rel_change": 0.0}]
    if cfg.importance_data == "code":
        s.point_importance_at_next(mb)
    for method, kw in variants:
        s.model.load_state_dict(model0)
        trainer.optimizer.load_state_dict(opt0)
        f = forget_(s.model, dataclasses.replace(cfg, method=method, **kw), 1, trainer.optimizer, s.importance,
                    s.init_state)
        theta = torch.cat([p.detach().flatten().float() for p in s.model.parameters()])
        test, train = accuracies()
        name = method + "".join(f" {k}={v}" for k, v in kw.items())
        rows.append({"variant": name, "test_acc": test, "train_acc": train, "reset": f["reset"],
                     "rel_change": float((theta - theta0).norm() / theta0.norm())})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any RunConfig setting")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    extra = {k: parse_value(v) for k, v in (x.split("=", 1) for x in a.set)}
    variants = [parse_variant(v) for v in a.variants.split(",")]
    runs = {}
    t0 = time.time()
    for seed in [int(x) for x in a.seeds.split(",")]:
        cfg = C.resolve({"preset": a.preset, "data": a.data, "seed": seed, **extra})
        runs[seed] = probe(cfg, variants)
        print(f"seed {seed} done ({time.time() - t0:.0f} s)", file=sys.stderr)
    names = [r["variant"] for r in next(iter(runs.values()))]
    ms = lambda k, i: (np.mean([runs[s][i][k] for s in runs]), np.std([runs[s][i][k] for s in runs], ddof=1)
                       if len(runs) > 1 else 0.0)
    lines = ["| after mega-batch 1, then | test acc | train acc | relative change of the weights |",
             "|---|---:|---:|---:|"]
    for i, name in enumerate(names):
        (t, ts), (tr, trs), (c, cs) = ms("test_acc", i), ms("train_acc", i), ms("rel_change", i)
        lines.append(f"| {name} | {t:.2f} ± {ts:.2f} | {tr:.2f} ± {trs:.2f} | {c:.3f} ± {cs:.3f} |")
    print("\n".join(lines))
    if a.out:
        a.out.write_text(json.dumps({"preset": a.preset, "data": a.data, "settings": extra, "seeds": list(runs),
                                     "runs": runs, "table": lines}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
