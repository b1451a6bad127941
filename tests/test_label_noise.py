"""--label-noise R: training and validation labels replaced with probability R, the test set clean."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lure_fast import config as C
from lure_fast.label_noise import noisy_labels, with_label_noise


def test_the_share_changed_is_binomially_plausible_and_seeded():
    n, k, rate = 20_000, 10, 0.3
    labels = np.arange(n) % k
    new = noisy_labels(labels, rate, k, seed=0)
    p = rate * (1 - 1 / k)  # a replacement may draw the same class
    changed = int((new != labels).sum())
    assert abs(changed - n * p) < 5 * math.sqrt(n * p * (1 - p))
    assert new.min() >= 0 and new.max() < k
    assert np.array_equal(new, noisy_labels(labels, rate, k, seed=0))
    assert not np.array_equal(new, noisy_labels(labels, rate, k, seed=1))
    assert np.array_equal(noisy_labels(labels, 0.0, k, 0), labels)
    assert (noisy_labels(labels, 1.0, k, 0) != labels).mean() == pytest.approx(0.9, abs=0.02)


def _loader_labels(loader):
    return torch.cat([y.cpu() for _, y in loader.epoch(0)]).numpy()


@pytest.mark.parametrize("backend", ["memory", "torch", "ffcv"])
def test_a_run_trains_and_validates_on_noisy_labels_and_tests_on_clean_ones(backend):
    from lure_fast.loaders import load_dataset
    from lure_fast.prepare import prepare
    clean = load_dataset(None, None)
    cfg = C.resolve({"preset": "tiny", "device": "cpu", "label_noise": 0.5, "loader": backend, "seed": 3})
    s = prepare(cfg, torch.device("cpu"), notes=False)
    mb = s.stream[0]
    truth = clean.train.labels.numpy()
    s.val.set_indices(mb.val)
    seen_val = _loader_labels(s.val)
    s.val.set_indices(mb.train)
    seen_train = _loader_labels(s.val)  # un-augmented, unshuffled: in index order
    both = np.concatenate([seen_train, seen_val])
    expect = np.concatenate([truth[mb.train], truth[mb.val]])
    share = (both != expect).mean()
    assert 0.3 < share < 0.6  # 0.5 x 0.9 = 0.45 of about 200 labels
    assert np.array_equal(seen_train, s.dataset.train.labels.numpy()[mb.train])
    assert np.array_equal(_loader_labels(s.test), clean.test.labels.numpy())  # the test set untouched
    assert s.label_noise["rate"] == 0.5 and s.label_noise["changed"] == int((s.dataset.train.labels.numpy() != truth).sum())


def test_file_backed_splits_are_noised_per_file_and_cached_apart(tmp_path):
    from PIL import Image
    from lure_fast.loaders import load_dataset
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 10)):
        for c in ("a", "b", "c"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / split / c / f"{i}.png")
    ds = load_dataset(None, str(tmp_path))
    noisy, rec = with_label_noise(ds, 0.6, seed=2)
    assert noisy.train.fingerprint != ds.train.fingerprint  # a decoded cache or .beton of clean labels is not reused
    old, new = ds.train.labels.numpy(), noisy.train.labels.numpy()
    assert rec["changed"] == int((old != new).sum()) > 20 and rec["of"] == 120
    assert torch.equal(noisy.train.images, ds.train.images)
    assert noisy.test is ds.test


def test_results_record_the_noise(tmp_path):
    from lure_fast.run import run
    res = run(C.resolve({"preset": "tiny", "device": "cpu", "label_noise": 0.2}), str(tmp_path / "r"), progress=False)
    assert res["config"]["label_noise"] == 0.2 and res["label_noise"]["rate"] == 0.2
    assert json.loads((tmp_path / "r" / "results.json").read_text())["label_noise"]["changed"] > 0
    with pytest.raises(C.ConfigError):
        C.validate(C.resolve({"preset": "tiny", "label_noise": 1.5}))
