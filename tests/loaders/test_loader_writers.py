"""``.beton`` writers: every source round-trips, files are cached by key, interrupted writes leave nothing
that is read later, and damaged files give one clear error."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lure_fast.loaders import DataError, load_dataset, make_backend

from loader_testing import HAVE_FFCV, REPO, coded_dataset, needs_ffcv

pytestmark = needs_ffcv

if HAVE_FFCV:
    from lure_fast.loaders import cache, check, write
    from lure_fast.loaders.cache import beton_for, betons_for
    from lure_fast.loaders.check import check_beton
    from lure_fast.loaders.read import read_beton
    from lure_fast.loaders.subsets import few_shot


def write_cifar_pickles(root: Path, n: int = 6, fine: bool = False) -> Path:
    """A torchvision-format CIFAR folder with ``n`` random images per file."""
    rng = np.random.default_rng(0)
    folder = root / ("cifar-100-python" if fine else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = "fine_labels" if fine else "labels"
    files = ["train", "test"] if fine else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in files:
        labels = list(rng.integers(0, 100 if fine else 10, n))
        data = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: labels}
        (folder / name).write_bytes(pickle.dumps(data))
    names = [f"c{i}" for i in range(100 if fine else 10)]
    meta = {"fine_label_names": names} if fine else {"label_names": names}
    (folder / ("meta" if fine else "batches.meta")).write_bytes(pickle.dumps(meta))
    return root


def smooth_image(rng, w: int, h: int) -> np.ndarray:
    """A random smooth RGB image (uint8 [h, w, 3]): what JPEG is made for, unlike noise."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    a, b, c = rng.uniform(-1, 1, (3, 3))
    return np.clip(128 + 100 * np.sin(a * 3 * x[..., None] + b * 3 * y[..., None] + c * 3), 0, 255).astype(np.uint8)


def write_imagefolder(root: Path, per_class: int = 3, size=(20, 16)) -> Path:
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c, ext in (("cat", ".png"), ("dog", ".jpg"), ("emu", ".jpeg")):
            (root / split / c).mkdir(parents=True)
            for k in range(per_class):
                Image.fromarray(smooth_image(rng, *size)).save(root / split / c / f"{k}{ext}")
    return root


def assert_round_trip(dataset, cache, storage="raw"):
    paths = betons_for(dataset, storage=storage, cache_dir=cache)
    for split, path in paths.items():
        want = getattr(dataset, split)
        got = read_beton(path, channels=want.images.shape[3])
        assert torch.equal(got.labels, want.labels)
        if storage == "raw":
            assert torch.equal(got.images, want.images)
        else:
            err = (got.images.float() - want.images.float()).abs()
            assert got.images.shape == want.images.shape and err.mean() < 4
    return paths


@pytest.mark.parametrize("fine", [False, True], ids=["cifar10", "cifar100"])
def test_torchvision_cifar_folders_round_trip(tmp_path, fine):
    ds = load_dataset(path=str(write_cifar_pickles(tmp_path / "data", fine=fine)))
    assert_round_trip(ds, tmp_path / "cache")


@pytest.mark.parametrize("storage", ["raw", "jpg"])
def test_imagefolder_png_and_jpeg_round_trips(tmp_path, storage):
    ds = load_dataset(path=str(write_imagefolder(tmp_path / "data")))
    assert_round_trip(ds, tmp_path / "cache", storage)


def test_embedded_digits_round_trip_with_one_channel(tmp_path):
    digits = load_dataset("digits")
    paths = assert_round_trip(digits, tmp_path)
    assert read_beton(paths["train"]).images.shape[1:] == (8, 8, 3)  # stored as RGB, read back as grey


def test_real_cifar_jpegs_round_trip_through_the_ffcv_decoder(cifar_sample, tmp_path):
    ds = load_dataset(path=str(cifar_sample))
    assert_round_trip(ds, tmp_path, "raw")
    backend = make_backend("ffcv", ds, storage="jpg", cache_dir=tmp_path)
    (x, y), = list(backend.loader("train", np.arange(len(ds.train)), batch_size=len(ds.train)).epoch(0))
    want = ds.train.images.permute(0, 3, 1, 2).float() / 255
    err = (x - want).abs()
    assert torch.equal(y, ds.train.labels) and err.mean() < 3 / 255 and err.max() < 0.5


def test_few_shot_keeps_n_per_class_seeded_and_round_trips(tmp_path):
    ds = coded_dataset(1200, 100)
    a, b, c = few_shot(ds, 30, seed=0), few_shot(ds, 30, seed=0), few_shot(ds, 30, seed=1)
    kept = a.meta["few_shot"]["indices"]
    assert np.bincount(a.train.labels.numpy(), minlength=10).tolist() == [30] * 10
    assert np.array_equal(kept, np.sort(kept)) and torch.equal(a.train.images, ds.train.images[kept])
    assert np.array_equal(kept, b.meta["few_shot"]["indices"])
    assert not np.array_equal(kept, c.meta["few_shot"]["indices"])
    assert a.test is ds.test
    assert_round_trip(a, tmp_path)
    with pytest.raises(DataError, match="has only 120 training images"):
        few_shot(ds, 121)


def test_a_cached_file_is_reused_and_keyed_by_content_and_options(tmp_path, monkeypatch):
    ds = coded_dataset(300, 60)
    path = beton_for(ds, "train", cache_dir=tmp_path)
    stamp = os.stat(path).st_mtime_ns
    monkeypatch.setattr(cache, "write_beton", lambda *a, **k: pytest.fail("rewrote a valid cached file"))
    assert beton_for(ds, "train", cache_dir=tmp_path) == path and os.stat(path).st_mtime_ns == stamp
    monkeypatch.undo()
    assert beton_for(ds, "train", storage="jpg", cache_dir=tmp_path) != path
    ds.train.images[17, 3, 3, 0] ^= 1
    assert beton_for(ds, "train", cache_dir=tmp_path) != path
    monkeypatch.setenv("LURE_FAST_BETON_CACHE", str(tmp_path / "env"))
    assert Path(beton_for(ds, "test")).parent == tmp_path / "env"


def betons_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_a_write_that_fails_midway_leaves_no_file(tmp_path, monkeypatch):
    ds = coded_dataset(600, 60)
    get = write._Samples.__getitem__

    def failing(self, i):
        if i == 350:
            raise OSError("disk on fire")
        return get(self, i)

    monkeypatch.setattr(write._Samples, "__getitem__", failing)  # forked writer processes inherit it
    with pytest.raises(DataError, match="writer process failed"):
        beton_for(ds, "train", cache_dir=tmp_path, workers=2)
    assert betons_in(tmp_path) == []
    monkeypatch.undo()
    path = beton_for(ds, "train", cache_dir=tmp_path)
    assert check_beton(path, ds.train, "raw") == 600


def test_a_failed_write_of_many_chunks_reports_and_exits(tmp_path):
    """With more chunks queued than a pipe holds, a failed write must still let the process exit."""
    child = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / 'tests' / 'loaders')!r})
        from loader_testing import coded_dataset
        from lure_fast.loaders import DataError, cache, write
        get = write._Samples.__getitem__
        def failing(self, i):
            if i == 350:
                raise OSError("disk on fire")
            return get(self, i)
        write._Samples.__getitem__ = failing
        try:
            cache.beton_for(coded_dataset(40000, 60), "train", cache_dir={str(tmp_path)!r}, workers=2)
        except DataError as e:
            print("DataError:", e)
    """)
    p = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert "DataError:" in p.stdout and "writer process failed" in p.stdout, p.stderr[-2000:]
    assert not [n for n in betons_in(tmp_path) if n.endswith(".beton")]


def test_a_killed_writer_leaves_nothing_that_is_read_later(tmp_path):
    """Kill a writing process (and its workers) mid-write: no file under the final name; the next run
    ignores and removes the temporary file and writes a complete one."""
    marker = tmp_path / "writing"
    child = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO / 'tests' / 'loaders')!r})
        from loader_testing import coded_dataset
        from lure_fast.loaders import cache, write
        get = write._Samples.__getitem__
        def slow(self, i):
            if i == 500:
                open({str(marker)!r}, "w").close()
                time.sleep(600)
            return get(self, i)
        write._Samples.__getitem__ = slow
        cache.beton_for(coded_dataset(3000, 60), "train", cache_dir={str(tmp_path)!r}, workers=2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], start_new_session=True)
    try:
        while not marker.exists():
            assert proc.poll() is None, "the writing process ended before the test could kill it"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    left = betons_in(tmp_path)
    assert left and all(n.endswith(".tmp") for n in left if n != "writing")
    ds = coded_dataset(3000, 60)
    path = beton_for(ds, "train", cache_dir=tmp_path)
    assert check_beton(path, ds.train, "raw") == 3000
    name = Path(path).name
    assert betons_in(tmp_path) == sorted([name, f"{name}.sha256", "writing"])  # the dead writer's .tmp is gone


@pytest.fixture
def good_file(tmp_path):
    ds = coded_dataset(200, 40)
    return ds, Path(beton_for(ds, "train", cache_dir=tmp_path / "cache"))


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "tail cut":
        path.write_bytes(data[:-5])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "unfinished":  # the header is written last; before that its table pointer is 0
        header = bytearray(data)
        header[16:24] = bytes(8)
        path.write_bytes(bytes(header))


@pytest.mark.parametrize("how", ["truncated", "tail cut", "empty", "garbage", "unfinished"])
def test_a_damaged_file_gives_one_clear_error_and_a_cached_one_is_rewritten(good_file, how):
    ds, path = good_file
    damage(path, how)
    with pytest.raises(DataError, match=r"not a complete \.beton file .*delete it") as err:
        check_beton(path, ds.train)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="not a complete"):
        make_backend("ffcv", ds, betons={"train": path, "test": path})
    with pytest.warns(UserWarning, match="rewriting it"):
        again = beton_for(ds, "train", cache_dir=path.parent)
    assert Path(again) == path and check_beton(path, ds.train, "raw") == 200


def flip_unsampled_pixel_byte(path: Path, n: int) -> int:
    """Flip one pixel byte of a sample that check_beton's sampled pixel checks do not read, keeping the
    file's size and times (bit rot); returns the sample."""
    from ffcv.reader import Reader

    picked = np.unique(np.r_[0, n - 1, np.random.default_rng(n).integers(0, n, size=8)])  # as _check_beton
    i = next(i for i in range(n // 2, n) if i not in picked)
    ptr = int(Reader(str(path)).metadata["f0"]["data_ptr"][i])
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(ptr + 100)
        byte = f.read(1)[0]
        f.seek(ptr + 100)
        f.write(bytes([byte ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return i


def test_damage_outside_the_sampled_pixels_is_caught_by_the_checksum(good_file, tmp_path):
    ds, path = good_file
    flip_unsampled_pixel_byte(path, len(ds.train))
    check._DIGESTS.clear()  # a later process: nothing memoised
    unlisted = tmp_path / "unlisted.beton"  # the same bytes without a checksum file
    unlisted.write_bytes(path.read_bytes())
    assert check_beton(unlisted, ds.train, "raw") == 200  # the structural and sampled checks miss it
    with pytest.raises(DataError, match=r"differ from the SHA-256 in .*\.sha256.*delete it") as err:
        check_beton(path, ds.train)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="differ from the SHA-256"):  # a file the user names
        make_backend("ffcv", ds, betons={"train": path, "test": path})
    with pytest.warns(UserWarning, match="differ from the SHA-256.*rewriting it"):  # a cached file
        assert beton_for(ds, "train", cache_dir=path.parent) == str(path)
    assert torch.equal(read_beton(path).images, ds.train.images)
    Path(f"{path}.sha256").unlink()  # cut short between the two renames, or written before checksums
    with pytest.warns(UserWarning, match="no checksum file .*rewriting it"):
        beton_for(ds, "train", cache_dir=path.parent)
    assert check_beton(path, ds.train, "raw", require_checksum=True) == 200


def test_a_process_hashes_a_file_once(good_file, monkeypatch):
    ds, path = good_file
    reads = []
    read = check._read_sha256
    monkeypatch.setattr(check, "_read_sha256", lambda p: reads.append(p) or read(p))
    for _ in range(3):  # the writer recorded the digest of the file it renamed into place
        beton_for(ds, "train", cache_dir=path.parent)
    assert reads == []
    check._DIGESTS.clear()  # another process
    for _ in range(3):
        beton_for(ds, "train", cache_dir=path.parent)
    assert reads == [path]


def test_a_file_of_other_data_is_refused(good_file, tmp_path):
    ds, path = good_file
    other = coded_dataset(200, 40)
    other.train.labels[:] = (other.train.labels + 1) % 10
    with pytest.raises(DataError, match="labels differ"):
        check_beton(path, other.train)
    with pytest.raises(DataError, match="200 samples, the dataset split holds 40"):
        check_beton(path, ds.test)
    with pytest.raises(DataError, match="cannot be read"):
        check_beton(tmp_path / "missing.beton")


def test_bad_writer_arguments_are_refused(tmp_path):
    ds = coded_dataset(20, 10)
    with pytest.raises(DataError, match="storage 'png'"):
        beton_for(ds, "train", storage="png", cache_dir=tmp_path)
    with pytest.raises(DataError, match="split 'val'"):
        beton_for(ds, "val", cache_dir=tmp_path)
    with pytest.raises(DataError, match="JPEG quality"):
        write.write_beton(ds.train, tmp_path / "x.beton", "jpg", jpeg_quality=0)
    with pytest.raises(DataError, match="no samples"):
        write.write_beton(ds.train.__class__(ds.train.images[:0], ds.train.labels[:0]), tmp_path / "y.beton")


# --------------------------------------------------------------------------- file-backed splits

def no_decoding(monkeypatch):
    """Fail the test if any split is decoded into memory (the streaming path must never do it)."""
    from lure_fast.loaders import sources

    monkeypatch.setattr(sources, "decode_samples", lambda *a, **k: pytest.fail("decoded the split into memory"))


def test_a_file_backed_split_streams_into_the_file_its_decoded_pixels_make(tmp_path, monkeypatch):
    from lure_fast.loaders import Dataset, Split

    root = write_imagefolder(tmp_path / "data", per_class=70)  # 210 files: several writer chunks
    decoded = load_dataset(path=str(root))
    decoded = Dataset(decoded.name, decoded.layout, Split(decoded.train.images, decoded.train.labels),
                      decoded.test, decoded.classes, decoded.source)
    from_memory = read_beton(beton_for(decoded, "train", cache_dir=tmp_path / "memory"))
    lazy = load_dataset(path=str(root))
    no_decoding(monkeypatch)
    streamed = read_beton(beton_for(lazy, "train", cache_dir=tmp_path / "files"))
    assert len(streamed.labels) == 210 and torch.equal(streamed.labels, from_memory.labels)
    for i in range(210):
        assert torch.equal(streamed.images[i], from_memory.images[i]), i


def test_unreadable_files_are_left_out_of_the_streamed_file_and_counted_as_in_memory(tmp_path, monkeypatch):
    root = write_imagefolder(tmp_path / "data", per_class=4)
    (root / "train" / "cat" / "1.png").write_bytes(b"not an image")
    (root / "train" / "dog" / "9.jpg").symlink_to(tmp_path / "gone.jpg")  # dangling: listed, unreadable
    memory = load_dataset(path=str(root))
    with pytest.warns(UserWarning, match="skipped 2 unreadable image.*first .*cat/1.png"):
        memory.train.images
    lazy = load_dataset(path=str(root))
    with monkeypatch.context() as m:
        no_decoding(m)
        with pytest.warns(UserWarning, match="skipped 2 unreadable image.*first .*cat/1.png"):
            path = beton_for(lazy, "train", cache_dir=tmp_path / "cache")
        assert lazy.train.skipped == memory.train.skipped == 2 and len(lazy.train) == len(memory.train) == 11
        got = read_beton(path)
        assert torch.equal(got.labels, memory.train.labels) and torch.equal(got.images, memory.train.images)
        # a later run reads the list of unreadable files beside the file: no decoding, no rewrite
        m.setattr(cache, "write_beton", lambda *a, **k: pytest.fail("rewrote a valid cached file"))
        again = load_dataset(path=str(root))
        with pytest.warns(UserWarning, match="skipped 2 unreadable image"):
            assert beton_for(again, "train", cache_dir=tmp_path / "cache") == path
        assert again.train.skipped == 2 and torch.equal(again.train.labels, memory.train.labels)


def test_beton_stats_are_exact_equal_the_in_memory_ones_and_are_cached(tmp_path, monkeypatch):
    from lure_fast.loaders.stats import channel_stats

    ds = coded_dataset(300, 10)
    path = beton_for(ds, "train", cache_dir=tmp_path)
    mean, std = cache.beton_stats(path)
    x = ds.train.images.double() / 255  # float64 reference
    assert np.allclose(mean, x.mean(dim=(0, 1, 2)).numpy(), rtol=0, atol=1e-13)
    assert np.allclose(std, x.std(dim=(0, 1, 2)).numpy(), rtol=0, atol=1e-13)
    assert (mean, std) == channel_stats(ds.train.images)  # bit for bit
    monkeypatch.setattr(cache, "beton_histogram", lambda *a, **k: pytest.fail("counted the pixels again"))
    assert cache.beton_stats(path) == (mean, std)
    assert make_backend("ffcv", ds, cache_dir=tmp_path).channel_stats() == (mean, std)


def test_few_shot_of_a_file_backed_split_is_a_shorter_file_list(tmp_path, monkeypatch):
    from lure_fast.loaders.sources import FileSplit

    root = write_imagefolder(tmp_path / "data", per_class=4)
    memory = few_shot(load_dataset(path=str(root)), 2, seed=3)
    lazy = load_dataset(path=str(root))
    beton_for(lazy, "train", cache_dir=tmp_path)  # knows its readable files now, without decoding them
    no_decoding(monkeypatch)
    small = few_shot(lazy, 2, seed=3)
    assert isinstance(small.train, FileSplit) and len(small.train.samples) == 6
    got = read_beton(beton_for(small, "train", cache_dir=tmp_path))
    assert torch.equal(got.images, memory.train.images) and torch.equal(got.labels, memory.train.labels)
