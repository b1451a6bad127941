"""The figures of ``lure-fast evaluate``: one PNG per evaluation, every method a line or bar (mean ± std
over its seeds when a compare folder holds several)."""
from __future__ import annotations

import os
import warnings

import numpy as np


def _by_method(report: dict, key: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in report["runs"]:
        if key in r:
            groups.setdefault(r["method"], []).append(r[key])
    return groups


def _std(a: np.ndarray) -> np.ndarray:
    return a.std(axis=0, ddof=1) if a.shape[0] > 1 else np.zeros(a.shape[1:])


def figures(report: dict, out: str) -> list[str]:
    with warnings.catch_warnings():  # a bin no run filled is a NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return _figures(report, out)


def _figures(report: dict, out: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written = []

    def save(fig, name):
        path = os.path.join(out, name)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    cal = _by_method(report, "calibration")
    if cal:  # reliability diagram per method, and ECE bars
        n = len(cal)
        fig, axes = plt.subplots(1, n + 1, figsize=(3.2 * (n + 1), 3.2), squeeze=False)
        edges = np.linspace(0, 1, 16)
        mids = (edges[:-1] + edges[1:]) / 2
        for ax, (m, rs) in zip(axes[0], cal.items()):
            acc = np.nanmean(np.array([r["bins"]["accuracy"] for r in rs], dtype=float), axis=0)
            conf = np.nanmean(np.array([r["bins"]["confidence"] for r in rs], dtype=float), axis=0)
            ok = ~np.isnan(acc)
            ax.bar(mids[ok], acc[ok], width=1 / 15, edgecolor="k", label="accuracy")
            ax.bar(mids[ok], (conf - acc)[ok], bottom=acc[ok], width=1 / 15, color="r", alpha=0.3,
                   hatch="//", label="gap")
            ax.plot([0, 1], [0, 1], "k--", lw=1)
            ece = [r["ece"] for r in rs]
            ax.set_title(f"{m}: ECE {np.mean(ece):.2f} %")
            ax.set_xlabel("confidence")
            ax.set_ylabel("accuracy")
            ax.legend(fontsize=7)
        ax = axes[0][-1]
        means = [np.mean([r["ece"] for r in rs]) for rs in cal.values()]
        stds = [np.std([r["ece"] for r in rs], ddof=1) if len(rs) > 1 else 0 for rs in cal.values()]
        ax.bar(range(len(cal)), means, yerr=stds, capsize=4)
        ax.set_xticks(range(len(cal)), [m.split(" (")[0] for m in cal], fontsize=8)  # "BL", "LURE": short
        ax.set_ylabel("ECE (%), 15 bins")
        ax.set_title("calibration (lower is better)")
        save(fig, "calibration.png")

    adv = _by_method(report, "pgd")
    if adv:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for m, rs in adv.items():
            eps = list(rs[0]["robust"])
            a = np.array([[r["clean"]] + [r["robust"][e] for e in eps] for r in rs])
            x = [0.0] + [float(e) for e in eps]
            mu, sd = a.mean(0), _std(a)
            ax.plot(x, mu, "o-", label=m)
            ax.fill_between(x, mu - sd, mu + sd, alpha=0.2)
        ax.set_xscale("symlog", linthresh=0.5)
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        ax.set_xlabel("eps (/255), PGD-10, L-inf")
        ax.set_ylabel("robust test accuracy (%)")
        ax.legend()
        save(fig, "pgd.png")

    flat = _by_method(report, "flatness")
    if flat:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for m, rs in flat.items():
            scales = list(rs[0]["accuracy"])
            a = np.array([[r["accuracy"][s]["mean"] for s in scales] for r in rs])
            x = [float(s) for s in scales]
            mu = a.mean(0)
            # the spread: over draws within a seed and over seeds
            draws = [np.concatenate([r["accuracy"][s]["draws"] for r in rs]) for s in scales]
            sd = np.array([d.std(ddof=1) if len(d) > 1 else 0.0 for d in draws])
            ax.plot(x, mu, "o-", label=m)
            ax.fill_between(x, mu - sd, mu + sd, alpha=0.2)
        ax.set_xlabel(f"noise scale: {report.get('noise', 'relative')}", fontsize=8)
        ax.set_ylabel("train accuracy with noise (%)")
        ax.legend()
        save(fig, "flatness.png")

    cor = _by_method(report, "corruptions")
    if cor:
        first = next(iter(cor.values()))[0]
        names = first["corruptions"]
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 3.8))
        width = 0.8 / len(cor)
        for k, (m, rs) in enumerate(cor.items()):
            a = np.array([[np.mean(list(r["accuracy"][c].values())) for c in names] for r in rs])
            ax.bar(np.arange(len(names)) + k * width, a.mean(0), width, yerr=_std(a), capsize=2,
                   label=f"{m} (mean {np.mean([r['mean'] for r in rs]):.1f})")
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("accuracy, mean of severities 1-5 (%)")
        ax.set_title(f"corruptions ({first['source']})")
        ax.legend(fontsize=7)
        save(fig, "corruptions.png")
    return written
