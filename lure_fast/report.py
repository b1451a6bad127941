"""Paper-style results table (Markdown) and test-accuracy curves (PNG) for a comparison."""
from __future__ import annotations

LABELS = {"bl": "BL (warm start)", "lure": "LURE", "sp": "S&P", "llf": "LLF", "fc": "FC reset", "cold": "Cold start"}


def method_label(result: dict) -> str:
    cfg = result["config"]
    label = LABELS.get(cfg["method"], cfg["method"])
    if cfg["method"] == "lure":
        label += f" ({cfg['importance'].upper() if cfg['importance'] in ('snip', 'fim') else cfg['importance']}, " \
                 f"{100 * cfg['reinit_fraction']:g} %)"
    return label


def table(results: dict[str, dict]) -> str:
    """Markdown table: one row per method, the paper's columns plus ECE and wall time."""
    first = next(iter(results.values()))
    cfg, ds = first["config"], first.get("dataset", {})
    lines = [f"{ds.get('name', cfg.get('dataset'))}, {cfg['arch']} (width {cfg['width']}), "
             f"{cfg['megabatches']} mega-batches, {cfg['replay']} replay, {cfg['epochs']} epochs, "
             f"seed {cfg['seed']}, {first.get('device', '')}", "",
             "| Method | Test Acc (↑) | CER (↓) | Gen. Gap (↓) | ECE % (↓) | Time (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results.values():
        s = r["summary"]
        ece = "" if s.get("ece") is None else f"{s['ece']:.2f}"
        lines.append(f"| {method_label(r)} | {s['test_acc']:.2f} | {s['cer']} | {s['gen_gap']:.2f} | {ece} | "
                     f"{s['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def curves(results: dict[str, dict], path: str) -> None:
    """Test accuracy after every mega-batch, one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in results.values():
        mbs = r["megabatches"]
        ax.plot([m["index"] for m in mbs], [m["test_acc"] for m in mbs], marker="o", label=method_label(r))
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("mega-batch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{next(iter(results.values()))['dataset']['name']}: test accuracy over the stream")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
