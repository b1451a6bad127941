"""``lure-fast evaluate`` and ``compare --evaluate`` end to end on tiny digits runs."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from lure_fast.cli import main

TINY = ["--preset", "tiny", "--device", "cpu", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalcli") / "cmp"
    assert main(["compare", "--methods", "bl,lure", *TINY, "--out", str(out), "--evaluate", "calibration,pgd"]) == 0
    return out


def test_compare_evaluate_writes_eval_json_and_figures(compared):
    rep = json.loads((compared / "eval.json").read_text())
    assert [r["method"].split()[0] for r in rep["runs"]] == ["BL", "LURE"]
    for r in rep["runs"]:
        res = json.loads((compared / r["folder"].split(os.sep)[-1] / "results.json").read_text())
        # the test set under the run's precision and batches: the run's own accuracy and ECE
        assert r["calibration"]["acc"] == res["summary"]["test_acc"]
        assert r["calibration"]["ece"] == pytest.approx(res["summary"]["ece"], abs=1e-9)
        assert r["pgd"]["clean"] >= max(r["pgd"]["robust"].values())
        assert sorted(r["pgd"]["robust"]) == sorted(["0.5", "1", "2", "4", "8"])
    assert (compared / "calibration.png").stat().st_size > 0 and (compared / "pgd.png").stat().st_size > 0
    assert not (compared / "flatness.png").exists()


def test_evaluate_one_run_flatness_into_another_folder(compared, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", str(compared / "lure"), "--what", "flatness", "--noise-scales", "0,0.05",
                 "--draws", "2", "--flat-images", "100", "--threads", "1", "--out", str(out)]) == 0
    rep = json.loads((out / "eval.json").read_text())
    flat = rep["runs"][0]["flatness"]
    assert flat["images"] == 100 and len(flat["accuracy"]["0.05"]["draws"]) == 2
    assert flat["accuracy"]["0"]["draws"] == [flat["accuracy"]["0"]["mean"]]
    assert "LURE" in capsys.readouterr().out


def test_corruptions_on_the_first_n_test_images(compared, tmp_path):
    """--corruption-images N: each corruption and severity on the first N test images; eval.json records N
    and every accuracy is a count out of N."""
    out = tmp_path / "ev"
    assert main(["evaluate", str(compared / "bl"), "--what", "corruptions", "--corruption-images", "40",
                 "--threads", "1", "--out", str(out)]) == 0
    c = json.loads((out / "eval.json").read_text())["runs"][0]["corruptions"]
    assert c["images"] == 40 and len(c["accuracy"]) == 19
    for cells in c["accuracy"].values():
        for a in cells.values():
            assert round(a * 40 / 100, 6) == round(a * 40 / 100)  # a count out of 40


@pytest.mark.parametrize("args, message", [
    (["--what", "sharpness"], "unknown evaluation"),
    (["--corruption-images", "-1", "--what", "corruptions"], "--corruption-images"),
    (["--eps", "1,300"], "--eps"),
    (["--noise-scales", "-1"], "--noise-scales"),
    (["--draws", "0"], "--draws"),
    (["--corruptions", "/nonexistent/cifar10c", "--what", "corruptions"], "no such folder"),
])
def test_bad_input_is_one_line_and_writes_nothing(compared, tmp_path, capsys, args, message):
    out = tmp_path / "ev"
    assert main(["evaluate", str(compared / "bl"), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("lure-fast: error:")
    assert not out.exists()


def test_a_folder_without_a_model_is_one_line(compared, tmp_path, capsys):
    run = tmp_path / "old"
    shutil.copytree(compared / "bl", run)
    os.remove(run / "model.safetensors")
    assert main(["evaluate", str(run), "--what", "calibration"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "without a model file" in err
    assert not (run / "eval.json").exists()
    (run / "model.safetensors").write_bytes(b"\x00" * 64)  # damaged
    assert main(["evaluate", str(run), "--what", "calibration"]) == 2
    assert "not a readable safetensors" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing-here")]) == 2
    assert "no such folder" in capsys.readouterr().err
