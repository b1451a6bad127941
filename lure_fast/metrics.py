"""Metrics of SPEC §5 that the stream reports: accuracy, test errors, CER, generalisation gap, ECE."""
from __future__ import annotations

import torch

ECE_BINS = 15


class EvalCounter:
    """Accumulates correct counts and calibration bins on the device; read once with ``result()``."""

    def __init__(self, device, bins: int = ECE_BINS):
        self.bins = bins
        self.n = 0
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.count = torch.zeros(bins, dtype=torch.float64, device=device)
        self.conf = torch.zeros(bins, dtype=torch.float64, device=device)
        self.hits = torch.zeros(bins, dtype=torch.float64, device=device)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        conf, pred = logits.float().softmax(1).max(1)
        hit = (pred == labels)
        self.correct += hit.sum()
        self.n += int(labels.shape[0])
        b = (conf * self.bins).long().clamp_(max=self.bins - 1)
        self.count.index_add_(0, b, torch.ones_like(conf, dtype=torch.float64))
        self.conf.index_add_(0, b, conf.double())
        self.hits.index_add_(0, b, hit.double())

    def result(self) -> dict:
        correct = int(self.correct.item())
        n = max(self.n, 1)
        return {"acc": 100.0 * correct / n, "errors": self.n - correct, "n": self.n,
                "ece": 100.0 * ece(self.count.cpu(), self.conf.cpu(), self.hits.cpu())}


def ece(count: torch.Tensor, conf_sum: torch.Tensor, hit_sum: torch.Tensor) -> float:
    """Expected calibration error from per-bin counts, summed confidences and summed hits (0..1)."""
    total = float(count.sum())
    if total == 0:
        return 0.0
    nz = count > 0
    gap = (conf_sum[nz] / count[nz] - hit_sum[nz] / count[nz]).abs()
    return float((count[nz] / total * gap).sum())


def cer(test_errors: list[int]) -> int:
    """Cumulative error rate: misclassified test images summed over the mega-batches."""
    return int(sum(test_errors))


def summarize(megabatches: list[dict]) -> dict:
    last = megabatches[-1]
    return {
        "test_acc": last["test_acc"],
        "cer": cer([m["test_errors"] for m in megabatches]),
        "gen_gap": sum(m["gen_gap"] for m in megabatches) / len(megabatches),
        "ece": last.get("test_ece"),
        "seconds": sum(m["seconds"] for m in megabatches),
    }
