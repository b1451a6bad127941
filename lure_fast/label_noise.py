"""Label noise at training time (the paper's Figure 3 right, Table 9): ``--label-noise R`` replaces each
label of the training split (the images training and validation draw from), with probability R, by a class
drawn uniformly (so the label may stay the same: about R x (1 - 1/classes) change). Seeded by the run's
seed, drawn once over the whole training split before the stream is cut, fixed for the run; the test split
stays clean. It happens on the dataset, before any backend sees it, so every backend and replay mode reads
the same noisy labels (the caches key on the labels: a noisy split gets its own decoded cache and .beton)."""
from __future__ import annotations

import numpy as np
import torch

NOISE_STREAM = 0x1ABE1  # the draw's own stream under the run's seed


def noisy_labels(labels: np.ndarray, rate: float, classes: int, seed: int) -> np.ndarray:
    """``labels`` with each replaced, with probability ``rate``, by a uniform class (seeded)."""
    rng = np.random.default_rng([seed, NOISE_STREAM])
    replace = rng.random(len(labels)) < rate
    drawn = rng.integers(0, classes, len(labels))
    return np.where(replace, drawn, labels).astype(np.int64)


def with_label_noise(dataset, rate: float, seed: int):
    """``dataset`` with its training split's labels noised (the dataset itself when ``rate`` is 0); returns
    ``(dataset, record)``, the record for results.json (rate, seed, labels changed, training-split size)."""
    import dataclasses
    from .loaders.sources import FileSplit, Split
    if rate <= 0:
        return dataset, None
    train = dataset.train
    k = dataset.num_classes
    if isinstance(train, FileSplit):  # per listed file; the decoded cache and .beton key on the labels
        old = np.array([label for _, label in train.samples], dtype=np.int64)
        new = noisy_labels(old, rate, k, seed)
        noisy = FileSplit([(p, int(y)) for (p, _), y in zip(train.samples, new)], train.size, train.where,
                          train.cache, train.tag, train.workers, train.channels)
    elif isinstance(train, Split):
        old = train.labels.numpy()
        new = noisy_labels(old, rate, k, seed)
        noisy = Split(train.images, torch.from_numpy(new), train.skipped)
    else:
        raise TypeError(f"label noise: a training split of type {type(train).__name__} is not supported")
    record = {"rate": rate, "seed": seed, "changed": int((old != new).sum()), "of": int(len(old))}
    return dataclasses.replace(dataset, train=noisy), record
