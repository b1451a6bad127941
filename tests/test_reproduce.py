"""`lure-fast reproduce`: a paper table or figure as one resumable command, with the paper's numbers beside ours."""
import base64
import json
import os
import re
import signal
from pathlib import Path

import pytest

from lure_fast import config as C
from lure_fast import paper as P
from lure_fast import reproduce as Rp
from lure_fast.cli import main

from lf_helpers import run_cli

TINY = ["--scale", "tiny", "--seeds", "0", "--quiet", "--threads", "1"]
SPEC = Path(__file__).resolve().parents[2] / "shared" / "docs" / "SPEC.md"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _num(cell: str) -> float:
    return float(cell.split("±")[0])


def test_table1_at_tiny_scale_end_to_end(tmp_path):
    out = tmp_path / "rep"
    assert main(["reproduce", "table1", *TINY, "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert report.startswith("# lure-fast reproduce: scale tiny, profile paper, seeds 0")
    rows = [_cells(line) for line in report.splitlines() if line.startswith("| CIFAR-10 |")]
    assert [r[1] for r in rows] == ["BL (warm start)", "LLF", "S&P", "LURE (SNIP, 20 %)"]  # the paper's order
    assert rows[0][3] == "89.47 ± 0.51" and rows[0][6] == "11760" and rows[3][3] == "93.32 ± 0.58"
    for r in rows:  # ours − paper is our mean minus the paper's value, for accuracy, CER and gap
        for ours, ref, d in ((2, 3, 4), (5, 6, 7), (8, 9, 10)):
            assert _num(r[d]) == pytest.approx(_num(r[ours]) - _num(r[ref]), abs=0.011)
    assert "- `table1/cifar10`: 2 mega-batches of 100, full replay, 2 epochs, resnet18 width 8" in report
    assert "| CIFAR-100 | BL (warm start) | not run |" in report and "pass --data-cifar100 DIR" in report
    assert "| Restricted ImageNet | LLF | not run |" in report and "pass --data-rimagenet DIR" in report
    assert "ran on `digits`" in report and "scale `tiny`" in report
    for m in P.METHODS:
        assert (out / "table1" / "cifar10" / m / "results.json").is_file()
    page = (out / "report.html").read_text()
    assert page.count("<table>") == 1 and "89.47 ± 0.51" in page and "Deviations from the paper" in page


def test_a_second_call_skips_finished_runs(tmp_path):
    out = tmp_path / "rep"
    assert main(["reproduce", "table3", *TINY, "--out", str(out)]) == 0
    files = sorted((out / "table3").rglob("results.json"))
    before = {f: os.stat(f).st_mtime_ns for f in files}
    assert len(files) == 4
    assert main(["reproduce", "table3", *TINY, "--out", str(out)]) == 0
    assert {f: os.stat(f).st_mtime_ns for f in files} == before  # nothing trained again
    assert "- `table3/cifar10`: 2 mega-batches of 100, no replay," in (out / "report.md").read_text()


def test_a_killed_reproduce_resumes_without_redoing_finished_runs(tmp_path):
    out = str(tmp_path / "rep")
    args = ["reproduce", "table3", *TINY, "--out", out]
    killed = run_cli(*args, env={"LURE_FAST_FAULT": "run:2+epoch_end:2:0"})  # inside the second run (LLF)
    assert killed.returncode == -signal.SIGKILL
    bl, llf = Path(out, "table3", "cifar10", "bl"), Path(out, "table3", "cifar10", "llf")
    assert (bl / "results.json").is_file() and not (llf / "results.json").exists()
    assert "[llf] mega-batch 1/2" in killed.stderr
    done = os.stat(bl / "results.json").st_mtime_ns
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert os.stat(bl / "results.json").st_mtime_ns == done  # BL not trained again
    assert "[bl]" not in again.stderr
    assert "[llf] mega-batch 2/2" in again.stderr and "[llf] mega-batch 1/2" not in again.stderr  # resumed
    assert all(Path(out, "table3", "cifar10", m, "results.json").is_file() for m in P.METHODS)
    assert "| CIFAR-10 | LURE (SNIP, 20 %) |" in Path(out, "report.md").read_text()


def test_a_figure_end_to_end_with_the_evaluation_and_table_9(tmp_path):
    out = tmp_path / "rep"
    assert main(["reproduce", "fig3", *TINY, "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## Figure 3" in report and "| method | clean | eps 0.5/255 |" in report
    noise = [_cells(line) for line in report.splitlines() if line.startswith("| BL (warm start) |")]
    assert noise and noise[-1][4:] == ["89.31", "80.88", "79.13"]  # the paper's Table 9 points beside ours
    assert "- `table9/noise20`: 2 mega-batches of 100, full replay, 2 epochs, resnet18 width 8, label noise 0.2" \
        in report
    for png in ("evaluate/pgd.png", "figures/noise.png"):
        assert f"]({png})" in report and (out / png).is_file()
    page = (out / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == 2 and all(base64.b64decode(e).startswith(b"\x89PNG") for e in embedded)
    ev = json.loads((out / "evaluate" / "eval.json").read_text())
    assert len(ev["runs"]) == 4 and ev["what"] == ["pgd"]
    before = os.stat(out / "evaluate" / "eval.json").st_mtime_ns
    assert main(["reproduce", "fig3", *TINY, "--out", str(out)]) == 0
    assert os.stat(out / "evaluate" / "eval.json").st_mtime_ns == before  # not evaluated again


@pytest.mark.parametrize("argv,needle", [(["table10"], "unknown"), (["fig1"], "unknown"),
                                         (["table1", "--scale", "huge"], "--scale huge"),
                                         (["table1", "--profile", "mine"], "--profile mine"),
                                         (["table1", "--seeds", "1,1"], "distinct")])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, needle):
    assert main(["reproduce", argv[0], *TINY, *argv[1:], "--out", str(tmp_path / "r")]) == 2  # the last flag wins
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "r").exists()


def test_a_folder_of_other_settings_is_refused(tmp_path, capsys):
    out = str(tmp_path / "rep")
    assert main(["reproduce", "table3", *TINY, "--out", out]) == 0
    report = Path(out, "report.md").read_text()
    assert main(["reproduce", "table3", *TINY, "--profile", "authors", "--out", out]) == 2
    assert "settings" in capsys.readouterr().err
    assert Path(out, "report.md").read_text() == report  # nothing written over


def _resolved(table: str, row: int, scale: str, profile: str = "paper", method: str = "bl") -> C.RunConfig:
    r = P.TABLES[table].rows[row]
    return C.resolve({**Rp.stream_settings(r, scale, profile, "x"), "method": method})


def test_each_table_runs_the_papers_stream():
    assert [_resolved(n, 0, "paper").replay for n in ("table1", "table2", "table3", "table6")] == \
        ["full", "buffer", "none", "full"]
    assert (_resolved("table1", 0, "paper").megabatches, _resolved("table6", 0, "paper").megabatches) == (8, 4)
    assert [_resolved("table4", i, "paper").megabatches for i in range(3)] == [25, 50, 100]
    assert _resolved("table1", 2, "paper").megabatches == 3  # Restricted ImageNet
    assert [_resolved("table6", i, "paper").arch for i in range(4)] == ["resnet18", "resnet50", "wrn50_2", "vgg16_bn"]
    assert [_resolved("table9", i, "paper").label_noise for i in range(3)] == [0.0, 0.2, 0.4]
    small1, small6 = _resolved("table1", 0, "small", "authors"), _resolved("table6", 0, "small", "authors")
    assert (small1.megabatches * small1.megabatch_size, small6.megabatches) == (6000, 2)
    assert small6.megabatch_size == 3000 and small6.profile == "authors" and small6.lr_gamma == 1.0
    # a longer stream keeps its count in proportion to the preset's 3 mega-batches (of the paper's 8)
    assert [(c.megabatches, c.megabatch_size) for c in (_resolved("table4", i, "small") for i in range(3))] == \
        [(9, 666), (19, 315), (38, 157)]
    t5 = Rp.stream_settings(P.TABLES["table5"].rows[0], "paper", "paper", "x")
    assert (t5["megabatches"], t5["megabatch_size"], t5["shots"], t5["arch"]) == (30, 126, 270, "resnet50")
    assert t5["dataset"] == "restricted_imagenet" and "dataset" not in Rp.stream_settings(
        P.TABLES["table1"].rows[0], "paper", "paper", "x")  # its 14 superclasses read from the ImageNet folder


def test_variants_set_what_their_table_varies():
    t7 = {v.key: C.resolve({**dict(v.settings), "method": v.method}) for v, _ in P.TABLES["table7"].rows[0].variants}
    assert [c.reinit_fraction for c in t7.values()] == [0.05, 0.1, 0.2, 0.3, 0.4]
    t8 = {v.key: (v.method, dict(v.settings).get("importance")) for v, _ in P.TABLES["table8"].rows[0].variants}
    assert t8 == {"bl": ("bl", None), "lure-fim": ("lure", "fim"), "lure-magnitude": ("lure", "magnitude"),
                  "lure-random": ("lure", "random"), "lure": ("lure", None)}
    grid = {(v.method, dict(v.settings)["lr"], dict(v.settings)["weight_decay"]) for v, _ in P.GRID_ROW.variants}
    assert len(grid) == 4 * len(P.GRID_LR) * len(P.GRID_WD) and ("bl", 0.005, 0.001) in grid


def test_rows_sharing_a_folder_share_its_stream():
    """Table 9's 0 % row, Table 8 and the evaluated runs reuse Table 6's ResNet-18 runs: only where the
    stream is the same."""
    rows: dict[str, P.Row] = {}
    for t in P.TABLES.values():
        for r in (*t.rows, P.GRID_ROW):
            first = rows.setdefault(r.stream, r)
            assert (first.dataset, first.replay, first.t, first.arch, first.label_noise, first.shots) == \
                (r.dataset, r.replay, r.t, r.arch, r.label_noise, r.shots), r.stream
    assert P.TABLES["table9"].rows[0].stream == P.EVAL_ROW.stream == P.TABLES["table8"].rows[0].stream
    streams = Rp.plan(["table6", "table8", "table9"], ["fig4"])
    assert list(streams["table6/cifar10"]["variants"]) == ["bl", "llf", "sp", "lure", "lure-fim", "lure-magnitude",
                                                           "lure-random"]


@pytest.mark.skipif(not SPEC.is_file(), reason="../shared is absent")
def test_the_typed_in_numbers_match_the_spec():
    """SPEC §6's table (the paper's main numbers) against paper.py's."""
    spec = SPEC.read_text().split("## 6.")[1].split("## 7.")[0]
    rows = {"1 CIFAR-10, full replay, t=8": ("table1", 0), "1 CIFAR-100, full replay, t=8": ("table1", 1),
            "2 CIFAR-10, buffer replay": ("table2", 0), "3 CIFAR-10, no replay": ("table3", 0),
            "6 CIFAR-10, full replay, t=4": ("table6", 0)}
    seen = 0
    for line in spec.splitlines():
        cells = _cells(line)
        key = f"{cells[0]} {cells[1]}" if len(cells) > 5 else None
        if key in rows:
            row = P.TABLES[rows[key][0]].rows[rows[key][1]]
            paper = {v.method: pv for v, pv in row.variants}
            for m, c in zip(("bl", "llf", "sp", "lure"), cells[2:6]):
                acc, cer = (float(x) for x in c.replace("CER", "").split("/"))
                assert (paper[m][0], paper[m][2]) == (acc, cer), (key, m)
            seen += 1
    assert seen == len(rows)


def test_compare_over_finished_runs_claims_no_throughput(tmp_path, capsys):
    out = str(tmp_path / "cmp")
    args = ["compare", "--methods", "bl,lure", "--preset", "tiny", "--quiet", "--threads", "1", "--out", out]
    assert main(args) == 0
    assert "training images/s in aggregate." in (tmp_path / "cmp" / "table.md").read_text()
    import shutil
    shutil.rmtree(os.path.join(out, "lure"))  # as if it had not started
    assert main([*args, "--resume"]) == 0  # lure runs again, bl is finished
    assert "for 1 runs (1 at a time)" in (tmp_path / "cmp" / "table.md").read_text()
    partial = (tmp_path / "cmp" / "table.md").read_text()
    assert "1 more were finished already." in partial

    wall, rate = re.search(r"Wall time ([\d.]+) s for 1 runs \(1 at a time\): ([\d,]+) training", partial).groups()
    lure = json.loads((tmp_path / "cmp" / "lure" / "results.json").read_text())
    images = lure["config"]["epochs"] * sum(m["train_size"] for m in lure["megabatches"])  # lure's alone
    assert abs(float(wall) * float(rate.replace(",", "")) / images - 1) < 0.4  # wall is printed to 0.1 s
    assert main([*args, "--resume"]) == 0
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "All 2 runs were finished already: nothing trained now." in table and "images/s" not in table


def _image_folder(root: Path, classes: int, per_class: int) -> str:
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return str(root)


@pytest.mark.parametrize("classes,per_class,flag,needle", [
    (3, 30, "--data", "holds 3 classes, but CIFAR-10 has 10"),
    (10, 30, "--data-cifar100", "holds 10 classes, but CIFAR-100 has 100"),
    (10, 5, "--data", "50 training images, but `table1/cifar10` at this scale needs 200")])
def test_data_that_lacks_what_the_table_needs_is_refused_before_any_run(tmp_path, capsys, classes, per_class,
                                                                        flag, needle):
    data = _image_folder(tmp_path / "data", classes, per_class)
    args = ["reproduce", "table1", *TINY, flag, data, "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and flag in err
    assert not (tmp_path / "r").exists()


def test_the_grid_figure_from_synthetic_runs(tmp_path):
    """Figure 6's table and heatmap from results made up per cell (accuracy = 100 x lr + 1000 x wd), and the
    paper's two stated points beside ours."""
    from lure_fast import reproduce_report as RR
    results = {}
    for v, _ in P.GRID_ROW.variants:
        s = dict(v.settings)
        acc = 100 * s["lr"] + 1000 * s["weight_decay"] + (1 if v.method == "lure" else 0)
        results[(P.GRID_ROW.stream, v.key)] = [{"summary": {"test_acc": acc}}, {"summary": {"test_acc": acc + 2}}]
    blocks = RR.grid_blocks(str(tmp_path), "fig6", P.METHODS, results, {}, P.FIGURES["fig6"])
    table = next(b for b in blocks if b[0] == "table")
    assert table[1] == ["method", "weight decay", "lr 0.1", "lr 0.01", "lr 0.005"]
    bl_wd3 = next(r for r in table[2] if r[:2] == ["BL (warm start)", "0.001"])
    assert bl_wd3[2:] == ["12.00 ± 1.41", "3.00 ± 1.41", "2.50 ± 1.41"]  # mean of acc and acc + 2
    text = " ".join(b[1] for b in blocks if b[0] == "p")
    assert "BL (warm start) at lr 0.005, weight decay 0.001 decreases to 75 %; ours 2.50 (-72.50 against 75)" in text
    assert "LURE (SNIP, 20 %) at lr 0.005, weight decay 0.001 remains above 94 %; ours 3.50" in text
    assert (tmp_path / "figures" / "grid-fig6.png").read_bytes().startswith(b"\x89PNG")
    assert RR.grid_blocks(str(tmp_path), "fig6", P.METHODS, {}, {P.GRID_ROW.stream: "pass --data DIR"},
                          P.FIGURES["fig6"]) == [("p", "Learning rate x weight decay: not run (pass --data DIR).")]


def test_a_row_whose_network_cannot_take_the_images_is_listed_not_run(tmp_path, monkeypatch):
    """At the tiny scale the embedded digits are 8x8: Table 6's VGG16-BN row (five max-pools) is listed
    with the reason, and nothing trains for it."""
    import dataclasses
    t6 = P.TABLES["table6"]
    monkeypatch.setitem(P.TABLES, "table6", dataclasses.replace(t6, rows=(t6.rows[3],)))  # the VGG row alone
    assert main(["reproduce", "table6", *TINY, "--out", str(tmp_path / "r")]) == 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| VGG16-BN | BL (warm start) | not run |" in report
    assert "vgg16_bn needs images of at least 32x32; the data's are 8x8" in report
    assert not (tmp_path / "r" / "table6" / "vgg16_bn").exists()
