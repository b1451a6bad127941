"""The GPU session kit without a GPU: the compressed repack of the packed CIFAR-10 copy gives back the same
files, byte for byte. Nothing is timed."""
import importlib.util
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lf_helpers import REPO, SHARED


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


repack_npz = _load("lure_fast_repack_npz", REPO / "scripts" / "repack_npz.py")


def pack_tool():
    """``pack_imagefolder.py`` from ../shared (or a .carry/ filled by gpu_bundle.sh); skips without one."""
    for path in (SHARED / "tools" / "pack_imagefolder.py", REPO / ".carry" / "pack_imagefolder.py"):
        if path.is_file():
            return _load("lure_fast_pack_imagefolder", path)
    pytest.skip("pack_imagefolder.py not found (../shared/tools is absent)")


def tiny_imagefolder(root: Path) -> dict[str, bytes]:
    """train/ and test/ with two classes of small JPEG and PNG files; returns relative path -> bytes."""
    rng = np.random.default_rng(0)
    files = {}
    for split, per_class in (("train", 3), ("test", 2)):
        for c in ("cat", "dog"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                fmt = "PNG" if i == 0 else "JPEG"
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, fmt)
                name = f"{c}{i}.{'png' if fmt == 'PNG' else 'jpg'}"
                (folder / name).write_bytes(buf.getvalue())
                files[f"{split}/{c}/{name}"] = buf.getvalue()
    return files


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- repack_npz.py


def test_repacked_npz_unpacks_to_the_same_files(tmp_path):
    tool = pack_tool()
    original = tiny_imagefolder(tmp_path / "tree")
    tool.pack(str(tmp_path / "tree"), str(tmp_path / "packed.npz"))
    sizes = repack_npz.repack(str(tmp_path / "packed.npz"), str(tmp_path / "repacked.npz"))
    assert sizes["dst_bytes"] == (tmp_path / "repacked.npz").stat().st_size
    with zipfile.ZipFile(tmp_path / "repacked.npz") as z:  # really compressed, every member
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
    assert repack_npz.differences(str(tmp_path / "packed.npz"), str(tmp_path / "repacked.npz")) == []
    tool.unpack(str(tmp_path / "repacked.npz"), str(tmp_path / "unpacked"))
    assert tree_bytes(tmp_path / "unpacked") == original


def save(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_differences_names_every_kind_of_mismatch(tmp_path):
    base = {"bytes": np.arange(10, dtype=np.uint8), "labels": np.array([0, 1], dtype=np.int16),
            "names": np.array([b"a.jpg", b"b.jpg"]), "classes": np.array(["cat", "dog"])}
    a = save(tmp_path / "a.npz", **base)
    assert repack_npz.differences(a, save(tmp_path / "same.npz", **base)) == []
    changed = {**base, "bytes": np.r_[np.arange(9, dtype=np.uint8), np.uint8(99)]}
    assert repack_npz.differences(a, save(tmp_path / "v.npz", **changed)) == ["bytes: values differ (1 of 10 elements)"]
    retyped = {**base, "labels": base["labels"].astype(np.int64)}
    assert repack_npz.differences(a, save(tmp_path / "t.npz", **retyped)) == ["labels: dtype int16 != int64"]
    reshaped = {**base, "bytes": base["bytes"].reshape(2, 5)}
    assert repack_npz.differences(a, save(tmp_path / "s.npz", **reshaped)) == ["bytes: shape (10,) != (2, 5)"]
    fewer = {k: v for k, v in base.items() if k != "names"}
    assert repack_npz.differences(a, save(tmp_path / "m.npz", **fewer)) == [f"names: only in {a}"]


def test_repack_refuses_a_copy_that_differs(tmp_path, monkeypatch, capsys):
    src = save(tmp_path / "src.npz", bytes=np.arange(100, dtype=np.uint8), labels=np.zeros(3, dtype=np.int16))
    dst = tmp_path / "dst.npz"

    def corrupting(s, d):  # a writer that loses a byte's value
        np.savez_compressed(d, bytes=np.r_[np.arange(99, dtype=np.uint8), np.uint8(7)],
                            labels=np.zeros(3, dtype=np.int16))

    monkeypatch.setattr(repack_npz, "write_compressed", corrupting)
    with pytest.raises(repack_npz.RepackError, match="bytes: values differ"):
        repack_npz.repack(src, str(dst))
    assert not dst.exists()  # a wrong copy is never left behind
    assert repack_npz.main([src, str(dst)]) == 1
    assert "bytes: values differ" in capsys.readouterr().err and not dst.exists()


def test_repack_main_writes_a_checked_copy(tmp_path, capsys):
    src = save(tmp_path / "src.npz", bytes=np.zeros(1000, dtype=np.uint8), classes=np.array(["a", "b"]))
    assert repack_npz.main([src, str(tmp_path / "dst.npz")]) == 0
    assert "every array checked equal" in capsys.readouterr().out
    assert (tmp_path / "dst.npz").stat().st_size < Path(src).stat().st_size
    assert repack_npz.main([src, src]) == 1  # never over its own source
    assert repack_npz.main([src]) == 2


# ----------------------------------------------------------------------------- the shell scripts


def test_bundle_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu_bundle.sh")], check=True)
