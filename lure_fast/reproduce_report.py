"""The report of ``lure-fast reproduce``: the same blocks (headings, tables, lists, figures) written as
Markdown (``report.md``, figures linked) and as one self-contained HTML page (``report.html``, figures
embedded), so a table can be pasted and the page mailed.

Every table gives our mean ± std over the seeds, the paper's value and ours minus the paper's; every
figure is redrawn from our runs, with the paper's points where its text gives numbers.
"""
from __future__ import annotations

import base64
import html
import os
import statistics

from . import paper as P
from .report import method_label

FIG_DIR = "figures"


# --------------------------------------------------------------------------- numbers


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def cell(values: list[float], spec: str) -> str:
    mean, std = _mean_std(values)
    return format(mean, spec) if std is None else f"{format(mean, spec)} ± {format(std, spec)}"


def paper_cell(value, std, spec: str) -> str:
    if value is None:
        return "—"
    return format(value, spec) if std is None else f"{format(value, spec)} ± {format(std, spec)}"


def diff(values: list[float], ref, spec: str) -> str:
    return "—" if ref is None or not values else format(statistics.fmean(values) - ref, "+" + spec)


# --------------------------------------------------------------------------- blocks -> md / html


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + b[1], ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "list":
            out += [f"- {x}" for x in b[1]] + [""]
        elif kind == "table":
            header, rows, align = b[1], b[2], b[3]
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
            out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
        elif kind == "img":
            out += [f"![{b[2]}]({b[1]})", ""]
    return "\n".join(out).rstrip() + "\n"


def to_html(blocks: list[tuple], root: str, title: str) -> str:
    e = html.escape
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           "<style>body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.25em .6em}"
           "td.r{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(b[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(b[1])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            header, rows, align = b[1], b[2], b[3]
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            for r in rows:
                out.append("<tr>" + "".join(f'<td class="{a}">{e(c)}</td>' for c, a in zip(r, align)) + "</tr>")
            out.append("</table>")
        elif kind == "img":
            path = os.path.join(root, b[1])
            if os.path.isfile(path):
                data = base64.b64encode(open(path, "rb").read()).decode()
                out.append(f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{e(b[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the report


def render(args, tables: list[str], figures: list[str], seeds: list[int], results: dict, missing: dict,
           ev: dict | None) -> tuple[str, str]:
    """``(markdown, html)`` of the whole report."""
    title = f"lure-fast reproduce: scale {args.scale}, profile {args.profile}, seeds {', '.join(map(str, seeds))}"
    blocks: list[tuple] = [("h1", title)]
    deviations: list[str] = []
    if args.scale != "paper":
        deviations.append(f"scale `{args.scale}` (the `{args.scale}` preset's images, network and epochs; a "
                          "longer stream keeps its number of mega-batches in proportion), not the paper's: absolute "
                          "numbers are not comparable, the ordering and the gaps are what to read")
    if args.profile != "paper":
        deviations.append(f"profile `{args.profile}`: the published code's behaviour (docs/protocol.md)")
    ran: dict[str, str] = {}
    for name in tables:
        blocks += table_blocks(P.TABLES[name], results, missing, ran, deviations)
    for name in figures:
        blocks += figure_blocks(args.out, name, results, missing, ev, deviations)
    datasets = {r.stream: r.dataset for t in P.TABLES.values() for r in t.rows} | {P.GRID_ROW.stream: "cifar10"}
    for stream, key in results:  # the streams only figures used
        describe(stream, datasets[stream], results[(stream, key)][0], ran, deviations)
    for stream, why in missing.items():
        deviations.append(f"`{stream}`: not run ({why})")
    blocks += [("h2", "What ran"), ("list", [f"`{s}`: {d}" for s, d in ran.items()] or ["nothing"]),
               ("h2", "Deviations from the paper"), ("list", list(dict.fromkeys(deviations)) or ["none"])]
    return to_markdown(blocks), to_html(blocks, args.out, title)


def describe(stream: str, dataset: str, result: dict, ran: dict, deviations: list) -> None:
    """What ran in ``stream`` (from one of its runs) and how its data deviates from the paper's."""
    if stream in ran:
        return
    c, mb1 = result["config"], result["megabatches"][0]
    extra = [f"label noise {c['label_noise']:g}"] if c.get("label_noise") else []
    extra += [f"{c['shots']} images per class"] if c.get("shots") else []
    replay = "no" if c["replay"] == "none" else c["replay"]
    ran[stream] = (f"{c['megabatches']} mega-batches of {mb1['train_size'] + mb1['val_size']}, {replay} "
                   f"replay, {c['epochs']} epochs, {c['arch']} width {c['width']}" +
                   "".join(", " + x for x in extra))
    ds = result.get("dataset", {})
    if ds.get("name", dataset) != dataset:
        deviations.append(f"`{stream}`: ran on `{ds.get('name')}`")
    if ds.get("layout") == "imagefolder":
        deviations.append(f"`{stream}`: images read from an ImageFolder (the project's CIFAR-10 copy is JPEG, "
                          "quality 75), not the released pickles")


def table_blocks(table: P.Table, results: dict, missing: dict, ran: dict, deviations: list) -> list[tuple]:
    header = ["row", "method", "test acc (ours)", "paper", "ours − paper", "CER (ours)", "paper", "ours − paper",
              "gap (ours)", "paper", "ours − paper"]
    rows = []
    for row in table.rows:
        for variant, pv in row.variants:
            acc_p, std_p, cer_p, gap_p = pv if pv is not None else (None, None, None, None)
            if row.stream in missing:
                rows.append([row.label, variant.label, "not run", paper_cell(acc_p, std_p, ".2f"), "",
                             "", paper_cell(cer_p, None, ".0f"), "", "", paper_cell(gap_p, None, ".2f"),
                             missing[row.stream]])
                continue
            rs = results[(row.stream, variant.key)]
            describe(row.stream, row.dataset, rs[0], ran, deviations)
            acc = [r["summary"]["test_acc"] for r in rs]
            cer = [r["summary"]["cer"] for r in rs]
            gap = [r["summary"]["gen_gap"] for r in rs]
            rows.append([row.label, method_label(rs[0]), cell(acc, ".2f"), paper_cell(acc_p, std_p, ".2f"),
                         diff(acc, acc_p, ".2f"), cell(cer, ".0f"), paper_cell(cer_p, None, ".0f"),
                         diff(cer, cer_p, ".0f"), cell(gap, ".2f"), paper_cell(gap_p, None, ".2f"),
                         diff(gap, gap_p, ".2f")])
    blocks = [("h2", table.title), ("table", header, rows, "ll" + "r" * 9)]
    return blocks + ([("p", table.note)] if table.note else [])


def _by_method(ev: dict, key: str) -> dict[str, list[dict]]:
    """``{method: [entry, ...]}`` in the paper's order; the method read from each run's folder
    (``<stream>/<method>[/seed-<s>]``), as eval.json's ``method`` is the table label."""
    out: dict[str, list[dict]] = {}
    for r in ev["runs"]:
        parts = os.path.normpath(r["folder"]).split(os.sep)
        m = next((p for p in reversed(parts) if p in P.METHODS), None)
        if key in r and m is not None:
            out.setdefault(m, []).append(r[key])
    return {m: out[m] for m in P.METHODS if m in out}


def figure_blocks(root: str, name: str, results: dict, missing: dict, ev: dict | None,
                  deviations: list) -> list[tuple]:
    fig = P.FIGURES[name]
    blocks: list[tuple] = [("h2", fig.title)]
    for part in fig.parts:
        if part[0] == "evaluate":
            if ev is None:
                blocks.append(("p", f"Not run: {missing.get('evaluate', 'the evaluated runs are missing')}."))
                continue
            blocks += evaluation_blocks(part[1], ev, fig, deviations)
        elif part[0] == "noise":
            blocks += noise_blocks(root, results, missing)
        else:
            blocks += grid_blocks(root, name, part[1], results, missing, fig)
    if fig.note:
        blocks.append(("p", fig.note))
    return blocks


def evaluation_blocks(what: str, ev: dict, fig: P.Figure, deviations: list) -> list[tuple]:
    groups = _by_method(ev, what)
    labels = {"bl": "BL", "llf": "LLF", "sp": "S&P", "lure": "LURE"}
    secs = ev.get("seconds", {}).get(what)
    timing = f" ({secs:.0f} s of evaluation on {ev.get('device', '?')})" if secs is not None else ""
    png = f"evaluate/{what}.png"
    if what == "corruptions":
        paper = fig.paper.get("mca", {})
        src = {e["source"] for es in groups.values() for e in es}
        if "generated" in src:
            deviations.append("Figure 2: CIFAR-10-C generated from our test images (docs/evaluate.md), not the "
                              "released files")
        rows = [[labels[m], cell([e["mean"] for e in es], ".2f"), paper_cell(paper.get(m), None, ".0f"),
                 diff([e["mean"] for e in es], paper.get(m), ".2f")] for m, es in groups.items()]
        table = ("table", ["method", "mean corruption acc (ours)", "paper", "ours − paper"], rows, "lrrr")
        text = f"Mean over every corruption and severity, {'/'.join(sorted(src))}{timing}."
    elif what == "pgd":
        eps = list(ev.get("eps_255", []))
        rows = [[labels[m], cell([e["clean"] for e in es], ".2f")] +
                [cell([e["robust"][f"{x:g}"] for e in es], ".2f") for x in eps] for m, es in groups.items()]
        table = ("table", ["method", "clean"] + [f"eps {x:g}/255" for x in eps], rows, "l" + "r" * (len(eps) + 1))
        text = f"PGD-10, L-inf, step 2.5·eps/10, random start; robust accuracy %{timing}. The paper gives no numbers."
    elif what == "calibration":
        rows = [[labels[m], cell([e["ece"] for e in es], ".2f")] for m, es in groups.items()]
        table = ("table", ["method", "ECE % (15 bins)"], rows, "lr")
        text = f"Expected calibration error on the test set{timing}. The paper's ECE values are in its figure only."
    else:  # flatness
        scales = [f"{s:g}" for s in ev.get("noise_scales", [])]
        rows = [[labels[m]] + [cell([e["accuracy"][s]["mean"] for e in es], ".2f") for s in scales]
                for m, es in groups.items()]
        table = ("table", ["method"] + [f"noise {s}" for s in scales], rows, "l" + "r" * len(scales))
        text = f"Train accuracy with Gaussian noise on every parameter, {ev.get('noise', '')}{timing}."
    return [("h3", what), ("p", text), table, ("img", png, f"{fig.title}: {what}")]


def noise_blocks(root: str, results: dict, missing: dict) -> list[tuple]:
    table = P.TABLES["table9"]
    rates, series, paper = [], {}, {}
    for row in table.rows:
        if row.stream in missing:
            continue
        rates.append(row.label_noise)
        for v, pv in row.variants:
            accs = [r["summary"]["test_acc"] for r in results[(row.stream, v.key)]]
            series.setdefault(v.method, []).append(_mean_std(accs))
            paper.setdefault(v.method, []).append((row.label_noise, None if pv is None else pv[0]))
    if not rates:
        return [("p", "Noisy labels: not run (" + "; ".join(missing[r.stream] for r in table.rows) + ").")]
    path = os.path.join(FIG_DIR, "noise.png")
    _plot_noise(os.path.join(root, path), rates, series, paper)
    header = ["method"] + [f"{100 * r:g} % (ours)" for r in rates] + [f"{100 * r:g} % (paper)" for r in rates]
    rows = [[P.LABELS[m]] + [paper_cell(a, sd, ".2f") for a, sd in pts] +
            [paper_cell(a, None, ".2f") for _, a in paper[m]] for m, pts in series.items()]
    return [("h3", "noisy labels"), ("table", header, rows, "l" + "r" * (2 * len(rates))), ("p", "Test accuracy (clean test set) against the share of training and "
                                          "validation labels replaced at random; hollow markers: the paper's "
                                          "Table 9."), ("img", path, "test accuracy under noisy labels")]


def _plot_noise(path: str, rates, series, paper) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (m, pts) in enumerate(series.items()):
        color = f"C{i}"
        ax.errorbar([100 * r for r in rates], [p[0] for p in pts], yerr=[p[1] or 0 for p in pts], marker="o",
                    color=color, label=P.LABELS[m], capsize=3)
        pp = [(100 * r, a) for r, a in paper[m] if a is not None]
        if pp:
            ax.plot(*zip(*pp), linestyle="none", marker="s", mfc="none", color=color,
                    label="the paper (Table 9)" if i == 0 else None)
    ax.set_xlabel("noisy labels (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def grid_blocks(root: str, name: str, methods: tuple, results: dict, missing: dict, fig: P.Figure) -> list[tuple]:
    row = P.GRID_ROW
    if row.stream in missing:
        return [("p", f"Learning rate x weight decay: not run ({missing[row.stream]}).")]
    cells = {}
    for v, _ in row.variants:
        if v.method in methods and (row.stream, v.key) in results:
            s = dict(v.settings)
            cells[(v.method, s["lr"], s["weight_decay"])] = _mean_std(
                [r["summary"]["test_acc"] for r in results[(row.stream, v.key)]])
    path = os.path.join(FIG_DIR, f"grid-{name}.png")
    _plot_grid(os.path.join(root, path), methods, cells)
    header = ["method", "weight decay"] + [f"lr {lr:g}" for lr in P.GRID_LR]
    rows = [[P.LABELS[m], f"{wd:g}"] + [paper_cell(*cells[(m, lr, wd)], ".2f") for lr in P.GRID_LR]
            for m in methods for wd in P.GRID_WD]
    blocks = [("h3", "learning rate x weight decay"), ("table", header, rows, "ll" + "r" * len(P.GRID_LR)),
              ("img", path, f"{fig.title}: test accuracy per learning rate and weight decay")]
    for m, lr, wd, value, words in fig.paper.get("points", ()):
        if m in methods:
            ours = cells[(m, lr, wd)][0]
            blocks.append(("p", f"The paper: {P.LABELS[m]} at lr {lr:g}, weight decay {wd:g} {words}; "
                                f"ours {ours:.2f} ({ours - value:+.2f} against {value:g})."))
    return blocks


def _plot_grid(path: str, methods, cells) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig, axes = plt.subplots(1, len(methods), figsize=(2.8 * len(methods) + 1, 3.4), squeeze=False,
                             layout="constrained")
    vals = [v[0] for v in cells.values()]
    lo, hi = min(vals), max(vals)
    for ax, m in zip(axes[0], methods):
        a = np.array([[cells[(m, lr, wd)][0] for lr in P.GRID_LR] for wd in P.GRID_WD])
        im = ax.imshow(a, vmin=lo, vmax=hi, cmap="viridis", aspect="auto")
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                ax.text(j, i, f"{a[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="k" if a[i, j] > (lo + hi) / 2 else "w")
        ax.set_xticks(range(len(P.GRID_LR)), [f"{x:g}" for x in P.GRID_LR])
        ax.set_yticks(range(len(P.GRID_WD)), [f"{x:g}" for x in P.GRID_WD] if m == methods[0] else [])
        ax.set_xlabel("learning rate")
        ax.set_title(P.LABELS[m], fontsize=9)
    axes[0][0].set_ylabel("weight decay")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="test accuracy (%)")
    fig.savefig(path, dpi=120)
    plt.close(fig)
