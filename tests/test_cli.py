"""The CLI end to end on a tiny stream, and its answers to bad input."""
import json
import os

import pytest

from lure_fast.cli import main

from lf_helpers import run_cli

TINY = ["--preset", "tiny", "--quiet"]


def test_run_writes_results_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--method", "lure", *TINY, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["method"] == "lure" and res["config"]["megabatches"] == 2
    mbs = res["megabatches"]
    assert [m["index"] for m in mbs] == [1, 2]
    keys = {"index", "train_size", "val_size", "train_acc", "val_acc", "test_acc", "test_errors", "gen_gap", "seconds"}
    for m in mbs:
        assert keys <= set(m)
        assert 0 <= m["test_acc"] <= 100 and m["test_errors"] == round(297 * (1 - m["test_acc"] / 100))
        assert abs(m["gen_gap"] - (m["train_acc"] - m["val_acc"])) < 1e-9
    assert (mbs[0]["train_size"], mbs[0]["val_size"], mbs[1]["train_size"]) == (90, 10, 180)  # full replay
    assert mbs[0]["reset"] > 0 and "reset" not in mbs[1]  # no unlearning after the last mega-batch
    s = res["summary"]
    assert s["cer"] == sum(m["test_errors"] for m in mbs)
    assert s["test_acc"] == mbs[-1]["test_acc"]
    assert not [f for f in os.listdir(out) if f.startswith("ckpt-")]  # finished runs keep no checkpoints
    assert "test accuracy" in capsys.readouterr().out
    # where the time went: training, evaluation, unlearning (after mega-batch 1 only), checkpoints
    kinds = ("train", "evaluate", "unlearn", "checkpoint")
    assert [set(m["split_seconds"]) for m in mbs] == [set(kinds)] * 2
    assert mbs[0]["split_seconds"]["unlearn"] > 0 and mbs[1]["split_seconds"]["unlearn"] == 0
    assert all(m["split_seconds"]["train"] > 0 and m["split_seconds"]["evaluate"] > 0 for m in mbs)
    # (the checkpoint written after a mega-batch's record is closed counts in the split, not in "seconds")
    assert all(sum(m["split_seconds"][k] for k in kinds[:3]) <= m["seconds"] for m in mbs)
    assert res["split_seconds"] == {k: sum(m["split_seconds"][k] for m in mbs) for k in kinds}


def test_compare_writes_table_plot_and_per_method_results(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "bl,lure", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = (out / "table.md").read_text()
    assert table in printed
    rows = [line for line in table.splitlines() if line.startswith("| ") and "Method" not in line]
    assert len(rows) == 2 and rows[0].startswith("| BL") and rows[1].startswith("| LURE")
    for m in ("bl", "lure"):
        res = json.loads((out / m / "results.json").read_text())
        assert f"| {res['summary']['cer']} |" in table
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same stream: both methods saw the same mega-batch sizes and the same first mega-batch model
    bl, lure = (json.loads((out / m / "results.json").read_text()) for m in ("bl", "lure"))
    assert bl["megabatches"][0]["test_acc"] == lure["megabatches"][0]["test_acc"]


def test_same_seed_same_results(tmp_path):
    for name in ("a", "b"):
        assert main(["run", "--method", "sp", *TINY, "--out", str(tmp_path / name)]) == 0
    a, b = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("a", "b"))
    strip = lambda r: [{k: v for k, v in m.items() if "seconds" not in k} for m in r["megabatches"]]
    assert strip(a) == strip(b)


@pytest.mark.parametrize("args,needle", [
    (["--data", "{tmp}/missing"], "no such file or folder"),
    (["--data", "{tmp}/empty"], "the folder is empty"),
    (["--data", "{tmp}/odd"], "unknown dataset layout"),
    (["--megabatches", "40", "--megabatch-size", "100"], "the training set holds 1500"),
    (["--reinit-fraction", "1.5"], "--reinit-fraction 1.5: must be in (0, 1)"),
    (["--reinit-fraction", "0"], "--reinit-fraction 0.0: must be in (0, 1)"),
    (["--method", "forget-everything"], "--method forget-everything: unknown"),
    (["--arch", "resnet34"], "--arch resnet34: unknown"),
    (["--replay", "sometimes"], "--replay sometimes: unknown"),
    (["--epochs", "0"], "--epochs 0"),
    (["--seed", "-1"], "--seed -1: must be >= 0"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, needle):
    (tmp_path / "empty").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "notes.txt").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["run", *TINY, "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lure-fast: error: ") and needle in err[0], err
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_bad_input_in_a_fresh_process_has_no_traceback(tmp_path):
    p = run_cli("run", "--method", "lure", "--importance", "hunch", "--out", str(tmp_path / "o"))
    assert p.returncode == 2
    assert p.stderr.strip() == "lure-fast: error: --importance hunch: unknown; choose one of snip, fim, magnitude, random"
    assert "Traceback" not in p.stderr


def test_compare_validates_every_method_before_running(tmp_path, capsys):
    assert main(["compare", "--methods", "bl,nope", *TINY, "--out", str(tmp_path / "c")]) == 2
    assert "--method nope: unknown" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def write_pngs(root, per_class: dict = {"train": 60, "test": 10}):
    """An ImageFolder of random 12x12 PNGs, classes cat and dog."""
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_imagefolder_data(tmp_path, capsys):
    write_pngs(tmp_path / "ds")
    (tmp_path / "ds" / "train" / "dog" / "60.png").symlink_to(tmp_path / "gone.png")  # dangling: skipped, counted
    out = tmp_path / "o"
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        assert main(["run", "--data", str(tmp_path / "ds"), "--preset", "tiny", "--megabatch-size", "50",
                     "--method", "llf", "--quiet", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == {"name": "ds", "layout": "imagefolder", "train": 120, "test": 20, "classes": 2,
                              "image_shape": [3, 12, 12], "skipped": {"train": 1, "test": 0}}


def test_ffcv_streams_an_imagefolder_without_decoding_it_and_matches_memory(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ffcv", reason="FFCV is not installed (scripts/install_ffcv.sh installs it)")
    from lure_fast.loaders import cache as writers, sources

    root = write_pngs(tmp_path / "ds")
    (root / "train" / "cat" / "7.png").write_bytes(b"truncated")
    monkeypatch.setenv("LURE_FAST_BETON_CACHE", str(tmp_path / "beton"))
    # no augmentation: the backends draw their flips and shifts differently
    args = ["run", "--data", str(root), "--preset", "tiny", "--megabatch-size", "50", "--method", "lure",
            "--no-augment", "--quiet"]
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        assert main([*args, "--loader", "memory", "--out", str(tmp_path / "memory")]) == 0
    fail = lambda *a, **k: pytest.fail("the ffcv path decoded the split, or rewrote or recounted a cached file")
    monkeypatch.setattr(sources, "decode_samples", fail)
    for out in ("ffcv", "again"):  # the second run reuses the .beton files and their pixel statistics
        with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
            assert main([*args, "--loader", "ffcv", "--out", str(tmp_path / out)]) == 0
        monkeypatch.setattr(writers, "write_beton", fail)
        monkeypatch.setattr(writers, "beton_histogram", fail)

    def results(out):
        r = json.loads((tmp_path / out / "results.json").read_text())
        assert r.pop("loader") == r["config"].pop("loader") == out.replace("again", "ffcv")
        r["megabatches"] = [{k: v for k, v in m.items() if "seconds" not in k} for m in r["megabatches"]]
        r["summary"].pop("seconds")
        r.pop("split_seconds")
        return r

    memory = results("memory")
    assert memory["dataset"]["skipped"] == {"train": 1, "test": 0}
    assert results("ffcv") == memory and results("again") == memory


def test_imagefolder_of_mixed_sizes_is_one_clear_line_on_the_ffcv_path(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ffcv", reason="FFCV is not installed (scripts/install_ffcv.sh installs it)")
    from PIL import Image
    import numpy as np

    root = write_pngs(tmp_path / "ds", {"train": 10, "test": 2})
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(root / "train" / "dog" / "9.png")
    monkeypatch.setenv("LURE_FAST_BETON_CACHE", str(tmp_path / "beton"))
    assert main(["run", "--data", str(root), *TINY, "--megabatch-size", "10", "--loader", "ffcv",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lure-fast: error: "), err
    assert "dog/9.png: image is 30x20 but 12x12 before it; pass an image size (--image-size)" in err[0]


def test_a_stream_too_large_for_the_listed_files_fails_before_any_beton_is_written(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ffcv", reason="FFCV is not installed (scripts/install_ffcv.sh installs it)")
    root = write_pngs(tmp_path / "ds", {"train": 10, "test": 2})
    monkeypatch.setenv("LURE_FAST_BETON_CACHE", str(tmp_path / "beton"))
    args = ["run", "--data", str(root), "--preset", "tiny", "--megabatches", "3", "--megabatch-size", "10",
            "--loader", "ffcv", "--quiet", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "but the training set holds 20" in err[0], err
    assert not (tmp_path / "beton").exists() or not os.listdir(tmp_path / "beton")


def test_ffcv_run_on_real_cifar10_jpegs(tmp_path, cifar_jpeg, capsys, monkeypatch):
    pytest.importorskip("ffcv", reason="FFCV is not installed (scripts/install_ffcv.sh installs it)")
    monkeypatch.setenv("LURE_FAST_BETON_CACHE", str(tmp_path / "beton"))
    out = tmp_path / "o"
    assert main(["run", "--data", str(cifar_jpeg), "--loader", "ffcv", "--preset", "tiny", "--megabatch-size", "150",
                 "--method", "lure", "--quiet", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"]["train"] == 50000 and res["dataset"]["test"] == 10000
    assert [m["train_size"] for m in res["megabatches"]] == [135, 270]
    assert res["summary"]["cer"] == sum(m["test_errors"] for m in res["megabatches"])
    assert os.listdir(tmp_path / "beton")  # the dataset was written to .beton files and read from them


def test_compare_jobs_runs_methods_concurrently_with_the_same_results(tmp_path, capsys):
    base = ["compare", "--methods", "bl,lure", "--preset", "tiny", "--quiet", "--threads", "1"]
    assert main([*base, "--out", str(tmp_path / "seq")]) == 0
    assert main([*base, "--jobs", "2", "--out", str(tmp_path / "par")]) == 0
    printed = capsys.readouterr().out
    assert "2 runs (2 at a time)" in printed and "training images/s in aggregate" in printed
    strip = lambda r: [{k: v for k, v in m.items() if "seconds" not in k} for m in r["megabatches"]]
    for m in ("bl", "lure"):
        a, b = (json.loads((tmp_path / d / m / "results.json").read_text()) for d in ("seq", "par"))
        assert strip(a) == strip(b)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_compare_refuses_a_thread_count_below_one(tmp_path, capsys, jobs):
    assert main(["compare", "--methods", "bl", *TINY, "--jobs", jobs, "--threads", "0",
                 "--out", str(tmp_path / "c")]) == 2
    assert "--threads 0: must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_compare_over_seeds_reports_mean_and_std(tmp_path, capsys):
    out = tmp_path / "seeds"
    assert main(["compare", "--methods", "bl,lure", *TINY, "--threads", "1", "--seeds", "0,1", "--jobs", "2",
                 "--epochs", "1", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "mean ± std over seeds 0, 1" in table and "4 runs (2 at a time)" in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    from lure_fast.report import mean_std
    for m in ("bl", "lure"):
        runs = [json.loads((out / m / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
        assert [r["config"]["seed"] for r in runs] == [0, 1]
        accs = [r["summary"]["test_acc"] for r in runs]
        cers = [r["summary"]["cer"] for r in runs]
        entry = summary["methods"][m]
        assert entry["seeds"] == [0, 1] and entry["test_acc"]["values"] == accs and entry["cer"]["values"] == cers
        mean, std = mean_std(accs)
        assert entry["test_acc"]["mean"] == pytest.approx(mean) and entry["test_acc"]["std"] == pytest.approx(std)
        row = next(line for line in table.splitlines() if line.startswith("| " + ("BL" if m == "bl" else "LURE")))
        assert f"| {mean:.2f} ± {std:.2f} |" in row
        assert f"{sum(cers) / 2:.0f} ± {mean_std(cers)[1]:.0f}" in row
    # the seed reaches the run: another seed, another stream and initialisation
    bl0, bl1 = (json.loads((out / "bl" / f"seed-{s}" / "results.json").read_text()) for s in (0, 1))
    assert [m["test_errors"] for m in bl0["megabatches"]] != [m["test_errors"] for m in bl1["megabatches"]]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,needle", [
    (["--seed", "1", "--seeds", "0,1"], "--seed and --seeds both given"),
    (["--seeds", "0,0"], "--seeds 0,0: give distinct seeds"),
])
def test_compare_refuses_bad_seed_lists(tmp_path, capsys, args, needle):
    assert main(["compare", "--methods", "bl", *TINY, *args, "--out", str(tmp_path / "c")]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("argv,needle", [
    (["run", "--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    (["run", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["compare", "--lr-milestones", "a,b"], "expected comma-separated integers"),
    ([], "the following arguments are required: command"),
    (["train"], "invalid choice: 'train'"),
])
def test_argparse_errors_are_one_line_and_exit_2(capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lure-fast: error: ") and needle in err[0] and "--help" in err[0], err


def test_every_setting_has_one_flag_and_the_docs_table_is_current():
    import pathlib
    from lure_fast import config as C
    from lure_fast.cli import generated_docs, parser
    run = parser()._subparsers._group_actions[0].choices["run"]
    dests = {a.dest for a in run._actions}
    assert {f.name for f in C.fields()} <= dests  # a new setting gets its flag without a line in cli.py
    docs = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert generated_docs() in docs, "docs/cli.md is stale: run python -m lure_fast.cli docs"
