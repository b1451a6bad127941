"""The ALMA stream (SPEC §1): mega-batches cut from a training set, each split 90/10 into train and
validation, the replay modes, and the 20 % subset pi_i used for importance estimation.

Layout, as in the authors' code: the training split is permuted once with the stream seed (the
data's own order when ``shuffle=False``); of the first ``t * size`` samples, the first
``t * n_train`` form the train pool and the next ``t * n_val`` the validation pool, with
``n_val = size // 10`` and ``n_train = size - n_val``. Mega-batch ``i`` (1-based) owns train
positions ``[(i-1)*n_train, i*n_train)`` and validation positions
``t*n_train + [(i-1)*n_val, i*n_val)``. For CIFAR-10 with t=8, size 6,250 this is exactly the
code's [(i-1)*5625, i*5625) and [45000+(i-1)*625, 45000+i*625).

``val_pool="code"`` (the authors' code, whatever the stream's size): the validation pool starts at
position 45,000 (CIFAR's 50,000 less a tenth; for another training split, at 90 % of it), so the
two layouts agree only when t * size is the whole split (8 x 6,250 on CIFAR-10).

Replay modes: ``full`` (M_1 u ... u M_i), ``none`` (M_i), ``window`` (M_{i-1} u M_i), ``buffer``
(M_i plus a buffer that, after every mega-batch, receives ``buffer_size`` random train and
``buffer_size`` random validation samples of that mega-batch; ``buffer_draws="code"``: drawn instead
from the mega-batch's whole lists, buffer included, as the authors' code does, so repeats accumulate).

Few-shot (``--shots N``, the paper's Table 5): :func:`few_shot_indices` keeps N training images per class
(``paper``: drawn with the seed; ``code``: the first N of each class, as the authors' ``to_few_shot``), and
``make_stream(..., keep=...)`` cuts the stream from those images alone: positions in the kept list are
permuted and cut as above (``val_pool="code"`` at 90 % of the kept images), then mapped back to indices of
the training split.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REPLAYS = ("full", "none", "buffer", "window")
SHOTS_DRAWS = ("paper", "code")
SHOTS_STREAM = 0x5407  # the few-shot draw's own stream under the run's seed


@dataclass
class MegaBatch:
    index: int               # 1-based
    train: np.ndarray        # indices into the dataset's train split to train on (replay included)
    val: np.ndarray          # indices to validate on (replay included)
    importance: np.ndarray   # pi_i: the subset of ``train`` used for importance estimation
    new_train: np.ndarray    # this mega-batch's own train samples
    new_val: np.ndarray      # this mega-batch's own validation samples


@dataclass
class Stream:
    megabatches: list[MegaBatch]
    replay: str
    megabatch_size: int
    seed: int
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.megabatches)

    def __getitem__(self, i: int) -> MegaBatch:
        return self.megabatches[i]


def split_sizes(megabatch_size: int) -> tuple[int, int]:
    """(n_train, n_val) of one mega-batch: 90 % / 10 %."""
    n_val = megabatch_size // 10
    return megabatch_size - n_val, n_val


def code_val_start(n_samples: int) -> int:
    """Where the authors' code starts the validation pool: 45,000 on CIFAR (50,000 training images)."""
    return n_samples - n_samples // 10


def few_shot_indices(labels: np.ndarray, per_class: int, draw: str = "paper", seed: int = 0) -> np.ndarray:
    """Indices (sorted: the split's own order) of ``per_class`` samples of every class in ``labels``, all of
    a class that has fewer. ``draw="paper"``: drawn at random per class from a generator keyed by ``seed``;
    ``"code"``: the first ``per_class`` of each class in the split's order (the authors' ``to_few_shot``)."""
    if per_class < 1:
        raise ValueError(f"few-shot needs at least 1 sample per class, got {per_class}")
    if draw not in SHOTS_DRAWS:
        raise ValueError(f"--shots-draw {draw}: unknown; choose one of {', '.join(SHOTS_DRAWS)}")
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, SHOTS_STREAM])
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= per_class:
            keep.append(idx)
        elif draw == "code":
            keep.append(idx[:per_class])
        else:
            keep.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(keep)).astype(np.int64) if keep else np.empty(0, dtype=np.int64)


def make_stream(n_samples: int, megabatches: int, megabatch_size: int, replay: str = "full",
                buffer_size: int = 186, importance_fraction: float = 0.2, seed: int = 0,
                shuffle: bool = True, val_pool: str = "paper", buffer_draws: str = "paper",
                keep: np.ndarray | None = None) -> Stream:
    """Index sets of every mega-batch over a training split of ``n_samples`` samples.

    ``keep`` (few-shot): the split's indices the stream is cut from, ``n_samples`` of them; the stream is
    built over their positions and every index set mapped back to the split's indices.

    Deterministic for ``seed``: the permutation, the buffer draws and the importance subsets come from
    generators keyed by the seed (and the mega-batch index), not from global random state.
    """
    if keep is not None and len(keep) != n_samples:
        raise ValueError(f"keep holds {len(keep)} indices, not n_samples = {n_samples}")
    if replay not in REPLAYS:
        raise ValueError(f"--replay {replay}: unknown; choose one of {', '.join(REPLAYS)}")
    if megabatches < 1 or megabatch_size < 2:
        raise ValueError(f"need at least 1 mega-batch of at least 2 samples, got {megabatches} x {megabatch_size}")
    if megabatches * megabatch_size > n_samples:
        raise ValueError(f"{megabatches} mega-batches x {megabatch_size} = {megabatches * megabatch_size} samples, "
                         f"but the training set holds {n_samples}; lower --megabatches or --megabatch-size")
    if not 0 < importance_fraction <= 1:
        raise ValueError(f"importance fraction must be in (0, 1], got {importance_fraction}")
    n_train, n_val = split_sizes(megabatch_size)
    t = megabatches
    order = np.random.default_rng(seed).permutation(n_samples) if shuffle else np.arange(n_samples)
    own_train = [order[(i - 1) * n_train: i * n_train] for i in range(1, t + 1)]
    # code: at 90 % of the split; t * size <= n_samples (checked above) keeps both pools inside and apart
    start = t * n_train if val_pool == "paper" else code_val_start(n_samples)
    own_val = [order[start + (i - 1) * n_val: start + i * n_val] for i in range(1, t + 1)]

    buf_train = np.empty(0, dtype=np.int64)
    buf_val = np.empty(0, dtype=np.int64)
    out = []
    for i in range(1, t + 1):
        nt, nv = own_train[i - 1], own_val[i - 1]
        if replay == "full":
            train, val = np.concatenate(own_train[:i]), np.concatenate(own_val[:i])
        elif replay == "none":
            train, val = nt, nv
        elif replay == "window":
            train, val = np.concatenate(own_train[max(0, i - 2):i]), np.concatenate(own_val[max(0, i - 2):i])
        else:  # buffer: this mega-batch plus what the buffer kept from earlier ones
            train, val = np.concatenate([nt, buf_train]), np.concatenate([nv, buf_val])
        rng = np.random.default_rng([seed, i])
        k = max(1, int(round(importance_fraction * len(train))))
        importance = np.sort(rng.choice(train, size=k, replace=False))
        out.append(MegaBatch(i, train.astype(np.int64), val.astype(np.int64), importance.astype(np.int64),
                             nt.astype(np.int64), nv.astype(np.int64)))
        if replay == "buffer":
            src_t, src_v = (nt, nv) if buffer_draws == "paper" else (train, val)  # code: buffer included
            buf_train = np.concatenate([buf_train, rng.choice(src_t, size=min(buffer_size, len(src_t)), replace=False)])
            buf_val = np.concatenate([buf_val, rng.choice(src_v, size=min(buffer_size, len(src_v)), replace=False)])
    meta = {"n_train": n_train, "n_val": n_val}
    if keep is not None:  # positions in the kept list -> indices of the split (the draws above are unchanged)
        keep = np.asarray(keep, dtype=np.int64)
        out = [MegaBatch(m.index, keep[m.train], keep[m.val], keep[m.importance], keep[m.new_train],
                         keep[m.new_val]) for m in out]
        meta["kept"] = len(keep)
    return Stream(out, replay, megabatch_size, seed, meta)
