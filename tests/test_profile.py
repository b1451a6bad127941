"""--profile authors: the published code's behaviour, per method, each piece also reachable on its own."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from lure_fast import config as C
from lure_fast import methods as Mth
from lure_fast import prepare as P
from lure_fast import run as R
from lure_fast.cli import main
from lure_fast.models import build_model
from lure_fast.train import Trainer

CPU = torch.device("cpu")


def cfg(method, **kw):
    return C.resolve({"profile": "authors", "method": method, "data": "x", **kw})


def lrs(c):
    t = Trainer(nn.Linear(2, 2), c, CPU)
    return [round(t.lr_at(e), 6) for e in range(c.epochs)]


def test_authors_profile_trains_bl_at_a_constant_rate_and_lure_with_the_decay():
    assert lrs(cfg("bl")) == [0.1] * 50                                       # ALMA.py: gamma=1
    assert lrs(cfg("lure")) == [0.1] * 20 + [0.01] * 20 + [0.001] * 10       # LURE_main.py --gamma 0.1
    assert lrs(C.resolve({"method": "bl", "data": "x"})) == lrs(cfg("lure"))  # the paper: one schedule
    assert lrs(cfg("bl", lr_gamma=0.1)) == lrs(cfg("lure"))                   # a flag still wins


@pytest.mark.parametrize("method", ["bl", "lure", "sp", "llf", "fc", "cold"])
def test_authors_profile_sets_every_published_behaviour(method):
    c, paper = cfg(method), C.resolve({"method": method, "data": "x"})
    assert (c.reinit_scope, c.importance_batches, c.importance_data, c.sp_lambda, c.val_augment,
            c.cold_momentum, c.buffer_size) == ("code", "code", "code", 0.3, True, "keep", 182)
    assert (paper.reinit_scope, paper.importance_batches, paper.importance_data, paper.sp_lambda,
            paper.val_augment, paper.cold_momentum, paper.lr_gamma) == ("paper", "paper", "paper", 0.4, False,
                                                                         "reset", 0.1)
    assert cfg(method, sp_lambda=0.5, val_augment=False).sp_lambda == 0.5


def test_an_unknown_profile_is_one_line(capsys):
    assert main(["run", "--profile", "published", "--preset", "tiny", "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def tiny_setup(**kw):
    c = C.resolve({"preset": "tiny", "device": "cpu", "method": "lure", **kw})
    return c, P.prepare(c, CPU, notes=False)


def test_code_importance_data_is_the_next_megabatchs_first_128_images_augmented():
    c, s = tiny_setup(importance_data="code")
    mb1, mb2 = s.stream.megabatches[:2]
    assert s.importance.augment
    s.point_importance_at_next(mb1)
    assert np.array_equal(s.importance.indices, mb2.train[:128])
    assert np.array_equal(mb2.train[:len(mb1.train)], mb1.train)  # full replay: M_1's images come first
    _, paper = tiny_setup()
    assert not paper.importance.augment and np.array_equal(paper.importance.indices, mb1.importance)


def test_a_run_unlearns_on_the_images_the_profile_names(monkeypatch, tmp_path):
    seen = []

    def spy(model, cfg, megabatch, optimizer, importance_loader=None, init_state=None):
        seen.append(importance_loader.indices.copy())
        return {"reset": 0, "seconds": 0.0}

    monkeypatch.setattr(R, "forget_", spy)
    for data in ("code", "paper"):
        c = C.resolve({"preset": "tiny", "device": "cpu", "method": "lure", "importance_data": data})
        R.run(c, str(tmp_path / data), progress=False)
    s = P.prepare(c, CPU, notes=False)
    assert np.array_equal(seen[0], s.stream.megabatches[1].train[:128])
    assert np.array_equal(seen[1], s.stream.megabatches[0].importance)


def test_augmented_validation_picks_the_epoch_but_the_gap_uses_clean_images():
    _, s = tiny_setup(val_augment=True)
    assert s.val.augment and s.clean is not s.val and not s.clean.augment
    _, paper = tiny_setup()
    assert not paper.val.augment and paper.clean is paper.val


def test_validation_and_snip_images_are_augmented_only_as_the_training_images_are():
    """The authors' validation and SNIP images are subsets of their (augmented) training set: under
    --no-augment neither is augmented (the small preset trains without augmentation)."""
    _, s = tiny_setup(val_augment=True, importance_data="code", augment=False)
    assert not s.train.augment and not s.val.augment and not s.importance.augment and s.clean is s.val
    _, s = tiny_setup(val_augment=True, importance_data="code", augment=True)
    assert s.train.augment and s.val.augment and s.importance.augment


def test_measure_reads_the_training_accuracy_from_clean_images():
    class Counter:
        def __init__(self):
            self.seen = []

        def evaluate(self, loader):
            self.seen.append(loader)
            return {"acc": 50.0, "errors": 1, "ece": 0.0}

    _, s = tiny_setup(val_augment=True)
    t = Counter()
    R.measure(t, s, s.stream.megabatches[0], {"val": 40.0, "epoch": 0, "train": 60.0})
    assert t.seen == [s.test, s.clean]


def momentum_step(c, model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(4, 3, 8, 8)).sum().backward()
    opt.step()
    init = [t.clone() for t in model.state_dict().values()]
    return opt, Mth.Step(c, 1, 7, opt, None, init)


@pytest.mark.parametrize("keep", [True, False])
def test_cold_start_keeps_momentum_only_when_asked(keep):
    model = build_model("resnet18", 10, 3, 4)
    c = C.resolve({"preset": "tiny", "method": "cold", "cold_momentum": "keep" if keep else "reset"})
    opt, step = momentum_step(c, model)
    before = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    Mth.METHODS["cold"].forget(model, step)
    after = [opt.state[p]["momentum_buffer"] for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(after, before)) == keep
    assert keep or all(not a.any() for a in after)


def test_fc_reset_under_the_code_scope_is_the_published_no_op():
    model = build_model("resnet18", 10, 3, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    code = C.resolve({"preset": "tiny", "method": "fc", "reinit_scope": "code"})
    assert Mth.METHODS["fc"].forget(model, Mth.Step(code, 1, 3, None)) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    paper = C.resolve({"preset": "tiny", "method": "fc"})
    assert Mth.METHODS["fc"].forget(model, Mth.Step(paper, 1, 3, None)) == 4 * 8 * 10 + 10
    assert not torch.equal(Mth.classifier(model).weight, before["net.fc.weight"])


def test_a_run_records_its_profile_and_what_it_chose(tmp_path, capsys):
    assert main(["run", "--profile", "authors", "--method", "bl", "--preset", "tiny", "--quiet", "--threads", "1",
                 "--out", str(tmp_path / "r")]) == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["config"]["profile"] == "authors" and res["config"]["lr_gamma"] == 1.0
    assert res["config"]["val_pool"] == "code" and res["config"]["vgg"] == "code"


def test_the_authors_vgg_has_four_max_pools_average_pooling_and_their_init():
    torch.manual_seed(0)
    code, paper = (build_model("vgg16_bn", 10, 3, 64, vgg=v).net for v in ("code", "paper"))
    pools = lambda net: sum(isinstance(m, nn.MaxPool2d) for m in net.features)
    assert (pools(code), pools(paper)) == (4, 5)
    x = torch.rand(2, 3, 32, 32)
    assert code.features(x).shape[-2:] == (2, 2) and code(x).shape == (2, 10)
    convs = [m for m in code.features if isinstance(m, nn.Conv2d)]
    assert all(not c.bias.any() for c in convs)
    c = convs[-1]  # kaiming_normal, fan_out: std sqrt(2 / (out_channels * 9))
    assert abs(c.weight.std().item() / (2 / (c.out_channels * 9)) ** 0.5 - 1) < 0.02
    fc = code.classifier[0]
    assert abs(fc.weight.std().item() / 0.01 - 1) < 0.05 and not fc.bias.any()
    assert paper.classifier[0].bias.any()  # PyTorch's default init draws the bias
    assert len(Mth.classifier(code).weight) == 10 and code.later_layers()[-1] is code.classifier


def test_the_authors_validation_pool_starts_at_image_45000_whatever_the_stream():
    from lure_fast.stream import make_stream
    code = make_stream(50000, 4, 1000, "full", shuffle=False, val_pool="code")
    paper = make_stream(50000, 4, 1000, "full", shuffle=False)
    assert list(code[0].val[:2]) == [45000, 45001] and list(code[3].new_val[-1:]) == [45399]
    assert list(paper[0].val[:2]) == [3600, 3601]
    assert all(np.array_equal(a.train, b.train) for a, b in zip(code, paper))  # the training pool is the same
    full_c, full_p = (make_stream(50000, 8, 6250, "full", shuffle=False, val_pool=v) for v in ("code", "paper"))
    assert all(np.array_equal(a.val, b.val) for a, b in zip(full_c, full_p))  # they agree at 8 x 6,250


def test_the_authors_buffer_draws_from_the_buffer_too_so_repeats_accumulate():
    from lure_fast.stream import make_stream
    code = make_stream(20000, 6, 2000, "buffer", buffer_size=182, seed=0, buffer_draws="code")
    paper = make_stream(20000, 6, 2000, "buffer", buffer_size=182, seed=0)
    for s in (code, paper):
        assert [len(m.train) - len(m.new_train) for m in s] == [182 * k for k in range(6)]
    assert all(len(np.unique(m.train)) == len(m.train) for m in paper)
    last = code[-1]
    assert len(np.unique(last.train)) < len(last.train)  # repeats
    earlier = np.concatenate([m.new_train for m in code[:-1]])
    assert np.isin(last.train[len(last.new_train):], earlier).all()


def test_the_authors_profile_sets_the_stream_layout():
    c = cfg("bl", replay="buffer")
    assert (c.val_pool, c.buffer_draws) == ("code", "code")
    assert (C.resolve({"data": "x"}).val_pool, C.resolve({"data": "x"}).buffer_draws) == ("paper", "paper")


def test_the_authors_profile_keeps_the_first_shots_of_each_class_where_shots_is_given():
    c = cfg("lure", shots=270)
    assert (c.shots, c.shots_draw) == (270, "code")                          # their to_few_shot: the first N
    assert C.resolve({"data": "x", "shots": 270}).shots_draw == "paper"      # the paper: drawn with the seed
    assert cfg("lure", shots=270, shots_draw="paper").shots_draw == "paper"  # a flag still wins
    # without --shots the profile leaves it at its default: a run saved before the setting existed still resumes
    assert cfg("lure").shots_draw == "paper"
