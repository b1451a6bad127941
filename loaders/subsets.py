"""Subsets of a dataset: the paper's few-shot training splits."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .errors import DataError
from .sources import Dataset


def few_shot(dataset: Dataset, per_class: int, seed: int = 0) -> Dataset:
    """The dataset with its train split cut to ``per_class`` samples of every class (paper Table 5:
    270 per class on Restricted ImageNet). The draw is seeded; kept samples stay in their original
    order; the test split is unchanged. ``meta['few_shot']['indices']`` lists the kept train positions."""
    if per_class < 1:
        raise DataError(f"few-shot needs at least 1 image per class, got {per_class}")
    labels = dataset.train.labels.numpy()
    rng = np.random.default_rng([seed, per_class])
    keep = []
    for c, name in enumerate(dataset.classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise DataError(f"few-shot {per_class} per class: class '{name}' has only {len(idx)} training "
                            f"images; lower the per-class count")
        keep.append(rng.choice(idx, size=per_class, replace=False))
    keep = np.sort(np.concatenate(keep))
    train = dataset.train.subset(keep)  # a file-backed split stays a file list
    meta = {**dataset.meta, "few_shot": {"per_class": per_class, "seed": seed, "indices": keep}}
    return replace(dataset, name=f"{dataset.name}-fewshot{per_class}", train=train, meta=meta)
