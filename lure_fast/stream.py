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
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REPLAYS = ("full", "none", "buffer", "window")


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


def make_stream(n_samples: int, megabatches: int, megabatch_size: int, replay: str = "full",
                buffer_size: int = 186, importance_fraction: float = 0.2, seed: int = 0,
                shuffle: bool = True, val_pool: str = "paper", buffer_draws: str = "paper") -> Stream:
    """Index sets of every mega-batch over a training split of ``n_samples`` samples.

    Deterministic for ``seed``: the permutation, the buffer draws and the importance subsets come from
    generators keyed by the seed (and the mega-batch index), not from global random state.
    """
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
    return Stream(out, replay, megabatch_size, seed, {"n_train": n_train, "n_val": n_val})
