"""Datasets to mega-batch-ready batches. Knows nothing about LURE: it reads datasets (``sources``), and serves
batches of any index set through one interface (``base``) from several backends (``backends/``).

The ``ffcv`` backend reads ``.beton`` files, and each stage of a file has its module: ``fields`` (what a file
holds), ``cache`` (which file holds a split: keys, reuse), ``write``, ``check``, ``read``, ``stats`` (pixel
statistics, from memory or a file); ``ffcv_adapter`` holds every use of FFCV's internals.
"""
from .base import Backend, EpochLoader, epoch_generator
from .cache import beton_for, betons_for
from .check import check_beton
from .errors import DataError
from .ffcv_adapter import require_ffcv
from .restricted_imagenet import read_restricted_imagenet
from .sources import LAYOUTS, Dataset, FileSplit, Split, SplitLike, detect_layout, load_dataset
from .subsets import few_shot

BACKENDS = ("memory", "torch", "ffcv")


def make_backend(name: str, dataset: Dataset, device="cpu", channels_last: bool = False, **options) -> Backend:
    """Build the backend ``name`` ('memory', 'torch' or 'ffcv') over ``dataset``. Once built, the lengths of
    the dataset's splits are final (a file-backed split knows which of its files are readable)."""
    if name == "memory":
        from .backends.memory import MemoryBackend
        return MemoryBackend(dataset, device, channels_last)
    if name == "torch":
        from .backends.torch import TorchBackend
        return TorchBackend(dataset, device, channels_last, **options)
    if name == "ffcv":
        from .backends.ffcv import FFCVBackend
        return FFCVBackend(dataset, device, channels_last, **options)
    raise DataError(f"--loader {name}: unknown; choose one of {', '.join(BACKENDS)}")


__all__ = ["Backend", "EpochLoader", "DataError", "Dataset", "Split", "FileSplit", "SplitLike", "LAYOUTS",
           "BACKENDS", "detect_layout", "load_dataset", "make_backend", "epoch_generator", "require_ffcv",
           "read_restricted_imagenet", "few_shot", "beton_for", "betons_for", "check_beton"]
