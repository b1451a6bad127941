"""Checkpoints run nothing from the file they are read from, and need room before they are written.

A checkpoint is safetensors plus JSON (no pickle); one of an earlier release (a ``torch.save`` pickle) is
read with ``weights_only=True`` and NumPy's RNG array allowed, nothing else: docs/safety.md.
"""
import hashlib
import io
import json
import os
import pickle
import random
import re
import signal
import struct

import numpy as np
import pytest
import torch

from lure_fast.checkpoint import (HEADER, LEGACY_MAGIC, MAGIC, Checkpointer, RunError, UnsafeCheckpoint, decode,
                                  encode)

from lf_helpers import OpenForWriting, Touch, run_cli

RUN = ["run", "--method", "lure", "--preset", "tiny", "--megabatches", "2", "--epochs", "2",
       "--checkpoint-interval", "0", "--quiet", "--threads", "1"]


def legacy_file(path, state) -> None:
    """Write ``state`` as an earlier release did: the header, then a ``torch.save`` pickle."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    path.write_bytes(HEADER.pack(LEGACY_MAGIC, len(payload), hashlib.sha256(payload).digest()) + payload)


def comparable(res: dict) -> dict:
    mbs = [{k: v for k, v in m.items() if "seconds" not in k} for m in res["megabatches"]]
    return {"config": res["config"], "megabatches": mbs,
            "summary": {k: v for k, v in res["summary"].items() if k != "seconds"}}


@pytest.mark.parametrize("payload", [Touch, OpenForWriting])
def test_a_checkpoint_carrying_a_payload_is_refused_and_runs_nothing(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = {"model": {"w": torch.ones(2)}, "x": payload(marker)}
    buf = io.BytesIO()
    torch.save(evil, buf)
    torch.load(io.BytesIO(buf.getvalue()), weights_only=False)  # the payload is live: loaded as before, it runs
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "ckpt-0001-0000.pt"
    legacy_file(path, evil)
    with pytest.raises(UnsafeCheckpoint) as e:
        Checkpointer.read(str(path))
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "nothing in it ran" in msg
    assert ("posix.system" in msg or "os.system" in msg) if payload is Touch else "io.open" in msg
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpoint):  # a refused file is not skipped for an older one: the folder is suspect
        Checkpointer(str(tmp_path)).latest()
    assert not marker.exists()


def test_resume_from_a_folder_with_a_payload_is_one_line_and_leaves_everything(tmp_path):
    out = tmp_path / "run"
    assert run_cli(*RUN, "--out", str(out), env={"LURE_FAST_FAULT": "epoch_end:2:0"}).returncode == -signal.SIGKILL
    newest = sorted(out.glob("ckpt-*.pt"))[-1]
    marker = tmp_path / "pwned"
    legacy_file(newest, {"config": {}, "x": Touch(marker)})
    before = {f.name: f.read_bytes() for f in out.iterdir() if not f.name.endswith(".lock")}
    p = run_cli(*RUN, "--out", str(out), "--resume")
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert newest.name in p.stderr and "does not load" in p.stderr and "posix.system" in p.stderr
    assert not marker.exists()
    assert {f.name: f.read_bytes() for f in out.iterdir() if not f.name.endswith(".lock")} == before


def test_a_checkpoint_is_safetensors_and_json_and_reads_back_exactly(tmp_path):
    state = {"model": {"conv.weight": torch.randn(4, 3, 3, 3).to(memory_format=torch.channels_last),
                       "bn.num_batches_tracked": torch.tensor(7), "half": torch.randn(5).bfloat16()},
             "optimizer": {"state": {0: {"momentum_buffer": torch.randn(3)}, 1: {"momentum_buffer": None}},
                           "param_groups": [{"lr": 0.1, "nesterov": False, "params": [0, 1], "foreach": None}]},
             "rng": {"python": random.getstate(), "torch": torch.get_rng_state()},
             "best": {"val": float("nan"), "epoch": -1}, "empty": torch.zeros(0, 3), "$tuple": (1, "a"),
             "results": [{"test_acc": 1 / 3, "big": 2 ** 62, "inf": float("inf")}]}
    payload = encode(state)
    (n,) = struct.unpack_from("<Q", payload)
    assert json.loads(payload[8:8 + n])["__metadata__"]  # a safetensors header, the state's JSON in it
    with pytest.raises(Exception):
        pickle.loads(payload)  # not a pickle
    back = decode(payload)
    flat_in, flat_out = [], []

    def walk(a, b):
        assert type(a) is type(b) or (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)), (a, b)
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
            flat_in.append(a)
        elif isinstance(a, dict):
            assert list(a) == list(b)
            for k in a:
                walk(a[k], b[k])
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                walk(x, y)
        elif isinstance(a, float) and a != a:
            assert b != b
        else:
            assert a == b

    walk(state, back)
    assert len(flat_in) == 6
    with pytest.raises(TypeError, match="cannot hold a ndarray"):
        encode({"x": np.zeros(2)})  # nothing that would need a pickle gets in


def test_a_payload_naming_a_tensor_it_lacks_is_damaged_not_a_crash(tmp_path):
    from safetensors.torch import save
    payload = save({"0": torch.ones(1)}, metadata={"lure-fast.state": json.dumps({"w": {"$tensor": "9"}})})
    with pytest.raises(ValueError, match="names a tensor it does not hold"):
        decode(payload)
    path = tmp_path / "ckpt-0001-0000.pt"
    path.write_bytes(HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest()) + payload)
    warnings = []
    assert Checkpointer(str(tmp_path)).latest(warn=warnings.append) is None
    assert "names a tensor it does not hold" in warnings[0] and "\n" not in warnings[0]


def test_a_checkpoint_of_the_earlier_release_still_resumes_to_the_same_results(tmp_path):
    """A folder killed under the earlier release (torch.save checkpoints, NumPy's RNG tuple) resumes."""
    base = tmp_path / "base"
    assert run_cli(*RUN, "--out", str(base)).returncode == 0
    out = tmp_path / "run"
    assert run_cli(*RUN, "--out", str(out), env={"LURE_FAST_FAULT": "epoch_end:2:0"}).returncode == -signal.SIGKILL
    for path in out.glob("ckpt-*.pt"):
        state = Checkpointer.read(str(path))
        n = state["rng"]["numpy"]
        state["rng"]["numpy"] = (n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                                 n["gauss"])
        state["version"] = 1
        legacy_file(path, state)
        assert path.read_bytes()[:8] == LEGACY_MAGIC
    p = run_cli(*RUN, "--out", str(out), "--resume")
    assert p.returncode == 0, p.stderr
    assert comparable(json.loads((out / "results.json").read_text())) == \
        comparable(json.loads((base / "results.json").read_text()))


def test_a_checkpoint_that_does_not_fit_is_one_line_and_the_older_ones_are_kept(tmp_path, monkeypatch):
    c = Checkpointer(str(tmp_path))
    c.save({"w": torch.ones(10)}, 1, 0)
    c.wait()
    kept = (tmp_path / "ckpt-0001-0000.pt").read_bytes()
    import shutil
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 9, 10 ** 9 - 100, 100))
    c.save({"w": torch.ones(10_000)}, 1, 1)
    with pytest.raises(RunError) as e:
        c.wait()
    msg = str(e.value)
    assert "\n" not in msg and re.search(r"needs 39\.\d KiB in .* but 100 B is free there", msg) and "--resume" in msg
    assert os.listdir(tmp_path) == ["ckpt-0001-0000.pt"]  # nothing half-written, the older one intact
    assert (tmp_path / "ckpt-0001-0000.pt").read_bytes() == kept


# --- the free space, before the loaders' large writes (loaders/space.py) -------------------------------------

def little_room(monkeypatch, free=100):
    import shutil
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 12, 10 ** 12 - free, free))


def test_a_beton_that_does_not_fit_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    pytest.importorskip("ffcv")
    from lure_fast.loaders import DataError, beton_for, load_dataset
    from lure_fast.loaders.write import estimated_size

    ds = load_dataset("digits")
    need = estimated_size(ds.train)
    assert need >= len(ds.train) * 8 * 8 * 3
    little_room(monkeypatch)
    with pytest.raises(DataError) as e:
        beton_for(ds, "train", cache_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and re.search(r"\.beton: writing it: needs [\d.]+ [KM]iB in .* but 100 B is free there", msg)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []  # no partial file
    monkeypatch.undo()
    assert beton_for(ds, "train", cache_dir=tmp_path)  # with room, the same call writes it


def test_a_jpeg_beton_is_sized_from_its_images(tmp_path):
    from lure_fast.loaders import load_dataset
    from lure_fast.loaders.write import SAMPLE_OVERHEAD, estimated_size

    ds = load_dataset("digits")
    raw, jpg = estimated_size(ds.train, "raw"), estimated_size(ds.train, "jpg", 90)
    assert raw == len(ds.train) * (8 * 8 * 3 + SAMPLE_OVERHEAD) + (1 << 20)
    assert jpg > len(ds.train) * (100 + SAMPLE_OVERHEAD)  # a JPEG has a few hundred bytes of headers


def test_a_decoded_cache_that_does_not_fit_is_skipped_with_one_warning(tmp_path, monkeypatch):
    from PIL import Image

    from lure_fast.loaders.sources import read_imagefolder

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "data" / split / c / f"{i}.png")
    little_room(monkeypatch)
    with pytest.warns(UserWarning) as w:
        images = read_imagefolder(str(tmp_path / "data"), cache_dir=tmp_path / "cache").train.images
    assert len(images) == 4
    msg = str(w[0].message)
    assert "\n" not in msg and "caching the decoded images of" in msg and "but 100 B is free there" in msg
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_a_generated_corruption_that_does_not_fit_is_not_cached(tmp_path, monkeypatch):
    from lure_fast import corruptions

    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    name = corruptions.ALL[0]
    little_room(monkeypatch)
    with pytest.warns(UserWarning) as w:
        a = corruptions.generated(images, name, 1, 0, cache_dir=str(tmp_path))
    assert a.shape == images.shape
    msg = str(w[0].message)
    assert "\n" not in msg and f"caching the generated corruption {name}-1: needs" in msg and "100 B is free" in msg
    assert list(tmp_path.rglob("*.npy")) == []
    monkeypatch.undo()
    corruptions.generated(images, name, 1, 0, cache_dir=str(tmp_path))
    assert len(list(tmp_path.rglob("*.npy"))) == 1
