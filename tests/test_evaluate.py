"""The evaluations' measures on hand-made cases: ECE, PGD, flatness (docs/evaluate.md)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lure_fast.evaluate import EvalError, check_list, counts, flatness, parse_what, pgd, robust_accuracy


def _batches(x, y, size=64):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


class Fixed(nn.Module):
    """Returns given logits for the i-th input (inputs are indices)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, idx):
        return self.logits[idx.long()]


def test_ece_of_a_calibrated_predictor_is_zero():
    # confidence exactly 0.7 on class 0 for 1000 images; 700 of them labelled 0
    n = 1000
    logits = torch.tensor([[math.log(0.7), math.log(0.3)]]).repeat(n, 1)
    y = torch.zeros(n, dtype=torch.long)
    y[700:] = 1
    r = counts(Fixed(logits), _batches(torch.arange(n), y))
    assert r["acc"] == pytest.approx(70.0)
    assert r["ece"] == pytest.approx(0.0, abs=1e-4)  # float32 softmax, in percent


def test_ece_of_a_miscalibrated_predictor_is_hand_computed():
    # half the images at confidence 0.9 with accuracy 0.5, half at 0.6 with accuracy 1.0:
    # ECE = 0.5 * |0.9 - 0.5| + 0.5 * |0.6 - 1.0| = 0.4 -> 40 %
    n = 400
    hi = torch.tensor([math.log(0.9), math.log(0.1)])
    lo = torch.tensor([math.log(0.6), math.log(0.4)])
    logits = torch.stack([hi] * 200 + [lo] * 200)
    y = torch.zeros(n, dtype=torch.long)
    y[100:200] = 1
    r = counts(Fixed(logits), _batches(torch.arange(n), y))
    assert r["ece"] == pytest.approx(40.0, abs=1e-4)
    assert r["bins"]["count"][13] == 200 and r["bins"]["count"][9] == 200  # 0.9 -> bin 13, 0.6 -> bin 9


def _small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 3)).eval()


def _data(n=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_pgd_eps_zero_is_clean_and_eps_never_raises_accuracy():
    net = _small_net()
    x, y = _data()
    eps = [0.0, 0.5 / 255, 2 / 255, 8 / 255, 32 / 255]
    r = robust_accuracy(net, _batches(x, y, 16), eps)
    clean = 100.0 * float((net(x).argmax(1) == y).float().mean())
    assert r["clean"] == pytest.approx(clean)
    assert r["robust"][0.0] == pytest.approx(clean)
    for e in eps[1:]:
        assert r["robust"][e] <= clean
    assert r["robust"][32 / 255] <= r["robust"][0.5 / 255]


def test_pgd_images_stay_within_eps_and_unit_range():
    net = _small_net()
    x, y = _data()
    x[:4] = 0.0
    x[4:8] = 1.0  # on the box's faces, where the clamp matters
    for e in (1 / 255, 8 / 255, 0.3):
        adv = pgd(net, x, y, e, generator=torch.Generator().manual_seed(0))
        assert (adv - x).abs().max() <= e + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert not torch.equal(adv, x)


def test_pgd_on_a_linear_model_takes_the_sign_of_the_weight_difference():
    # two classes, logits W x: the cross-entropy of the true class 0 grows along w_1 - w_0 everywhere,
    # so the best L-inf step is eps * sign(w_1 - w_0); 10 steps of 2.5 eps / 10 reach it from any start
    torch.manual_seed(0)
    lin = nn.Linear(12, 2, bias=False)
    x = torch.full((5, 12), 0.5)
    y = torch.zeros(5, dtype=torch.long)
    eps = 0.1
    adv = pgd(lin, x, y, eps, generator=torch.Generator().manual_seed(3))
    expect = x + eps * torch.sign(lin.weight[1] - lin.weight[0]).detach()
    torch.testing.assert_close(adv, expect, rtol=0, atol=1e-6)


def test_flatness_at_scale_zero_is_clean_accuracy_and_restores_weights():
    net = _small_net()
    x, y = _data(96)
    clean = counts(net, _batches(x, y))["acc"]
    before = [p.detach().clone() for p in net.parameters()]
    r = flatness(net, lambda: _batches(x, y), [0.0, 0.5, 5.0], draws=3, seed=0)
    assert r[0.0]["mean"] == clean and r[0.0]["draws"] == [clean]
    assert len(r[0.5]["draws"]) == 3 and r[0.5]["std"] >= 0
    assert r[0.5]["draws"] != r[5.0]["draws"]
    for p, b in zip(net.parameters(), before):
        assert torch.equal(p, b)
    again = flatness(net, lambda: _batches(x, y), [0.5], draws=3, seed=0)  # seeded
    assert again[0.5]["draws"] == r[0.5]["draws"]


def test_bad_evaluation_names_and_ranges_are_one_line():
    with pytest.raises(EvalError, match="unknown evaluation"):
        parse_what("calibration,sharpness")
    assert parse_what("all") == ["calibration", "pgd", "flatness", "corruptions"]
    with pytest.raises(EvalError, match=r"\[0, 255\]"):
        check_list("eps", [1, -2], 0, 255)
    with pytest.raises(EvalError):
        check_list("noise-scales", [float("nan")], 0, 10)


class Knife(nn.Module):
    """Right on every input while its one weight is exactly 1; any change to it flips every prediction to
    one class (so any noise at all shows)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        z = x + (self.w - 1) * 1e6
        return torch.stack([z, torch.zeros_like(z)], 1)


def test_flatness_at_scale_zero_adds_no_noise_at_all():
    x = torch.tensor([1.0, -1.0] * 10)
    y = (x < 0).long()
    net = Knife()
    r = flatness(net, lambda: [(x, y)], [0.0, 1e-3], draws=2, seed=0)
    assert r[0.0]["mean"] == 100.0
    assert r[1e-3]["mean"] == 50.0  # the knife edge: the smallest noise is seen


class Detector(nn.Module):
    """Wrong on the clean image x0 = 0.5 everywhere, right on any other image: PGD's random start can only
    make it right."""

    def forward(self, x):
        d = (x - 0.5).abs().flatten(1).sum(1)
        return torch.stack([1e4 * d, torch.ones_like(d)], 1)


def test_robust_accuracy_never_counts_an_image_the_model_gets_wrong_clean():
    x = torch.full((8, 3, 4, 4), 0.5)
    y = torch.zeros(8, dtype=torch.long)
    r = robust_accuracy(Detector(), [(x, y)], [0.0, 8 / 255])
    assert r["clean"] == 0.0
    assert r["robust"][8 / 255] == 0.0
