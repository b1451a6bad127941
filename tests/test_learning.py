"""That training learns, and that the pieces a run's numbers depend on do their job: the best-epoch
snapshot and restore, the forgetting seed keyed by the mega-batch, S&P's noise, window replay's
validation set. Each test here fails when the code it guards is broken as its docstring says.

Runs are the embedded digits on the CPU in fp32 (``--precision fp32``: no dependence on the CPU's
bf16 support) and one torch thread, small enough for two busy cores (about 1-3 s a run); one trained
run is shared by the tests that read it. A slice of the real CIFAR-10 JPEG copy is used when
``../shared/data/cifar10-jpeg`` (or ``$LURE_FAST_CIFAR``) is present.
"""
import json

import numpy as np
import pytest
import torch

from lure_fast import config as C
from lure_fast import kernels as K
from lure_fast import run as R
from lure_fast.cli import main
from lure_fast.methods import classifier, derive_seed, forget_, reinit_bound
from lure_fast.models import build_model
from lure_fast.stream import make_stream
from lure_fast.train import Trainer

CHANCE = 10.0  # percent, 10 classes
CPU = ["--device", "cpu", "--precision", "fp32", "--quiet"]
# 2 mega-batches of the digits (675 + 1,350 training images, 75 / 150 validation), 3 epochs each, a
# narrow network; augmentation off, as the pad-1 crops and flips of 8x8 digits slow learning down a lot
DIGITS = ["--preset", "digits", "--megabatches", "2", "--epochs", "3", "--batch-size", "64", "--width", "8",
          "--no-augment", "--method", "bl", *CPU]
LEARNT = 80.0  # test accuracy (%) the final model must reach; measured 91.9 - 96.6 over seeds 0-7
LEARNT_FIRST = 70.0  # ... and the model of mega-batch 1; measured 82.2 - 90.6
SPOILT_TEST = 40.0  # the same with every last epoch spoilt, per mega-batch; measured 63.3 - 97.6 (final 91.2 - 97.6)


class Recorder:
    """Watches a run in this process: per mega-batch, the validation accuracy after every epoch, the
    sample indices each epoch's validation read, the validation accuracy of the model the run then
    measures, and the seeds of S&P's noise. Install with :meth:`install` on a MonkeyPatch."""

    def __init__(self):
        self.epoch_val: list[list[float]] = [[]]
        self.epoch_val_indices: list[list[np.ndarray]] = [[]]
        self.measured_val: list[float] = []
        self.sp_seeds: list[int] = []
        self.setup = None
        self._trained = False
        self._epochs = 0  # epochs trained in the current mega-batch

    def install(self, mp: pytest.MonkeyPatch, spoil_last_epoch: bool = False) -> "Recorder":
        train_epoch, evaluate, measure, prepare = Trainer.train_epoch, Trainer.evaluate, R.measure, R.prepare
        sp = K.shrink_perturb_

        def train_epoch_(trainer, *a, **k):
            stats = train_epoch(trainer, *a, **k)
            self._epochs += 1
            if spoil_last_epoch and self._epochs == trainer.cfg.epochs:
                with torch.no_grad():  # the last epoch goes bad: every prediction becomes the least likely class
                    fc = classifier(trainer.model)
                    fc.weight.neg_(); fc.bias.neg_()
            self._trained = True
            return stats

        def evaluate_(trainer, loader, *a, **k):
            res = evaluate(trainer, loader, *a, **k)
            if self._trained:  # the validation right after an epoch
                self._trained = False
                self.epoch_val[-1].append(res["acc"])
                self.epoch_val_indices[-1].append(np.array(loader.indices, copy=True))
            return res

        def measure_(trainer, s, *a, **k):
            self.measured_val.append(evaluate(trainer, s.val)["acc"])  # s.val still reads mb.val here
            self.epoch_val.append([]); self.epoch_val_indices.append([])
            self._epochs = 0
            return measure(trainer, s, *a, **k)

        def prepare_(*a, **k):
            self.setup = prepare(*a, **k)
            return self.setup

        def sp_(params, lam, sigma, bounds, seed):
            self.sp_seeds.append(seed)
            return sp(params, lam, sigma, bounds, seed)

        mp.setattr(Trainer, "train_epoch", train_epoch_)
        mp.setattr(Trainer, "evaluate", evaluate_)
        mp.setattr(R, "measure", measure_)
        mp.setattr(R, "prepare", prepare_)
        mp.setattr(K, "shrink_perturb_", sp_)
        return self


def run_cli_in_process(out, *args, spoil_last_epoch=False):
    """``lure-fast run ARGS --out OUT --threads 1`` in this process under a :class:`Recorder`; returns
    (results, recorder). One thread: on two cores shared with other work, torch's two threads wait
    for each other and a run takes 5-50 s instead of 1-4 s; the thread count is put back after."""
    threads = torch.get_num_threads()
    try:
        with pytest.MonkeyPatch.context() as mp:
            rec = Recorder().install(mp, spoil_last_epoch)
            assert main(["run", *args, "--out", str(out), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads((out / "results.json").read_text()), rec


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every test here on one torch thread (see :func:`run_cli_in_process`), the count put back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return run_cli_in_process(tmp_path_factory.mktemp("learning") / "digits", *DIGITS)


# -- it learns -----------------------------------------------------------------------------------

def test_a_short_digits_run_learns_far_above_chance(digits_run):
    """Fails with the optimizer step a no-op (test accuracy per mega-batch 10.4 / 7.1 %), the training
    labels shuffled against the images (6.1 / 11.8 %) or mapped to the next class (5.7 / 5.1 %), the
    input normalisation zeroed (11.1 / 9.4 %) or its std off by 1e4 (7.1 / 11.4 %), or the best-epoch
    snapshot a no-op (6.7 / 6.7 %). An affine slip in the normalisation (std / 1e4, mean and std
    swapped) still learns: the first convolution feeds a BatchNorm, which undoes it."""
    res, rec = digits_run
    mbs = res["megabatches"]
    accs = [m["test_acc"] for m in mbs]
    assert [m["train_size"] for m in mbs] == [675, 1350] and res["dataset"]["name"] == "digits"
    assert accs[0] >= LEARNT_FIRST and accs[-1] >= LEARNT, \
        f"test accuracy per mega-batch {accs} (chance {CHANCE} %): the model does not learn"
    assert all(m["val_acc"] >= 60.0 for m in mbs), [m["val_acc"] for m in mbs]  # measured 80.0 - 98.7
    assert res["summary"]["test_acc"] == accs[-1]
    assert res["summary"]["cer"] == sum(m["test_errors"] for m in mbs)


def test_the_recorded_best_epoch_is_the_best_validation_epoch_and_the_model_measured(digits_run):
    """val_acc and best_epoch name the epoch with the highest validation accuracy (the first of
    equals), and the model measured on the test set is that epoch's."""
    res, rec = digits_run
    for m, vals, measured in zip(res["megabatches"], rec.epoch_val, rec.measured_val):
        assert len(vals) == 3
        assert m["val_acc"] == max(vals) and m["best_epoch"] == vals.index(max(vals)) + 1, (m, vals)
        assert measured == m["val_acc"], (measured, vals)


def test_a_short_run_on_a_slice_of_real_cifar10_learns_far_above_chance(tmp_path, cifar_jpeg):
    """3,000 training and 1,000 test images of the real CIFAR-10 JPEG copy (the first 300 and 100 of
    each class, linked into an ImageFolder tree), 8 epochs of a narrow ResNet-18 with the ImageNet stem
    (16x16 after the stem, 8x8 after the pool: cheap): the test accuracy must clear 28 % (chance 10 %;
    measured 38.1 - 39.7 % over seeds 0-3, 10-16 s on two busy cores)."""
    root = tmp_path / "cifar-slice"
    for split, n in (("train", 300), ("test", 100)):
        for cls in sorted(p.name for p in (cifar_jpeg / split).iterdir() if p.is_dir()):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for f in sorted((cifar_jpeg / split / cls).iterdir())[:n]:
                (folder / f.name).symlink_to(f)
    res, _ = run_cli_in_process(tmp_path / "run", "--data", str(root), "--megabatches", "1", "--epochs", "8",
                                "--width", "16", "--stem", "imagenet", "--batch-size", "64", "--eval-batch-size",
                                "500", "--no-augment", "--method", "bl", "--loader", "memory", *CPU)
    assert (res["dataset"]["train"], res["dataset"]["test"], res["dataset"]["classes"]) == (3000, 1000, 10)
    (m,) = res["megabatches"]
    assert m["test_acc"] >= 28.0, f"test accuracy {m['test_acc']} % on the CIFAR-10 slice (chance {CHANCE} %)"


# -- the best-epoch snapshot and restore ---------------------------------------------------------

def test_the_model_measured_is_the_best_epoch_not_the_last(tmp_path):
    """The last epoch of every mega-batch is spoilt (the classifier negated: near 0 % accuracy), so the
    run must measure an earlier epoch's model. Fails with ``Trainer.restore_best`` a no-op (the spoilt
    model is measured: test 0-2 %) or ``snapshot_best`` a no-op (the initial weights are: ~10 %)."""
    res, rec = run_cli_in_process(tmp_path / "spoilt", *DIGITS, "--epochs", "4", spoil_last_epoch=True)
    mbs = res["megabatches"]
    assert len(mbs) == 2
    for m, vals, measured in zip(mbs, rec.epoch_val, rec.measured_val):
        assert len(vals) == 4 and vals[-1] < max(vals) - 30, f"the spoilt last epoch is not worse: {vals}"
        assert m["best_epoch"] < 4 and m["val_acc"] == max(vals), (m, vals)
        assert measured == m["val_acc"], \
            f"mega-batch {m['index']}: the model measured scores {measured} % on validation, " \
            f"its best epoch {max(vals)} % (epochs: {vals})"
        assert m["test_acc"] >= SPOILT_TEST, \
            f"mega-batch {m['index']}: test accuracy {m['test_acc']} % for a best epoch of {max(vals)} % (epochs: {vals})"
    assert mbs[-1]["test_acc"] >= LEARNT, [m["test_acc"] for m in mbs]


# -- the forgetting step's randomness and S&P's noise ----------------------------------------------

def small_model():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model("resnet18", 10, width=8)


def forgotten(model, method, megabatch, **kw):
    m = small_model()
    m.load_state_dict(model.state_dict())
    cfg = C.RunConfig(method=method, megabatches=3, epochs=1, **kw)
    forget_(m, cfg, megabatch, torch.optim.SGD(m.parameters(), lr=0.1))
    return m.state_dict()


@pytest.mark.parametrize("method,kw", [("sp", {}), ("lure", {"importance": "random"}), ("llf", {}), ("fc", {})])
def test_each_megabatch_forgets_with_its_own_draws(method, kw):
    """The forgetting step after mega-batch 1 and after mega-batch 2 of one run (same seed) draw different
    values; the same mega-batch draws the same. Fails with the mega-batch dropped from
    ``derive_seed(cfg.seed, 1, megabatch)`` in ``forget_``."""
    model = small_model()
    start = model.state_dict()
    first, again, second = (forgotten(model, method, i, **kw) for i in (1, 1, 2))
    assert all(torch.equal(first[k], again[k]) for k in first), "the same mega-batch drew different values"
    both = {k: (first[k] != start[k]) & (second[k] != start[k]) for k in start if start[k].is_floating_point()}
    n_both = sum(int(b.sum()) for b in both.values())
    n_same = sum(int((first[k][b] == second[k][b]).sum()) for k, b in both.items())
    assert n_both > 100, f"{method}: only {n_both} entries changed"
    # LURE's random criterion is keyed by the mega-batch on its own, so it resets other entries each
    # time; the values drawn for an entry reset both times must differ too
    assert n_same <= 0.01 * n_both, \
        f"{method}: {n_same} of the {n_both} entries changed after mega-batch 1 and 2 got the same values"


def test_shrink_perturb_adds_uniform_noise_within_sigma_times_the_bound():
    """theta <- lambda * theta + sigma * U(-b, b): the deviation from lambda * theta is nonzero for
    (almost) every entry, within sigma * b, and spread like a uniform draw (mean 0, std 1/sqrt(3) in
    units of sigma * b). Fails with the noise forced to zero (sigma 0 in the call of
    ``K.shrink_perturb_``)."""
    lam, sigma = 0.4, 0.001
    model = small_model()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    after = forgotten(model, "sp", 1, sp_lambda=lam, sp_sigma=sigma)
    z = []
    for name, p0 in before.items():
        dev = after[name] - torch.tensor(lam, dtype=torch.float32) * p0
        z.append((dev.double() / (sigma * reinit_bound(p0))).flatten())
    z = torch.cat(z)
    assert z.numel() > 100_000
    assert z.abs().max() <= 1 + 1e-3
    noisy = float((z != 0).double().mean())
    assert noisy > 0.99, f"only {noisy:.4f} of the entries got noise"
    assert abs(z.mean()) < 0.02 and 0.55 < z.std() < 0.6, (float(z.mean()), float(z.std()))


# -- window replay ---------------------------------------------------------------------------------

def test_window_replay_validates_on_the_previous_and_current_megabatch():
    """Window replay's validation set of mega-batch i is M_{i-1}'s and M_i's own validation samples.
    Fails with window's validation set computed as M_i's only."""
    s = make_stream(1000, 5, 200, "window", seed=3)
    for i, mb in enumerate(s.megabatches):
        own = np.concatenate([m.new_val for m in s.megabatches[max(0, i - 1):i + 1]])
        np.testing.assert_array_equal(np.sort(mb.val), np.sort(own), err_msg=f"mega-batch {i + 1}'s validation set")
        assert len(mb.val) == 20 * min(i + 1, 2)


def test_a_window_run_validates_on_two_megabatches_and_forgets_with_fresh_seeds(tmp_path):
    """End to end (3 tiny mega-batches, S&P): every epoch of mega-batch i validates on exactly M_{i-1} and
    M_i's own validation samples, results.json records their size, and the two forgetting steps draw
    from different seeds. Fails with window's validation set computed as M_i's only, or with the
    mega-batch dropped from the forgetting seed."""
    res, rec = run_cli_in_process(tmp_path / "window", "--preset", "tiny", "--megabatches", "3", "--epochs", "1",
                                  "--replay", "window", "--method", "sp", *CPU)
    n_val = 10  # tiny: mega-batches of 100 samples, 90 train / 10 validation
    assert [m["val_size"] for m in res["megabatches"]] == [n_val, 2 * n_val, 2 * n_val]
    assert [m["train_size"] for m in res["megabatches"]] == [90, 180, 180]
    mbs = rec.setup.stream.megabatches
    for i, epochs in enumerate(rec.epoch_val_indices[:3]):
        own = np.sort(np.concatenate([m.new_val for m in mbs[max(0, i - 1):i + 1]]))
        assert len(epochs) == 1
        np.testing.assert_array_equal(np.sort(epochs[0]), own, err_msg=f"mega-batch {i + 1} validated on")
    seed = res["config"]["seed"]
    assert rec.sp_seeds == [derive_seed(seed, 1, 1), derive_seed(seed, 1, 2)]
    assert len(set(rec.sp_seeds)) == 2
