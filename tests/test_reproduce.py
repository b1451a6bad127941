"""`lure-fast reproduce`: a paper table as one resumable command, with the paper's numbers beside ours."""
import json
import os

import pytest

from lure_fast import config as C
from lure_fast import reproduce as Rp
from lure_fast.cli import main

TINY = ["--scale", "tiny", "--seeds", "0", "--quiet", "--threads", "1"]


def test_table1_at_tiny_scale_end_to_end(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["reproduce", "table1", *TINY, "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert report.startswith("# lure-fast reproduce: scale tiny, profile paper, seeds 0")
    rows = [line for line in report.splitlines() if line.startswith("| cifar10 |")]
    assert [r.split(" | ")[1] for r in rows] == ["BL (warm start)", "LLF", "S&P", "LURE (SNIP, 20 %)"]  # the paper's order
    assert "| 89.47 |" in rows[0] and "| 11760 |" in rows[0] and "| 93.32 |" in rows[3]
    assert "- Table 1, cifar10: 2 mega-batches of 100, full replay, 2 epochs, resnet18 width 8" in report
    for r in rows:  # ours − paper is our mean minus the paper's value
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert float(cells[4]) == pytest.approx(float(cells[2]) - float(cells[3]), abs=0.011)
    assert "| cifar100 | not run |" in report and "pass --data-cifar100 DIR" in report
    assert "ran on `digits`" in report and "scale `tiny`" in report
    for m in Rp.METHODS:
        assert (out / "table1" / "cifar10" / m / "results.json").is_file()


def test_a_second_call_skips_finished_runs(tmp_path):
    out = tmp_path / "rep"
    assert main(["reproduce", "table3", *TINY, "--out", str(out)]) == 0
    files = sorted((out / "table3").rglob("results.json"))
    before = {f: os.stat(f).st_mtime_ns for f in files}
    assert len(files) == 4
    assert main(["reproduce", "table3", *TINY, "--out", str(out)]) == 0
    assert {f: os.stat(f).st_mtime_ns for f in files} == before  # nothing trained again
    assert "no replay" in (out / "report.md").read_text()


@pytest.mark.parametrize("name,needle", [("table10", "unknown"), ("fig2", "not available yet")])
def test_an_unknown_or_unavailable_table_is_one_line(tmp_path, capsys, name, needle):
    assert main(["reproduce", name, *TINY, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "table1" in err
    assert not (tmp_path / "r").exists()


def test_each_table_runs_the_papers_stream():
    paper = {n: C.resolve({**Rp.row_settings(n, "paper", "paper", "x"), "method": "bl"}) for n in Rp.PAPER}
    assert [paper[n].replay for n in ("table1", "table2", "table3", "table6")] == ["full", "buffer", "none", "full"]
    assert (paper["table1"].megabatches, paper["table6"].megabatches) == (8, 4)  # 8 x 6,250 and 4 x 12,500
    small1, small6 = (C.resolve({**Rp.row_settings(n, "small", "authors", "x"), "method": "bl"})
                      for n in ("table1", "table6"))
    assert (small1.megabatches * small1.megabatch_size, small6.megabatches) == (6000, 2)
    assert small6.megabatch_size == 3000 and small6.profile == "authors" and small6.lr_gamma == 1.0


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
    import re
    wall, rate = re.search(r"Wall time ([\d.]+) s for 1 runs \(1 at a time\): ([\d,]+) training", partial).groups()
    lure = json.loads((tmp_path / "cmp" / "lure" / "results.json").read_text())
    images = lure["config"]["epochs"] * sum(m["train_size"] for m in lure["megabatches"])  # lure's alone
    assert abs(float(wall) * float(rate.replace(",", "")) / images - 1) < 0.4  # wall is printed to 0.1 s
    assert main([*args, "--resume"]) == 0
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "All 2 runs were finished already: nothing trained now." in table and "images/s" not in table
