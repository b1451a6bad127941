import torch

from lure_fast.metrics import EvalCounter, cer, ece, summarize


def test_cer_is_the_sum_of_test_errors():
    assert cer([100, 50, 7]) == 157
    mbs = [{"test_acc": 90.0, "test_errors": 1000, "gen_gap": 2.0, "seconds": 1.0, "test_ece": 3.0},
           {"test_acc": 95.0, "test_errors": 500, "gen_gap": 4.0, "seconds": 2.0, "test_ece": 1.0}]
    s = summarize(mbs)
    assert s == {"test_acc": 95.0, "cer": 1500, "gen_gap": 3.0, "ece": 1.0, "seconds": 3.0}


def test_ece_of_known_bins():
    # two bins: 10 samples at confidence 0.9 with 6 right, 10 at 0.5 with 5 right -> (0.3 + 0) / 2
    count, conf, hits = (torch.tensor(v, dtype=torch.float64) for v in ([10.0, 10.0], [9.0, 5.0], [6.0, 5.0]))
    assert abs(ece(count, conf, hits) - 0.15) < 1e-12


def test_eval_counter_accuracy_errors_and_perfect_calibration():
    c = EvalCounter("cpu")
    logits = torch.tensor([[10.0, 0.0], [0.0, 10.0], [10.0, 0.0], [0.0, 10.0]])
    c.update(logits, torch.tensor([0, 1, 1, 1]))
    r = c.result()
    assert r["acc"] == 75.0 and r["errors"] == 1 and r["n"] == 4
    assert abs(r["ece"] - 100 * abs(torch.tensor(10.0).sigmoid().item() - 0.75)) < 1e-4
