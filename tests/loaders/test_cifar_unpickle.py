"""CIFAR's python batches are pickles: they are read by an unpickler that builds only what the released files
hold (dicts, lists, strings, numbers, NumPy arrays), so a crafted batch is refused before anything in it runs."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from lure_fast.loaders import DataError, load_dataset

from lf_helpers import OpenForWriting, Touch


def cifar10(root, protocol=pickle.DEFAULT_PROTOCOL, numpy1_names=False, numpy_labels=False):
    """A cifar-10-batches-py folder of 4 random images per batch, pickled with ``protocol``; with
    ``numpy1_names`` the array constructor is spelt as NumPy 1.x (and so the released files) spell it; with
    ``numpy_labels`` the labels are NumPy integers (as a copy re-pickled from NumPy arrays has them)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(obj):
        data = pickle.dumps(obj, protocol=protocol)
        return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if numpy1_names else data

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(rng.integers(0, 10, 4))
        batch = {"batch_label": f"{name} of 6", "labels": labels if numpy_labels else [int(v) for v in labels],
                 "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 "filenames": [f"img_{i}.png".encode() for i in range(4)]}
        (folder / name).write_bytes(dump(batch))
    (folder / "batches.meta").write_bytes(dump({"label_names": [f"c{i}" for i in range(10)],
                                                "num_cases_per_batch": 4, "num_vis": 3072}))
    return folder


@pytest.mark.parametrize("protocol,numpy1_names,numpy_labels", [(0, True, False), (2, True, False), (2, False, True),
                                                                 (4, False, False), (5, False, True)])
def test_honest_batches_are_read_whatever_their_protocol(tmp_path, protocol, numpy1_names, numpy_labels):
    folder = cifar10(tmp_path, protocol, numpy1_names, numpy_labels)
    if numpy1_names:
        assert b"numpy.core.multiarray" in (folder / "data_batch_1").read_bytes()
    ds = load_dataset(path=str(tmp_path))
    assert len(ds.train) == 20 and len(ds.test) == 4 and ds.classes[3] == "c3"
    first = pickle.loads((folder / "data_batch_1").read_bytes())["data"][0]
    assert np.array_equal(ds.train.images[0].numpy(), first.reshape(3, 32, 32).transpose(1, 2, 0))


@pytest.mark.parametrize("payload,named", [(Touch, "system"), (OpenForWriting, "io.open")])
@pytest.mark.parametrize("where", ["data_batch_3", "batches.meta"])
def test_a_batch_carrying_a_payload_is_refused_naming_the_file_and_runs_nothing(tmp_path, payload, named, where):
    folder = cifar10(tmp_path)
    marker = tmp_path / "pwned"
    batch = pickle.loads((folder / where).read_bytes())
    batch["labels" if where != "batches.meta" else "label_names"] = payload(marker)
    data = pickle.dumps(batch)
    pickle.loads(data)  # the payload is live: plain pickle.load runs it
    assert marker.exists()
    marker.unlink()
    (folder / where).write_bytes(data)
    with pytest.raises(DataError) as e:
        load_dataset(path=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(folder / where)) and named in msg and "refused" in msg
    assert not marker.exists()


def test_a_payload_batch_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    folder = cifar10(tmp_path / "data")
    marker = tmp_path / "pwned"
    batch = pickle.loads((folder / "test_batch").read_bytes())
    batch["data"] = Touch(marker)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    p = subprocess.run([sys.executable, "-m", "lure_fast", "run", "--data", str(tmp_path / "data"), "--preset",
                        "tiny", "--loader", "memory", "--quiet", "--threads", "1", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert "test_batch: holds a pickled posix.system" in p.stderr
    assert not marker.exists()


def test_a_batch_that_is_not_a_dict_is_one_line(tmp_path):
    folder = cifar10(tmp_path)
    (folder / "data_batch_2").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=r"data_batch_2: holds a list, not a CIFAR batch"):
        load_dataset(path=str(tmp_path))
