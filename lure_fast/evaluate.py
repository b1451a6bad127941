"""Evaluations of trained models (the paper's sections 6 and 7): calibration, adversarial robustness
(PGD), flatness, and natural corruptions (``corruptions.py``). docs/evaluate.md says what each measures.

``evaluate(dirs, ...)`` opens every run under ``dirs`` (a run folder, or a ``compare`` folder holding
several), checks everything before any compute, runs the evaluations asked for and writes ``eval.json``
and one figure per evaluation into ``out``.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import config as C
from .checkpoint import RunError
from .metrics import EvalCounter, ece

EVALS = ("calibration", "pgd", "flatness", "corruptions")
DEFAULT_EPS = (0.5, 1.0, 2.0, 4.0, 8.0)          # in units of 1/255
DEFAULT_SCALES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)  # flatness: noise relative to each tensor's RMS
PGD_STEPS = 10
EVAL_JSON = "eval.json"


class EvalError(RunError):
    """Bad input to ``lure-fast evaluate``: one line naming the problem and the fix."""


# --------------------------------------------------------------------------- the runs


@dataclass
class Subject:
    """One trained run, opened for evaluation."""
    folder: str
    results: dict
    meta: dict
    model: torch.nn.Module
    device: torch.device
    amp: torch.dtype | None

    @property
    def method(self) -> str:
        from .report import method_label
        return method_label(self.results)

    @property
    def seed(self) -> int:
        return int(self.results["config"]["seed"])

    def autocast(self):
        """The precision the run measured its test accuracy under (results.json's ``precision``)."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)


def find_runs(dirs: list[str]) -> list[str]:
    """The run folders under ``dirs``: each one holding ``results.json`` itself, or a ``compare`` folder's
    ``<method>`` / ``<method>/seed-<s>`` folders. One line for a folder that holds none."""
    from .modelfile import MODEL
    runs = []
    for d in dirs:
        if not os.path.isdir(d):
            raise EvalError(f"{d}: no such folder; pass a run folder (holding results.json) or a compare folder")
        if os.path.isfile(os.path.join(d, "results.json")):
            runs.append(d)
            continue
        found = []
        for root, subdirs, files in os.walk(d):
            subdirs.sort()
            if "results.json" in files:
                found.append(root)
                subdirs.clear()
        if not found:
            raise EvalError(f"{d}: holds no finished run (no results.json); train one with lure-fast run or compare")
        runs.extend(found)
    for r in runs:
        if not os.path.isfile(os.path.join(r, MODEL)):
            raise EvalError(f"{r}: finished without a model file ({MODEL}); it was trained by a lure-fast that "
                            "kept no model: run it again (lure-fast run ... --overwrite)")
    return runs


def open_run(folder: str, device: torch.device) -> Subject:
    from .modelfile import MODEL, load_model
    with open(os.path.join(folder, "results.json")) as f:
        results = json.load(f)
    model, meta = load_model(os.path.join(folder, MODEL), device, with_meta=True)
    precision = meta.get("precision", results.get("precision", "fp32"))
    amp = torch.bfloat16 if precision == "bf16" else None
    return Subject(folder, results, meta, model, device, amp)


def run_data(subject: Subject, data: str | None):
    """The run's dataset and a memory backend over it on the subject's device."""
    from .loaders import load_dataset, make_backend
    cfg = subject.results["config"]
    dataset = load_dataset(cfg.get("dataset"), data if data is not None else cfg.get("data"), cfg.get("image_size"))
    if tuple(dataset.image_shape) != tuple(subject.meta["image_shape"]) or \
            dataset.num_classes != subject.meta["classes"]:
        raise EvalError(f"{subject.folder}: the data ({dataset.name}, {dataset.num_classes} classes, images "
                        f"{list(dataset.image_shape)}) is not what the model was trained on "
                        f"({subject.meta['classes']} classes, {subject.meta['image_shape']}); pass the run's --data")
    return dataset, make_backend("memory", dataset, subject.device)


def last_train_indices(subject: Subject, dataset) -> np.ndarray:
    """The training set of the run's last mega-batch (replay included): the images the final model learnt."""
    from .prepare import build_stream
    cfg = C.RunConfig(**{**subject.results["config"],
                         "lr_milestones": tuple(subject.results["config"]["lr_milestones"])})
    return build_stream(cfg, dataset).megabatches[-1].train


# --------------------------------------------------------------------------- the measures


@torch.no_grad()
def counts(model, batches, autocast=contextlib.nullcontext, device="cpu") -> dict:
    """Accuracy, ECE and the 15 calibration bins of ``model`` over ``batches`` of (x, y)."""
    model.eval()
    c = EvalCounter(device)
    for x, y in batches:
        with autocast():
            c.update(model(x), y)
    r = c.result()
    n = c.count.cpu()
    r["bins"] = {"count": n.tolist(),
                 "confidence": torch.where(n > 0, c.conf.cpu() / n.clamp(min=1), torch.nan).tolist(),
                 "accuracy": torch.where(n > 0, c.hits.cpu() / n.clamp(min=1), torch.nan).tolist()}
    return r


def calibration(subject: Subject, test_loader) -> dict:
    """ECE (15 equal-width bins of the top-label confidence, in percent) and the reliability diagram's bins."""
    r = counts(subject.model, test_loader.epoch(0), subject.autocast, subject.device)
    return {"acc": r["acc"], "ece": r["ece"], "n": r["n"], "bins": r["bins"]}


def pgd(model, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = PGD_STEPS, alpha: float | None = None,
        generator: torch.Generator | None = None, autocast=contextlib.nullcontext) -> torch.Tensor:
    """PGD under L-inf in [0, 1] pixel space (Madry et al.): a uniform random start in the eps-ball, then
    ``steps`` steps of ``alpha`` (default 2.5 * eps / steps) along the sign of the cross-entropy's gradient,
    each projected back onto the eps-ball around ``x`` and onto [0, 1]. Returns the adversarial images."""
    alpha = 2.5 * eps / steps if alpha is None else alpha
    was_training = model.training
    model.eval()
    noise = torch.rand(x.shape, generator=generator, dtype=torch.float32).to(x.device) * 2 - 1
    adv = (x + eps * noise).clamp(0, 1).detach()
    adv = torch.min(torch.max(adv, x - eps), x + eps)
    for _ in range(steps if eps > 0 else 0):
        adv.requires_grad_(True)
        with autocast():
            loss = F.cross_entropy(model(adv).float(), y)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv + alpha * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
        adv = adv.detach()
    model.train(was_training)
    return adv


def robust_accuracy(model, batches, eps_list, seed: int = 0, autocast=contextlib.nullcontext,
                    progress=None) -> dict:
    """Per eps (in [0, 1] units): the percentage of images classified correctly both clean and after PGD
    (an image the model already gets wrong counts as broken, so robust accuracy never exceeds clean)."""
    g = torch.Generator().manual_seed(seed)
    hits = {e: 0 for e in eps_list}
    clean, n = 0, 0
    model.eval()
    for x, y in batches:
        with torch.no_grad(), autocast():
            ok = model(x).argmax(1) == y
        clean += int(ok.sum())
        n += int(y.shape[0])
        for e in eps_list:
            adv = pgd(model, x, y, e, generator=g, autocast=autocast)
            with torch.no_grad(), autocast():
                hits[e] += int((ok & (model(adv).argmax(1) == y)).sum())
            if progress is not None:
                progress.update(1)
    n = max(n, 1)
    return {"clean": 100.0 * clean / n, "n": n, "robust": {e: 100.0 * h / n for e, h in hits.items()}}


@torch.no_grad()
def flatness(model, batches_fn, scales, draws: int = 3, seed: int = 0, relative: bool = True,
             autocast=contextlib.nullcontext, device="cpu", progress=None) -> dict:
    """Accuracy (percent) of ``model`` over ``batches_fn()`` with independent Gaussian noise added to every
    parameter (BatchNorm's running statistics untouched): per scale s, ``draws`` draws of N(0, sigma^2) per
    entry with sigma = s * RMS(tensor) (``relative``) or sigma = s; mean, std and every draw. Draw d of scale s
    is seeded by (seed, s, d) alone. The model's weights are restored after each draw."""
    params = [p for p in model.parameters()]
    saved = [p.detach().clone() for p in params]
    out = {}
    try:
        for s in scales:
            accs = []
            for d in range(draws if s > 0 else 1):
                # each (scale, draw) its own stream: a scale's draws do not depend on the other scales listed
                g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, round(s * 1e9), d]).generate_state(1)[0]))
                for p, w in zip(params, saved):
                    sigma = s * (w.float().pow(2).mean().sqrt().item() if relative else 1.0)
                    noise = torch.randn(w.shape, generator=g, dtype=torch.float32).to(w.device)
                    p.copy_(w + (sigma * noise).to(w.dtype) if s > 0 else w)
                accs.append(counts(model, batches_fn(), autocast, device)["acc"])
                if progress is not None:
                    progress.update(1)
            out[s] = {"mean": float(np.mean(accs)), "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                      "draws": accs}
    finally:
        for p, w in zip(params, saved):
            p.copy_(w)
    return out


# --------------------------------------------------------------------------- the command


def parse_what(text: str) -> list[str]:
    what = [w.strip() for w in text.split(",") if w.strip()]
    if what == ["all"]:
        return list(EVALS)
    for w in what:
        if w not in EVALS:
            raise EvalError(f"--what {w}: unknown evaluation; choose from {', '.join(EVALS)} or all")
    if not what or len(set(what)) != len(what):
        raise EvalError(f"--what {text}: name each evaluation once, e.g. calibration,pgd")
    return what


def check_list(name: str, values, lo: float, hi: float) -> tuple[float, ...]:
    vals = tuple(float(v) for v in values)
    if not vals or any(not np.isfinite(v) or v < lo or v > hi for v in vals):
        raise EvalError(f"--{name} {','.join(map(str, values))}: each value must be a number in [{lo:g}, {hi:g}]")
    return vals


def bar(total: int, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, dynamic_ncols=True, file=sys.stderr, leave=False,
                disable=not sys.stderr.isatty())


def evaluate(dirs: list[str], what: list[str], out: str | None = None, data: str | None = None,
             corruptions: str | None = None, device: str = "auto", eps=DEFAULT_EPS, scales=DEFAULT_SCALES,
             draws: int = 3, seed: int = 0, pgd_images: int | None = 1000, flat_images: int | None = 2000,
             corruption_images: int | None = None,
             batch_size: int | None = None, quiet: bool = False, noise: str = "relative") -> dict:
    """Run the evaluations ``what`` on every run under ``dirs``; write ``eval.json`` and the figures into
    ``out`` (default: the one folder given). Returns what ``eval.json`` holds."""
    from .prepare import resolve_device
    from .corruptions import check_corruptions
    eps = check_list("eps", eps, 0, 255)
    scales = check_list("noise-scales", scales, 0, 10)
    if draws < 1:
        raise EvalError(f"--draws {draws}: must be at least 1")
    if noise not in ("relative", "absolute"):
        raise EvalError(f"--noise {noise}: choose relative (sigma = scale x each tensor's RMS) or absolute")
    for flag, n in (("--pgd-images", pgd_images), ("--flat-images", flat_images),
                    ("--corruption-images", corruption_images)):
        if n is not None and n < 1:
            raise EvalError(f"{flag} {n}: must be at least 1")
    runs = find_runs(dirs)
    if out is None:
        if len(dirs) != 1:
            raise EvalError("several folders given: pass --out DIR for eval.json and the figures")
        out = dirs[0]
    if "corruptions" in what and corruptions is not None:
        check_corruptions(corruptions)
    dev = resolve_device(device)
    subjects = [open_run(r, dev) for r in runs]  # every model read back before any compute
    report = {"runs": [], "what": what, "eps_255": list(eps), "noise_scales": list(scales), "draws": draws,
              "noise": noise + (" (sigma = scale x RMS of each tensor)" if noise == "relative" else " (sigma = scale)"),
              "seed": seed,
              "pgd": {"steps": PGD_STEPS, "step": "2.5 * eps / 10", "random_start": True, "norm": "Linf",
                      "space": "[0, 1]", "images": pgd_images},
              "device": str(dev), "seconds": {}}
    for subj in subjects:
        entry = {"folder": subj.folder, "method": subj.method, "seed": subj.seed,
                 "precision": "bf16" if subj.amp is not None else "fp32",
                 "test_acc_results": subj.results["summary"]["test_acc"]}
        dataset, backend = run_data(subj, data)
        bs = batch_size or int(subj.results["config"].get("eval_batch_size", 500))  # the run's batches
        n_test = len(dataset.test)
        test = backend.loader("test", np.arange(n_test), bs)
        name = f"{subj.method} seed {subj.seed}"
        if "calibration" in what:
            t = time.perf_counter()
            entry["calibration"] = calibration(subj, test)
            report["seconds"].setdefault("calibration", 0.0)
            report["seconds"]["calibration"] += time.perf_counter() - t
        if "pgd" in what:
            t = time.perf_counter()
            idx = np.arange(n_test if pgd_images is None else min(pgd_images, n_test))
            loader = backend.loader("test", idx, min(bs, 250))
            with bar(len(loader) * len(eps), f"pgd {name}") as pb:
                r = robust_accuracy(subj.model, loader.epoch(0), [e / 255 for e in eps], seed, subj.autocast, pb)
            entry["pgd"] = {"clean": r["clean"], "n": r["n"],
                            "robust": {f"{e:g}": r["robust"][e / 255] for e in eps}}
            report["seconds"]["pgd"] = report["seconds"].get("pgd", 0.0) + time.perf_counter() - t
        if "flatness" in what:
            t = time.perf_counter()
            tr = last_train_indices(subj, dataset)
            if flat_images is not None:
                tr = tr[:flat_images]
            loader = backend.loader("train", tr, bs)
            total = sum(draws if s > 0 else 1 for s in scales)
            with bar(total, f"flatness {name}") as pb:
                r = flatness(subj.model, lambda: loader.epoch(0), scales, draws, seed, noise == "relative",
                             subj.autocast, dev, pb)
            entry["flatness"] = {"images": len(tr), "accuracy": {f"{s:g}": v for s, v in r.items()}}
            report["seconds"]["flatness"] = report["seconds"].get("flatness", 0.0) + time.perf_counter() - t
        if "corruptions" in what:
            from .corruptions import corruption_accuracy
            t = time.perf_counter()
            entry["corruptions"] = corruption_accuracy(subj, dataset, backend, corruptions, seed, bs,
                                                       images=corruption_images)
            report["seconds"]["corruptions"] = report["seconds"].get("corruptions", 0.0) + time.perf_counter() - t
        report["runs"].append(entry)
        if not quiet:
            print(f"lure-fast: evaluated {subj.folder}: " + summary_line(entry), file=sys.stderr)
    os.makedirs(out, exist_ok=True)
    from .rundir import write_json
    write_json(os.path.join(out, EVAL_JSON), report)
    from .evalplots import figures
    report["figures"] = figures(report, out)
    return report


def summary_line(entry: dict) -> str:
    parts = []
    if "calibration" in entry:
        parts.append(f"ECE {entry['calibration']['ece']:.2f} %")
    if "pgd" in entry:
        parts.append("PGD " + ", ".join(f"{k}/255: {v:.1f}" for k, v in entry["pgd"]["robust"].items()))
    if "flatness" in entry:
        parts.append("noisy train acc " + ", ".join(f"{k}: {v['mean']:.1f}"
                                                    for k, v in entry["flatness"]["accuracy"].items()))
    if "corruptions" in entry:
        parts.append(f"mean corruption acc {entry['corruptions']['mean']:.1f}")
    return "; ".join(parts)
