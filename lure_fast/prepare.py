"""Setting a run up: the device, the data, the loader backend, the stream of mega-batches, the model
and the four loaders the loop reads (train, validation, test, the importance subset pi)."""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from . import config as C
from .label_noise import with_label_noise
from .methods import derive_seed, seeded
from .models import CIFAR10_MEAN, CIFAR10_STD, build_model, min_image_size
from .stream import MegaBatch, Stream, few_shot_indices, make_stream

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


@dataclass
class Setup:
    dataset: object           # lure_fast.loaders.Dataset
    loader_name: str          # the backend serving it
    stream: Stream
    model: torch.nn.Module
    init_state: list | None   # the initial weights, kept for cold start
    train: object             # EpochLoaders over the current mega-batch's index sets
    val: object
    test: object
    importance: object
    clean: object             # un-augmented passes over training images (the gap's train accuracy)
    label_noise: dict | None = None  # --label-noise: rate, seed, labels changed (label_noise.py)

    def point_at(self, mb: MegaBatch) -> None:
        """Point the train, validation and importance loaders at mega-batch ``mb``'s samples."""
        self.train.set_indices(mb.train)
        self.val.set_indices(mb.val)
        self.importance.set_indices(mb.importance)

    def point_importance_at_next(self, mb: MegaBatch) -> None:
        """``--importance-data code``: pi is the first 128 images of the next mega-batch's training list
        (replay included, so under full replay those of M_1), as the authors' code takes them."""
        self.importance.set_indices(self.stream.megabatches[mb.index].train[:128])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise C.ConfigError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return torch.device(name)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse rather than return it to the operating system:
    no mmap for large blocks, no trimming of the heap. A CPU step allocates and frees activations of tens
    to hundreds of MB every batch; by default each comes from a fresh mmap, whose pages fault in anew
    (millions of page faults, a third of a run's time in the kernel). Returns whether the setting took;
    a no-op elsewhere (macOS, musl)."""
    import ctypes
    import ctypes.util
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


def prepare(cfg: C.RunConfig, device: torch.device, notes: bool = True) -> Setup:
    """Load the data, choose and build the loader backend, cut the stream, build the model."""
    from .loaders import load_dataset, make_backend
    if device.type == "cpu":
        keep_freed_memory()
    dataset = load_dataset(cfg.dataset, cfg.data, cfg.image_size)  # image files stay on disk until decoded
    clean = dataset.train  # --shots picks its images by their true classes, before any label noise
    dataset, noise = with_label_noise(dataset, cfg.label_noise, cfg.seed)  # train and validation only
    loader_name, note = choose_loader(cfg, dataset, device)
    if note and notes:
        print(f"lure-fast: note: {note}", file=sys.stderr)
    # a stream the listed files cannot fill fails now, not after a long .beton write (unreadable files,
    # found by decoding, can only make the training set smaller)
    build_stream(cfg, dataset, dataset.train.listed, listed_labels(clean) if cfg.shots is not None else None)
    # channels-last on CUDA only: on the CPU (torch 2.14.1, AVX512-BF16), bf16 autocast over a channels-last
    # ResNet corrupts the heap in backward for some batch sizes (13 or 5 images, say); NCHW bf16 does not
    channels_last = device.type == "cuda"
    backend = make_backend(loader_name, dataset, device, channels_last)  # ffcv: the .beton files, written once
    stream = build_stream(cfg, dataset, labels=true_labels(clean, dataset.train) if cfg.shots is not None else None)
    mean, std = data_stats(dataset, backend)
    c, h, w = dataset.image_shape
    need = min_image_size(cfg.arch, cfg.vgg)
    if min(h, w) < need:
        raise C.ConfigError(f"--arch {cfg.arch}: needs images of at least {need}x{need}, but the data's are {h}x{w}; "
                            "pass larger images (--image-size for an ImageFolder) or another --arch")
    with seeded(derive_seed(cfg.seed, 0), torch.device("cpu")):  # the same initial weights on any device
        model = build_model(cfg.arch, dataset.num_classes, c, cfg.width, cfg.stem, mean, std, cfg.vgg)
    init_state = [t.clone().to(device) for t in model.state_dict().values()] if cfg.method == "cold" else None
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    first = stream[0]
    # the authors' validation and SNIP images are subsets of their training set, so they go through its
    # augmentation: none when training has none (--no-augment)
    val_aug = cfg.val_augment and cfg.augment
    val = backend.loader("train", first.val, cfg.eval_batch_size, augment=val_aug, seed=cfg.seed)
    return Setup(dataset, loader_name, stream, model, init_state,
                 train=backend.loader("train", first.train, cfg.batch_size, augment=cfg.augment, shuffle=True,
                                      seed=cfg.seed),
                 val=val,
                 test=backend.loader("test", np.arange(len(dataset.test)), cfg.eval_batch_size, seed=cfg.seed),
                 importance=backend.loader("train", first.importance, cfg.importance_batch_size,
                                           augment=cfg.importance_data == "code" and cfg.augment, seed=cfg.seed),
                 clean=backend.loader("train", first.train, cfg.eval_batch_size, seed=cfg.seed)
                 if val_aug else val, label_noise=noise)


def choose_loader(cfg, dataset, device: torch.device) -> tuple[str, str | None]:
    """The backend ``--loader`` names, resolving ``auto``: ``memory`` for the embedded data and on a GPU
    that holds the decoded dataset in a quarter of its memory (GPU-side augmentation, no host work); else
    ``ffcv`` (the streaming backend for data read from disk), or ``memory`` when FFCV is not installed.
    Returns the name and, when auto had to fall back, a one-line note."""
    if cfg.loader != "auto":
        return cfg.loader, None
    if cfg.data is None and cfg.dataset in (None, "digits"):  # the embedded data: tiny
        return "memory", None
    nbytes = dataset.train.nbytes + dataset.test.nbytes  # of a file list: count x first image, nothing decoded
    if device.type == "cuda" and nbytes <= torch.cuda.get_device_properties(device).total_memory // 4:
        return "memory", None
    try:
        from .loaders import require_ffcv
        require_ffcv()
    except Exception:
        return "memory", ("--loader auto: FFCV is not installed here, so the data is held in memory "
                          "(scripts/install_ffcv.sh installs it)")
    return "ffcv", None


def build_stream(cfg, dataset, n: int | None = None, labels: np.ndarray | None = None) -> Stream:
    """The mega-batches over ``dataset``'s training split (of ``n`` samples: by default its length); with
    ``--shots``, over the images it keeps, chosen by ``labels`` (by default the split's own, one per sample;
    the split sizes are known once unreadable files are)."""
    keep = None
    if cfg.shots is not None:
        labels = dataset.train.labels.numpy() if labels is None else labels
        keep = few_shot_indices(labels, cfg.shots, cfg.shots_draw, cfg.seed)
        n = len(keep)
    n = len(dataset.train) if n is None else n
    size = cfg.megabatch_size or n // cfg.megabatches
    if keep is not None and cfg.megabatches * size > n:
        raise C.ConfigError(f"--shots {cfg.shots} keeps {n} training images ({cfg.shots} per class, fewer where a "
                            f"class has fewer), but --megabatches {cfg.megabatches} x --megabatch-size {size} needs "
                            f"{cfg.megabatches * size}; raise --shots, or lower --megabatches or --megabatch-size")
    try:
        return make_stream(n, cfg.megabatches, size, cfg.replay, cfg.buffer_size,
                           cfg.importance_fraction, cfg.seed, cfg.shuffled(dataset.layout), cfg.val_pool,
                           cfg.buffer_draws, keep)
    except ValueError as e:
        raise C.ConfigError(str(e)) from None


def listed_labels(split) -> np.ndarray:
    """The labels of every listed training sample, readable or not, without decoding an image."""
    samples = getattr(split, "samples", None)  # a file list (loaders.sources.FileSplit)
    if samples is not None:
        return np.array([label for _, label in samples], dtype=np.int64)
    return split.labels.numpy()


def true_labels(clean, served) -> np.ndarray:
    """The labels before ``--label-noise`` (of ``clean``) at the positions of the split the run serves
    (``served``: its readable images), so that --shots keeps the same images with and without noise."""
    if clean is served:  # no label noise
        return served.labels.numpy()
    if len(served) == clean.listed:  # every listed image readable: the positions are the listed ones
        return listed_labels(clean)
    return clean.labels.numpy()  # unreadable files and label noise: decoding the clean list aligns them (rare)


def data_stats(dataset, backend) -> tuple[tuple, tuple]:
    """Normalisation constants: the usual ones for CIFAR, else computed from the training images, exactly
    (so the ffcv backend, counting from its .beton, gives the memory backend's numbers), to 4 decimals."""
    if dataset.name == "cifar10":
        return CIFAR10_MEAN, CIFAR10_STD
    if dataset.name == "cifar100":
        return CIFAR100_MEAN, CIFAR100_STD
    mean, std = backend.channel_stats("train")
    return tuple(round(v, 4) for v in mean), tuple(round(max(v, 1e-3), 4) for v in std)
