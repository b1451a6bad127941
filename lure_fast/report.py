"""Paper-style results table (Markdown) and test-accuracy curves (PNG) for a comparison."""
from __future__ import annotations

from .methods import method_label as _label


def method_label(result: dict) -> str:
    """The row label of a run's results (the method registry's label for its config)."""
    return _label(result["config"])


def _groups(results) -> dict[str, list[dict]]:
    """``{method: [result, ...]}`` (one result per seed); a ``{method: result}`` mapping is one seed each."""
    return {k: (v if isinstance(v, list) else [v]) for k, v in results.items()}


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    import statistics
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _cell(values: list, spec: str) -> str:
    if any(v is None for v in values):
        return ""
    mean, std = mean_std(values)
    return format(mean, spec) if std is None else f"{format(mean, spec)} ± {format(std, spec)}"


SUMMARY_KEYS = (("test_acc", ".2f"), ("cer", ".0f"), ("gen_gap", ".2f"), ("ece", ".2f"))


def summary(results) -> dict:
    """Per method: the seeds and, for each of the table's measures, every seed's value, mean and std."""
    out = {}
    for method, rs in _groups(results).items():
        entry = {"seeds": [r["config"]["seed"] for r in rs]}
        for key, _ in (*SUMMARY_KEYS, ("seconds", "")):
            values = [r["summary"].get(key) for r in rs]
            mean, std = mean_std(values) if None not in values else (None, None)
            entry[key] = {"values": values, "mean": mean, "std": std}
        out[method] = entry
    return out


def profile_text(cfg: dict) -> str:
    """``, profile authors`` for a run under a profile other than the paper's."""
    return f", profile {cfg['profile']}" if cfg.get("profile", "paper") != "paper" else ""


def table(results) -> str:
    """Markdown table: one row per method, the paper's columns plus ECE and wall time; over several seeds,
    mean ± sample std of each measure (time: mean per run). ``results``: ``{method: result}`` or
    ``{method: [result per seed]}``."""
    groups = _groups(results)
    first = next(iter(groups.values()))[0]
    cfg, ds = first["config"], first.get("dataset", {})
    seeds = sorted({r["config"]["seed"] for rs in groups.values() for r in rs})
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else \
        f"mean ± std over seeds {', '.join(map(str, seeds))}"
    lines = [f"{ds.get('name', cfg.get('dataset'))}, {cfg['arch']} (width {cfg['width']}), "
             f"{cfg['megabatches']} mega-batches, {cfg['replay']} replay, {cfg['epochs']} epochs, "
             f"{seed_text}{profile_text(cfg)}, {first.get('device', '')}", "",
             "| Method | Test Acc (↑) | CER (↓) | Gen. Gap (↓) | ECE % (↓) | Time (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for rs in groups.values():
        cells = [_cell([r["summary"].get(k) for r in rs], spec) for k, spec in SUMMARY_KEYS]
        seconds = mean_std([r["summary"]["seconds"] for r in rs])[0]
        lines.append(f"| {method_label(rs[0])} | {' | '.join(cells)} | {seconds:.1f} |")
    return "\n".join(lines) + "\n"


def curves(results, path: str) -> None:
    """Test accuracy after every mega-batch, one line per method (over several seeds: the mean, with a
    band of ± one standard deviation)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(results)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for rs in groups.values():
        xs = [m["index"] for m in rs[0]["megabatches"]]
        per_mb = [mean_std([r["megabatches"][i]["test_acc"] for r in rs]) for i in range(len(xs))]
        mean = [m for m, _ in per_mb]
        line, = ax.plot(xs, mean, marker="o", label=method_label(rs[0]) + (f" (n={len(rs)})" if len(rs) > 1 else ""))
        if len(rs) > 1:
            ax.fill_between(xs, [m - s for m, s in per_mb], [m + s for m, s in per_mb], color=line.get_color(),
                            alpha=0.2, linewidth=0)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("mega-batch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{next(iter(groups.values()))[0]['dataset']['name']}: test accuracy over the stream")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
