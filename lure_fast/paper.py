"""The paper's numbers, typed in from its text (``../shared/seeds/lure-paper.txt``; SPEC §6 holds the main
ones), each with its table or figure, and the experiment behind each table and figure: its rows, their
stream (data, replay, mega-batch count at the paper's scale, network, label noise, few-shot) and the
variants (a method with its own settings) each row compares.

A paper value is ``(test accuracy, its std or None, CER, generalisation gap)``; the paper gives no std
in Tables 7, 8 and 9. Figures carry their numbers where the paper's text states them (Figure 2's mean
corruption accuracies, Figure 6's two points); Figure 3 right plots Table 9.
"""
from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("bl", "llf", "sp", "lure")  # the paper's row order

# data sets: the reproduce flag that points at each, its classes, its training images (paper scale)
DATASETS = {
    "cifar10": {"flag": "--data", "classes": 10, "train": 50_000, "title": "CIFAR-10"},
    "cifar100": {"flag": "--data-cifar100", "classes": 100, "train": 50_000, "title": "CIFAR-100"},
    "rimagenet": {"flag": "--data-rimagenet", "classes": 14, "train": 89_517, "title": "Restricted ImageNet"},
}


@dataclass(frozen=True)
class Variant:
    """One line of a table: a method and the settings it adds (LURE at 5 %, LURE with FIM, BL at lr 0.01)."""
    key: str                       # its folder in the stream's folder, e.g. "lure", "lure-fim", "bl-lr0.01-wd0.001"
    method: str
    label: str                     # as the table prints it
    settings: tuple = ()           # ((name, value), ...)


@dataclass(frozen=True)
class Row:
    """Rows of a table that share one stream, hence one folder of runs."""
    label: str                     # the row's first cell: "CIFAR-10", "t = 25", "ResNet-50", "20 %"
    stream: str                    # folder of its runs (shared between tables where the stream is the same)
    dataset: str
    replay: str = "full"
    t: int = 8                     # mega-batches at the paper's scale
    arch: str = "resnet18"
    label_noise: float = 0.0
    shots: int | None = None
    variants: tuple = ()           # ((Variant, paper value or None), ...)


@dataclass(frozen=True)
class Table:
    title: str
    rows: tuple
    columns: tuple = ("test_acc", "cer", "gen_gap")
    note: str = ""


@dataclass(frozen=True)
class Figure:
    """Its panels, each ``("evaluate", what)`` (lure-fast evaluate on the Table 6 ResNet-18 runs: BL, LLF,
    S&P, LURE), ``("noise",)`` (Table 9's runs as lines) or ``("grid", methods)`` (the lr x wd grid)."""
    title: str
    parts: tuple
    paper: dict = field(default_factory=dict)
    note: str = ""


LABELS = {"bl": "BL (warm start)", "llf": "LLF", "sp": "S&P", "lure": "LURE (SNIP, 20 %)"}


def _v(method: str, key: str | None = None, label: str | None = None, **settings) -> Variant:
    return Variant(key or method, method, label or LABELS[method], tuple(sorted(settings.items())))


BL, LLF, SP, LURE = (_v(m) for m in METHODS)


def _four(values: dict) -> tuple:
    return tuple((v, values.get(v.method)) for v in (BL, LLF, SP, LURE))


def _row(label, stream, dataset, values, **kw) -> Row:
    return Row(label, stream, dataset, variants=_four(values), **kw)


TABLES: dict[str, Table] = {
    "table1": Table("Table 1: full replay, t = 8 (Restricted ImageNet t = 3)", (
        _row("CIFAR-10", "table1/cifar10", "cifar10", {
            "bl": (89.47, 0.51, 11760, 8.98), "llf": (91.43, 0.70, 10103, 7.22),
            "sp": (91.76, 0.26, 10206, 7.72), "lure": (93.32, 0.58, 9622, 6.60)}),
        _row("CIFAR-100", "table1/cifar100", "cifar100", {
            "bl": (62.96, 0.53, 39010, 31.54), "llf": (67.04, 0.68, 34575, 21.23),
            "sp": (64.48, 0.11, 36303, 28.58), "lure": (69.60, 0.82, 33037, 22.37)}),
        _row("Restricted ImageNet", "table1/rimagenet", "rimagenet", {
            "bl": (81.39, 0.48, 2967, 4.90), "llf": (82.10, 0.85, 2854, 4.88),
            "sp": (80.80, 0.39, 2996, 5.10), "lure": (85.52, 0.22, 2699, 4.84)}, t=3),
    )),
    "table2": Table("Table 2: buffer replay (186 per mega-batch), t = 8", (
        _row("CIFAR-10", "table2/cifar10", "cifar10", {
            "bl": (88.01, 0.93, 15784, 13.01), "llf": (87.51, 0.82, 15045, 13.22),
            "sp": (84.62, 0.74, 15549, 14.72), "lure": (89.8, 0.58, 13629, 11.92)}, replay="buffer"),
        _row("CIFAR-100", "table2/cifar100", "cifar100", {
            "bl": (62.68, 0.74, 39178, 31.33), "llf": (67.29, 0.58, 34416, 24.86),
            "sp": (65.07, 0.60, 36040, 27.79), "lure": (72.04, 0.35, 33037, 26.59)}, replay="buffer"),
        _row("Restricted ImageNet", "table2/rimagenet", "rimagenet", {
            "bl": (75.97, 0.55, 3284, 8.72), "llf": (76.40, 0.65, 3245, 9.07),
            "sp": (74.75, 0.38, 3857, 8.20), "lure": (78.58, 0.49, 3376, 7.94)}, replay="buffer", t=3),
    )),
    "table3": Table("Table 3: no replay, t = 8", (
        _row("CIFAR-10", "table3/cifar10", "cifar10", {
            "bl": (80.86, 1.01, 16789, 16.85), "llf": (86.11, 0.59, 15294, 14.66),
            "sp": (81.92, 0.62, 16133, 16.36), "lure": (88.96, 0.24, 13953, 12.14)}, replay="none"),
        _row("CIFAR-100", "table3/cifar100", "cifar100", {
            "bl": (48.79, 0.75, 44128, 49.95), "llf": (50.38, 0.54, 44816, 50.80),
            "sp": (49.26, 0.59, 44581, 51.45), "lure": (55.37, 0.63, 43348, 46.69)}, replay="none"),
        _row("Restricted ImageNet", "table3/rimagenet", "rimagenet", {
            "bl": (73.36, 0.88, 3450, 9.68), "llf": (76.40, 0.65, 3515, 8.15),
            "sp": (73.36, 0.78, 3464, 8.13), "lure": (77.97, 0.43, 3367, 7.90)}, replay="none", t=3),
    )),
    "table4": Table("Table 4: longer sequences, full replay, CIFAR-10", (
        _row("t = 25", "table4/t25", "cifar10", {
            "bl": (89.94, 0.54, 43029, 6.80), "llf": (89.80, 0.62, 42961, 6.52),
            "sp": (88.37, 0.26, 43578, 5.94), "lure": (90.55, 0.34, 42790, 6.79)}, t=25),
        _row("t = 50", "table4/t50", "cifar10", {
            "bl": (89.12, 0.61, 87843, 6.02), "llf": (90.26, 0.82, 87826, 5.75),
            "sp": (88.32, 0.35, 85798, 6.11), "lure": (90.97, 0.67, 85487, 5.18)}, t=50),
        _row("t = 100", "table4/t100", "cifar10", {
            "bl": (89.64, 0.69, 176954, 6.46), "llf": (89.48, 0.77, 173505, 7.21),
            "sp": (88.01, 0.44, 182294, 5.56), "lure": (91.95, 0.53, 170178, 5.66)}, t=100),
    )),
    "table5": Table("Table 5: few-shot (270 images per class), ResNet-50, Restricted ImageNet", (
        _row("t = 30", "table5/t30", "rimagenet", {
            "bl": (45.82, 0.55, 73514, 47.93), "llf": (47.60, 0.61, 72868, 43.50),
            "sp": (45.92, 0.38, 72954, 45.61), "lure": (46.97, 0.79, 71542, 42.56)},
             t=30, arch="resnet50", shots=270),
        _row("t = 70", "table5/t70", "rimagenet", {
            "bl": (53.43, 0.49, 156332, 41.17), "llf": (54.53, 0.68, 149493, 32.57),
            "sp": (53.90, 0.24, 150332, 40.87), "lure": (55.65, 0.52, 148478, 28.35)},
             t=70, arch="resnet50", shots=270),
    )),
    "table6": Table("Table 6: architectures, full replay, t = 4, CIFAR-10", (
        _row("ResNet-18", "table6/cifar10", "cifar10", {
            "bl": (89.31, 0.61, 5657, 7.90), "llf": (91.80, 0.43, 5466, 7.68),
            "sp": (90.50, 0.51, 5667, 7.80), "lure": (93.73, 0.35, 4409, 7.48)}, t=4),
        _row("ResNet-50", "table6/resnet50", "cifar10", {
            "bl": (89.53, 0.58, 6854, 7.83), "llf": (89.49, 0.45, 6782, 6.78),
            "sp": (89.15, 0.61, 6940, 6.98), "lure": (92.75, 0.73, 6682, 6.62)}, t=4, arch="resnet50"),
        _row("Wide-ResNet-50-2", "table6/wrn50_2", "cifar10", {
            "bl": (90.10, 0.69, 5978, 6.84), "llf": (89.72, 0.36, 6000, 5.70),
            "sp": (89.38, 0.61, 6292, 5.96), "lure": (93.78, 0.54, 5557, 5.81)}, t=4, arch="wrn50_2"),
        _row("VGG16-BN", "table6/vgg16_bn", "cifar10", {
            "bl": (89.32, 0.74, 5650, 9.62), "llf": (87.85, 0.58, 6124, 6.17),
            "sp": (88.25, 0.86, 5720, 8.11), "lure": (92.67, 0.47, 4439, 8.55)}, t=4, arch="vgg16_bn"),
    )),
    "table7": Table("Table 7: share of parameters re-initialised, LURE, full replay, t = 8, CIFAR-10", (
        Row("CIFAR-10", "table1/cifar10", "cifar10", variants=tuple(
            (_v("lure", "lure" if p == 20 else f"lure-p{p}", f"LURE {p} %", **({} if p == 20 else
                                                                               {"reinit_fraction": p / 100})), v)
            for p, v in ((5, (89.84, None, 11955, 6.83)), (10, (91.81, None, 11571, 7.22)),
                         (20, (94.32, None, 9622, 6.60)), (30, (90.73, None, 11806, 7.91)),
                         (40, (90.79, None, 11559, 6.57))))),
    ), note="The paper's 20 % row (94.32) differs from its own Table 1 LURE (93.32) with the same CER."),
    "table8": Table("Table 8: importance criterion, LURE, full replay, t = 4, CIFAR-10", (
        Row("CIFAR-10", "table6/cifar10", "cifar10", t=4, variants=(
            (BL, (89.31, None, 5657, 7.904)),
            (_v("lure", "lure-fim", "LURE (FIM)", importance="fim"), (92.73, None, 4346, 8.39)),
            (_v("lure", "lure-magnitude", "LURE (weight magnitude)", importance="magnitude"),
             (92.18, None, 4547, 8.53)),
            (_v("lure", "lure-random", "LURE (random)", importance="random"), None),
            (LURE, (93.73, None, 4409, 7.48)))),
    ), note="The text names random importance too; the table gives no number for it."),
    "table9": Table("Table 9: noisy labels, full replay, t = 4, CIFAR-10", (
        _row("0 %", "table6/cifar10", "cifar10", {
            "bl": (89.31, None, 5657, 7.90), "llf": (91.80, None, 5466, 7.68),
            "sp": (90.50, None, 5667, 7.80), "lure": (93.73, None, 4409, 7.48)}, t=4),
        _row("20 %", "table9/noise20", "cifar10", {
            "bl": (80.88, None, 9460, 18.44), "llf": (85.80, None, 7827, 9.90),
            "sp": (84.54, None, 8081, 12.41), "lure": (86.79, None, 7551, 8.70)}, t=4, label_noise=0.2),
        _row("40 %", "table9/noise40", "cifar10", {
            "bl": (79.13, None, 10854, 20.76), "llf": (82.74, None, 9411, 8.40),
            "sp": (82.41, None, 9839, 10.48)}, t=4, label_noise=0.4),
    ), note="The paper's text breaks off inside the 40 % rows: LURE at 40 % has no number here."),
}

# Figure 5 right and Figure 6: learning rate x weight decay (the text names lr 0.005 with wd 0.001)
GRID_LR = (0.1, 0.01, 0.005)
GRID_WD = (1e-4, 5e-4, 1e-3)


def grid_variants(methods=METHODS) -> tuple:
    return tuple((_v(m, f"{m}-lr{lr:g}-wd{wd:g}", None, lr=lr, weight_decay=wd), None)
                 for m in methods for lr in GRID_LR for wd in GRID_WD)


GRID_ROW = Row("CIFAR-10", "fig6/grid", "cifar10", t=4, variants=grid_variants())

FIGURES: dict[str, Figure] = {
    "fig2": Figure("Figure 2: natural corruptions (CIFAR-10-C)", (("evaluate", "corruptions"),),
                   paper={"mca": {"bl": 68, "llf": 72, "sp": 71, "lure": 74}},
                   note="The paper's mean corruption accuracy per method is stated in its text (section 6.1)."),
    "fig3": Figure("Figure 3: adversarial robustness (PGD-10, left) and noisy labels (right)",
                   (("evaluate", "pgd"), ("noise",)),
                   note="The right panel is Table 9 as lines, the paper's points its Table 9 values."),
    "fig4": Figure("Figure 4: calibration (ECE, 15 bins) and reliability diagrams", (("evaluate", "calibration"),)),
    "fig5": Figure("Figure 5: flatness (left); learning rate x weight decay, BL and LURE (right)",
                   (("evaluate", "flatness"), ("grid", ("bl", "lure")))),
    "fig6": Figure("Figure 6: learning rate x weight decay, every method", (("grid", METHODS),),
                   paper={"points": (("bl", 0.005, 1e-3, 75.0, "decreases to 75 %"),
                                     ("lure", 0.005, 1e-3, 94.0, "remains above 94 %"))}),
}
# the runs the evaluations of Figures 2 to 5 read: Table 6's ResNet-18 row (full replay, t = 4, as Table 9
# and the grid; the paper does not say which runs its evaluation figures used)
EVAL_ROW = TABLES["table6"].rows[0]
