"""Each forgetting strategy's exact effect: which entries change, which stay bit-identical, ranges."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lure_fast import config as C
from lure_fast.loaders import Dataset, Split, make_backend
from lure_fast.importance import importance
from lure_fast.methods import forget_, reinit_bound, unlearn_pool
from lure_fast.models import build_model


def make_model(seed=0):
    torch.manual_seed(seed)
    m = build_model("resnet18", 10, width=8)
    with torch.no_grad():  # non-trivial BatchNorm state, so "untouched" is a real check
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5); mod.bias.uniform_(-0.1, 0.1)
                mod.running_mean.uniform_(-0.1, 0.1); mod.running_var.uniform_(0.5, 1.5)
    return m


def tiny_loader(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n, 8, 8, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    ds = Dataset("rand", "test", Split(imgs, labels), Split(imgs, labels), [str(i) for i in range(10)])
    return make_backend("memory", ds).loader("train", np.arange(n), 16), imgs, labels


def cfg(**kw):
    return C.RunConfig(**{"epochs": 1, "megabatches": 2, **kw})


def snapshot(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def changed(before, m):
    return {k for k, v in m.state_dict().items() if not torch.equal(v, before[k])}


def optimizer(m):
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.rand(2, 3, 8, 8)).sum().backward()
    opt.step()
    return opt


def test_bl_changes_nothing():
    m = make_model(); opt = optimizer(m); before = snapshot(m)
    momentum = [s["momentum_buffer"].clone() for s in opt.state.values()]
    forget_(m, cfg(method="bl"), 1, opt, None)
    assert changed(before, m) == set()
    assert all(torch.equal(a, s["momentum_buffer"]) for a, s in zip(momentum, opt.state.values()))


@pytest.mark.parametrize("scope", ["paper", "code"])
def test_lure_magnitude_resets_exactly_the_lowest_fraction(scope):
    m = make_model(); before = snapshot(m)
    names, params, bounds = unlearn_pool(m, scope)
    sal = torch.cat([p.detach().abs().flatten() for p in params])
    k = int(0.2 * sal.numel())
    thr = torch.kthvalue(sal, k).values
    res = forget_(m, cfg(method="lure", importance="magnitude", reinit_scope=scope), 1,
                  torch.optim.SGD(m.parameters(), lr=0.1), None)
    state = m.state_dict()
    n_reset = n_selected = 0
    for name, bound in zip(names, bounds):
        old, new = before[name], state[name]
        selected = old.abs() <= thr
        n_selected += int(selected.sum())
        if bound is None:
            assert torch.equal(old, new), name  # ranked, never reset
            continue
        assert torch.equal(old[~selected], new[~selected]), name  # kept entries bit-identical
        assert (new[selected].abs() <= bound).all(), name
        n_reset += int(selected.sum())
    assert res["reset"] == n_reset and n_selected >= k
    untouched = set(before) - set(n for n, b in zip(names, bounds) if b is not None)
    for name in untouched:  # biases, BatchNorm statistics (and in paper scope BN weights)
        assert torch.equal(before[name], state[name]), name
    if scope == "paper":
        assert all(n.endswith("weight") and before[n].dim() in (2, 4) for n in names)
    else:
        assert any(before[n].dim() == 1 for n, b in zip(names, bounds) if b == 1.0)  # BN weights, bound 1


def test_reinit_bound_is_kaiming_uniform_a_sqrt5():
    w = torch.empty(64, 32, 3, 3)
    assert math.isclose(reinit_bound(w), 1 / math.sqrt(32 * 9))
    assert reinit_bound(torch.empty(64)) == 1.0  # 1-D viewed as [n, 1]
    torch.manual_seed(0)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    assert w.abs().max() <= reinit_bound(w) and w.abs().max() > 0.95 * reinit_bound(w)


def test_lure_is_deterministic_per_seed_and_differs_across_seeds():
    outs = []
    for seed in (0, 0, 1):
        m = make_model()
        forget_(m, cfg(method="lure", importance="random", seed=seed), 1, torch.optim.SGD(m.parameters(), lr=0.1))
        outs.append(m.net.layer3[0].conv1.weight.detach().clone())
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def manual_grads(m, params, imgs, labels, reduction, batch, first_only):
    accs = [torch.zeros_like(p) for p in params]
    m.eval()
    x = imgs.permute(0, 3, 1, 2).float() / 255
    for s in range(0, len(x), batch):
        m.zero_grad()
        F.cross_entropy(m(x[s:s + batch]), labels[s:s + batch], reduction=reduction).backward()
        for a, p in zip(accs, params):
            a += p.grad.abs() if first_only else p.grad
        if first_only:
            break
    return accs


@pytest.mark.parametrize("batches", ["paper", "code"])
def test_snip_saliency_matches_autograd(batches):
    m = make_model()
    loader, imgs, labels = tiny_loader()
    _, params, _ = unlearn_pool(m, "paper")
    c = cfg(method="lure", importance="snip", importance_batches=batches)
    sal = importance(m, params, c, loader, seed=0)
    grads = manual_grads(m, params, imgs, labels, "sum" if batches == "paper" else "mean", 16, batches == "code")
    for s, g, p in zip(sal, grads, params):
        e = (g * p.detach()).abs()  # summation order differs from autograd's: relative tolerance
        torch.testing.assert_close(s, e, rtol=1e-4, atol=1e-5 * float(e.abs().max()))


@pytest.mark.parametrize("kind", ["snip", "fim"])
def test_saliency_of_a_channels_last_model_takes_its_layout_and_values(kind):
    """As on CUDA, where the trainer keeps conv weights channels-last: the accumulators (one buffer)
    take each parameter's strides, and the saliency equals the row-major model's, value for value."""
    loader, _, _ = tiny_loader()
    c = cfg(method="lure", importance=kind)
    row = make_model()
    want = importance(row, unlearn_pool(row, "paper")[1], c, loader, seed=0)
    cl = make_model().to(memory_format=torch.channels_last)
    params = unlearn_pool(cl, "paper")[1]
    assert any(p.dim() == 4 and not p.is_contiguous() for p in params)
    got = importance(cl, params, c, loader, seed=0)
    assert [g.stride() for g in got] == [p.stride() for p in params]
    assert len({g.untyped_storage().data_ptr() for g in got}) == 1  # views of one buffer
    for g, w in zip(got, want):  # the convolutions sum in another order in this layout
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * float(w.abs().max()))


def test_fisher_saliency_is_summed_squared_gradients():
    m = make_model()
    loader, imgs, labels = tiny_loader()
    _, params, _ = unlearn_pool(m, "paper")
    sal = importance(m, params, cfg(importance="fim"), loader, seed=0)
    x = imgs.permute(0, 3, 1, 2).float() / 255
    m.eval()
    expect = [torch.zeros_like(p) for p in params]
    for s in range(0, len(x), 16):
        m.zero_grad()
        F.cross_entropy(m(x[s:s + 16]), labels[s:s + 16]).backward()
        for e, p in zip(expect, params):
            e += p.grad ** 2
    for s, e in zip(sal, expect):
        torch.testing.assert_close(s, e, rtol=1e-4, atol=1e-5 * float(e.abs().max()))


def test_importance_estimation_changes_no_state():
    m = make_model(); before = snapshot(m)
    loader, _, _ = tiny_loader()
    importance(m, unlearn_pool(m, "paper")[1], cfg(), loader, seed=0)
    assert changed(before, m) == set()


def test_shrink_and_perturb_touches_every_parameter_within_the_noise_bound():
    m = make_model(); before = snapshot(m)
    forget_(m, cfg(method="sp", sp_lambda=0.4, sp_sigma=0.001), 1, torch.optim.SGD(m.parameters(), lr=0.1))
    for name, p in m.named_parameters():
        delta = p.detach() - 0.4 * before[name]
        assert (delta.abs() <= 0.001 * reinit_bound(p) * (1 + 1e-5) + 1e-7).all(), name
        assert not torch.equal(p.detach(), before[name]), name
    for name in before:
        if "running" in name or "num_batches" in name:
            assert torch.equal(before[name], m.state_dict()[name])


def test_llf_paper_resets_blocks_3_4_and_classifier_whole():
    m = make_model(); before = snapshot(m)
    forget_(m, cfg(method="llf"), 1, torch.optim.SGD(m.parameters(), lr=0.1))
    ch = changed(before, m)
    later = ("net.layer3.", "net.layer4.", "net.fc.")
    for name in before:
        if name.startswith(later) and "num_batches" not in name:
            assert name in ch, name
        elif not name.startswith(later):
            assert name not in ch, name
    s = m.state_dict()
    assert torch.equal(s["net.layer3.0.bn1.weight"], torch.ones_like(s["net.layer3.0.bn1.weight"]))
    assert torch.equal(s["net.layer4.1.bn2.running_var"], torch.ones_like(s["net.layer4.1.bn2.running_var"]))


def test_llf_code_resets_only_conv_linear_weights_outside_stem_layer1_layer2_and_shortcuts():
    m = make_model(); before = snapshot(m)
    forget_(m, cfg(method="llf", reinit_scope="code"), 1, torch.optim.SGD(m.parameters(), lr=0.1))
    expect = {n for n, v in before.items() if n.startswith(("net.layer3.", "net.layer4.", "net.fc."))
              and n.endswith("weight") and v.dim() in (2, 4) and "downsample" not in n}
    assert changed(before, m) == expect
    w = m.state_dict()["net.layer3.0.conv1.weight"]
    assert w.abs().max() <= reinit_bound(w)


def test_fc_reset_changes_only_the_classifier():
    m = make_model(); before = snapshot(m)
    forget_(m, cfg(method="fc"), 1, torch.optim.SGD(m.parameters(), lr=0.1))
    assert changed(before, m) == {"net.fc.weight", "net.fc.bias"}
    assert m.net.fc.weight.abs().max() <= reinit_bound(m.net.fc.weight)


def test_cold_start_restores_initial_state_and_clears_momentum():
    m = make_model()
    init = [t.detach().clone() for t in m.state_dict().values()]
    opt = optimizer(m)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    forget_(m, cfg(method="cold"), 1, opt, None, init_state=init)
    for t, t0 in zip(m.state_dict().values(), init):
        assert torch.equal(t, t0)
    assert all(s["momentum_buffer"].abs().sum() == 0 for s in opt.state.values())


def test_momentum_is_kept_unless_reset_is_asked_for():
    m = make_model(); opt = optimizer(m)
    forget_(m, cfg(method="bl"), 1, opt)
    assert any(s["momentum_buffer"].abs().sum() > 0 for s in opt.state.values())
    forget_(m, cfg(method="bl", reset_momentum=True), 1, opt)
    assert all(s["momentum_buffer"].abs().sum() == 0 for s in opt.state.values())
