import numpy as np
import pytest

from lure_fast.stream import make_stream


def rng(a, b):
    return np.arange(a, b)


@pytest.mark.parametrize("t,size", [(8, 6250), (4, 12500)])
def test_authors_cifar_layout_no_replay(t, size):
    s = make_stream(50000, t, size, "none", shuffle=False)
    n_train, n_val = size * 9 // 10, size // 10
    assert (n_train, n_val) == ((5625, 625) if t == 8 else (11250, 1250))
    for i, mb in enumerate(s.megabatches, start=1):
        np.testing.assert_array_equal(mb.train, rng((i - 1) * n_train, i * n_train))
        np.testing.assert_array_equal(mb.val, rng(45000 + (i - 1) * n_val, 45000 + i * n_val))


def test_full_replay_is_the_union():
    s = make_stream(50000, 8, 6250, "full", shuffle=False)
    for i, mb in enumerate(s.megabatches, start=1):
        np.testing.assert_array_equal(np.sort(mb.train), rng(0, i * 5625))
        np.testing.assert_array_equal(np.sort(mb.val), rng(45000, 45000 + i * 625))
        np.testing.assert_array_equal(mb.new_train, rng((i - 1) * 5625, i * 5625))
    assert sum(len(m.train) for m in s.megabatches) == 5625 * 36  # SPEC §7's cost model


def test_window_replay_is_previous_plus_current():
    s = make_stream(1000, 5, 200, "window", seed=3)
    for i, mb in enumerate(s.megabatches):
        own = [m.new_train for m in s.megabatches[max(0, i - 1):i + 1]]
        np.testing.assert_array_equal(np.sort(mb.train), np.sort(np.concatenate(own)))


def test_buffer_grows_by_buffer_size_from_earlier_megabatches():
    s = make_stream(50000, 8, 6250, "buffer", buffer_size=182, seed=0)
    seen_train = set()
    for i, mb in enumerate(s.megabatches):
        assert len(mb.train) == 5625 + 182 * i
        assert len(mb.val) == 625 + 182 * i
        extra = set(mb.train.tolist()) - set(mb.new_train.tolist())
        assert len(extra) == 182 * i and extra <= seen_train  # only samples of earlier mega-batches
        if i:
            prev = s.megabatches[i - 1]
            assert set(prev.train.tolist()) - set(prev.new_train.tolist()) <= extra  # the buffer only grows
        seen_train |= set(mb.new_train.tolist())


def test_importance_subset_is_twenty_percent_of_the_training_set_and_seeded():
    a = make_stream(5000, 4, 1000, "full", seed=1)
    b = make_stream(5000, 4, 1000, "full", seed=1)
    c = make_stream(5000, 4, 1000, "full", seed=2)
    for ma, mb_, mc in zip(a.megabatches, b.megabatches, c.megabatches):
        assert len(ma.importance) == round(0.2 * len(ma.train))
        assert set(ma.importance.tolist()) <= set(ma.train.tolist())
        np.testing.assert_array_equal(ma.importance, mb_.importance)
        assert not np.array_equal(ma.importance, mc.importance)


def test_shuffled_stream_is_a_seeded_partition():
    s = make_stream(1797, 4, 400, "none", seed=5)
    own = np.concatenate([np.concatenate([m.new_train, m.new_val]) for m in s.megabatches])
    assert len(set(own.tolist())) == 1600 and own.max() < 1797
    np.testing.assert_array_equal(s[0].train, make_stream(1797, 4, 400, "none", seed=5)[0].train)
    assert not np.array_equal(s[0].train, make_stream(1797, 4, 400, "none", seed=6)[0].train)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(n_samples=100, megabatches=3, megabatch_size=50), "holds 100"),
    (dict(n_samples=100, megabatches=1, megabatch_size=50, replay="sometimes"), "--replay"),
])
def test_bad_stream_settings(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        make_stream(**kwargs)


@pytest.mark.parametrize("layout,flag,shuffled", [
    ("cifar10", None, False), ("cifar100", None, False),  # SPEC §1: the authors' natural order
    ("imagefolder", None, True), ("digits", None, True),  # class-sorted trees must be permuted
    ("cifar10", True, True), ("imagefolder", False, False),  # --shuffle / --no-shuffle win
])
def test_stream_order_default_follows_the_layout(layout, flag, shuffled):
    from types import SimpleNamespace

    from lure_fast import config as C
    from lure_fast.prepare import build_stream

    cfg = C.resolve({"dataset": "x", "data": "/nowhere", "megabatches": 4, "megabatch_size": 100, "shuffle": flag})
    ds = SimpleNamespace(layout=layout, train=np.zeros(1000))
    first = build_stream(cfg, ds)[0]
    natural = make_stream(1000, 4, 100, "full", shuffle=False)[0]
    assert cfg.shuffled(layout) is shuffled
    assert np.array_equal(first.train, natural.train) is not shuffled
