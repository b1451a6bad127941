"""The trained model kept: model.safetensors beside results.json, reloaded by lure_fast.load_model."""
from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import pytest
import torch

import lure_fast
from lure_fast import config as C
from lure_fast.modelfile import MODEL, ModelFileError, read_meta


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from lure_fast.run import run
    out = str(tmp_path_factory.mktemp("model") / "run")
    torch.set_num_threads(1)
    res = run(C.resolve({"preset": "tiny", "device": "cpu", "method": "lure", "save_models": "all"}), out,
              progress=False)
    return out, res


def _test_accuracy(model, res, precision):
    from lure_fast.loaders import load_dataset, make_backend
    cfg = res["config"]
    ds = load_dataset(cfg["dataset"], cfg["data"], cfg["image_size"])
    loader = make_backend("memory", ds, "cpu").loader("test", np.arange(len(ds.test)), cfg["eval_batch_size"])
    amp = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
    correct = n = 0
    with torch.no_grad(), amp:
        for x, y in loader.epoch(0):
            correct += int((model(x).argmax(1) == y).sum())
            n += len(y)
    return 100.0 * correct / n


def test_a_saved_model_reproduces_the_final_test_accuracy_exactly(tiny_run):
    out, res = tiny_run
    path = os.path.join(out, MODEL)
    model, meta = lure_fast.load_model(path, with_meta=True)
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert meta["precision"] == res["precision"] and meta["megabatch"] == res["config"]["megabatches"]
    assert meta["arch"] == "resnet18" and meta["width"] == 8 and meta["classes"] == res["dataset"]["classes"]
    assert meta["image_shape"] == res["dataset"]["image_shape"] and meta["config"] == res["config"]
    acc = _test_accuracy(model, res, meta["precision"])
    assert acc == res["summary"]["test_acc"] == res["megabatches"][-1]["test_acc"]
    assert lure_fast.load_model(out) is not None  # a run folder names its model.safetensors


def test_save_models_all_keeps_each_megabatch(tiny_run):
    out, res = tiny_run
    mb1 = lure_fast.load_model(os.path.join(out, "model-mb1.safetensors"))
    assert _test_accuracy(mb1, res, res["precision"]) == res["megabatches"][0]["test_acc"]
    a = lure_fast.load_model(os.path.join(out, "model-mb2.safetensors")).state_dict()
    b = lure_fast.load_model(os.path.join(out, MODEL)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_model_files_are_one_line(tiny_run, tmp_path):
    out, _ = tiny_run
    good = open(os.path.join(out, MODEL), "rb").read()
    with pytest.raises(ModelFileError, match="no model file there"):
        lure_fast.load_model(str(tmp_path / "absent.safetensors"))
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError, match="damaged"):
        lure_fast.load_model(str(damaged))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelFileError, match="not a readable safetensors"):
        lure_fast.load_model(str(junk))
    # another network: the same tensors under metadata saying width 16
    from safetensors.torch import load_file, save_file
    meta = read_meta(os.path.join(out, MODEL))
    other = tmp_path / "other.safetensors"
    save_file(load_file(os.path.join(out, MODEL)), str(other), metadata={"lure_fast": json.dumps({**meta, "width": 16})})
    with pytest.raises(ModelFileError, match="another network"):
        lure_fast.load_model(str(other))
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelFileError, match="not a lure-fast model file"):
        lure_fast.load_model(str(plain))
    assert all("\n" not in str(e) for e in [ModelFileError("x")])
