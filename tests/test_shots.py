"""--shots N (the paper's Table 5): N training images per class kept before the stream is cut, drawn with the
seed (paper) or the first N of each class (the authors' code); the stream holds nothing else."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lure_fast import config as C
from lure_fast.cli import main
from lure_fast.loaders import load_dataset
from lure_fast.prepare import build_stream, prepare
from lure_fast.stream import REPLAYS, few_shot_indices

CPU = torch.device("cpu")
# class 0: 12 samples, class 1: 9, class 2: 3 (fewer than N = 5), interleaved
LABELS = np.array([0, 1, 0, 2, 1, 0, 0, 1, 2, 0, 1, 0, 1, 0, 0, 1, 2, 1, 0, 1, 0, 1, 0, 0])


@pytest.mark.parametrize("draw", ["paper", "code"])
def test_n_per_class_are_kept_and_all_of_a_smaller_class(draw):
    keep = few_shot_indices(LABELS, 5, draw, seed=0)
    assert list(np.bincount(LABELS[keep])) == [5, 5, 3]
    assert len(np.unique(keep)) == len(keep) and list(keep) == sorted(keep)  # the split's own order
    assert set(np.flatnonzero(LABELS == 2)) <= set(keep)
    assert len(few_shot_indices(LABELS, 100, draw)) == len(LABELS)  # N above every class: everything


def test_paper_draws_are_seeded_and_differ_between_seeds():
    a, b = few_shot_indices(LABELS, 5, "paper", seed=0), few_shot_indices(LABELS, 5, "paper", seed=0)
    assert np.array_equal(a, b)
    draws = {tuple(few_shot_indices(LABELS, 5, "paper", seed=s)) for s in range(6)}
    assert len(draws) > 1
    labels = load_dataset(None, None).train.labels.numpy()  # the digits: ~150 per class
    assert not np.array_equal(few_shot_indices(labels, 20, "paper", 0), few_shot_indices(labels, 20, "paper", 1))


def test_code_draw_is_the_first_n_of_each_class_in_order():
    keep = few_shot_indices(LABELS, 5, "code", seed=7)
    want = sorted(i for c in (0, 1, 2) for i in np.flatnonzero(LABELS == c)[:5])
    assert list(keep) == want
    assert np.array_equal(keep, few_shot_indices(LABELS, 5, "code", seed=8))  # the seed plays no part


@pytest.mark.parametrize("replay", REPLAYS)
@pytest.mark.parametrize("draw,val_pool", [("paper", "paper"), ("code", "code")])
def test_megabatches_hold_only_kept_images(replay, draw, val_pool):
    ds = load_dataset(None, None)
    cfg = C.resolve({"preset": "tiny", "shots": 30, "shots_draw": draw, "val_pool": val_pool, "replay": replay,
                     "buffer_size": 5, "megabatch_size": 120, "shuffle": val_pool == "paper"})
    keep = few_shot_indices(ds.train.labels.numpy(), 30, draw, cfg.seed)
    assert len(keep) == 300
    s = build_stream(cfg, ds)
    assert s.meta["kept"] == 300
    kept = set(keep.tolist())
    for m in s:
        for part in (m.train, m.val, m.importance, m.new_train, m.new_val):
            assert set(part.tolist()) <= kept
    own = np.concatenate([np.concatenate([m.new_train, m.new_val]) for m in s])
    assert len(np.unique(own)) == len(own) == 240  # 2 x 120 distinct kept images
    if val_pool == "code":  # unshuffled: the validation pool starts at 90 % of the kept images, not of the split
        assert set(np.concatenate([m.new_val for m in s]).tolist()) <= set(keep[270:].tolist())


def test_no_shots_is_every_image_as_before():
    ds = load_dataset(None, None)
    cfg = C.resolve({"preset": "tiny"})
    s = build_stream(cfg, ds)
    assert "kept" not in s.meta and max(m.train.max() for m in s) > 1000


def test_a_stream_larger_than_the_kept_images_is_one_line_naming_the_flags(tmp_path, capsys):
    assert main(["run", "--preset", "tiny", "--shots", "15", "--quiet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lure-fast: error: --shots 15 keeps 150 training images"), err
    assert "--megabatches 2 x --megabatch-size 100 needs 200" in err[0]
    assert "raise --shots, or lower --megabatches or --megabatch-size" in err[0]
    assert main(["run", "--preset", "tiny", "--shots", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--shots 0: must be >= 1" in capsys.readouterr().err


def test_label_noise_does_not_change_which_images_are_kept():
    """--shots picks by the true classes: the same images with and without label noise."""
    kw = {"preset": "tiny", "device": "cpu", "shots": 20, "seed": 2}
    clean = prepare(C.resolve(kw), CPU, notes=False)
    noisy = prepare(C.resolve({**kw, "label_noise": 0.5}), CPU, notes=False)
    assert noisy.label_noise["changed"] > 0
    for a, b in zip(clean.stream, noisy.stream):
        assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)


def test_label_noise_keeps_the_same_images_of_a_folder_with_an_unreadable_file(tmp_path):
    """The true classes line up with the readable files (here one file of 121 is unreadable)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 5)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / split / c / f"{i}.png")
    (tmp_path / "train" / "cat" / "33b.png").symlink_to(tmp_path / "gone.png")  # listed, unreadable
    kw = {"preset": "tiny", "device": "cpu", "data": str(tmp_path), "shots": 40, "megabatch_size": 40,
          "loader": "memory", "shots_draw": "code"}
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        clean = prepare(C.resolve(kw), CPU, notes=False)
        noisy = prepare(C.resolve({**kw, "label_noise": 0.5}), CPU, notes=False)
    assert noisy.label_noise["changed"] > 0
    for a, b in zip(clean.stream, noisy.stream):
        assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    labels = clean.dataset.train.labels.numpy()
    kept = np.concatenate([np.concatenate([m.new_train, m.new_val]) for m in clean.stream])
    assert list(np.bincount(labels[kept])) == [40, 40]


@pytest.mark.parametrize("backend", ["torch", "ffcv"])
def test_every_backend_serves_the_kept_images(backend, tmp_path, monkeypatch):
    if backend == "ffcv":
        pytest.importorskip("ffcv", reason="FFCV is not installed (scripts/install_ffcv.sh installs it)")
        monkeypatch.setenv("LURE_FAST_BETON_CACHE", str(tmp_path / "beton"))
    cfg = C.resolve({"preset": "tiny", "device": "cpu", "shots": 20, "loader": backend})
    s = prepare(cfg, CPU, notes=False)
    ds = load_dataset(None, None)
    keep = few_shot_indices(ds.train.labels.numpy(), 20, "paper", cfg.seed)
    mb = s.stream[1]
    assert set(mb.train.tolist()) <= set(keep.tolist())
    s.point_at(mb)
    labels = torch.cat([y for _, y in s.val.epoch(0)]).numpy()
    assert sorted(labels) == sorted(ds.train.labels.numpy()[mb.val])


def test_run_on_a_few_shot_stream_end_to_end(tmp_path, capsys, monkeypatch):
    from lure_fast import run as R
    seen = []

    def spy(cfg, device, notes=True):  # the stream the run trains on
        s = prepare(cfg, device, notes)
        seen.append(s.stream)
        return s

    monkeypatch.setattr(R, "prepare", spy)
    out = tmp_path / "few"
    assert main(["run", "--preset", "tiny", "--shots", "20", "--method", "lure", "--quiet", "--out", str(out)]) == 0
    keep = set(few_shot_indices(load_dataset(None, None).train.labels.numpy(), 20, "paper", 0).tolist())
    assert len(seen) == 1 and all(set(m.train.tolist()) | set(m.val.tolist()) <= keep for m in seen[0])
    res = json.loads((out / "results.json").read_text())
    assert (res["config"]["shots"], res["config"]["shots_draw"]) == (20, "paper")
    assert [(m["train_size"], m["val_size"]) for m in res["megabatches"]] == [(90, 10), (180, 20)]
    assert res["summary"]["cer"] == sum(m["test_errors"] for m in res["megabatches"])
