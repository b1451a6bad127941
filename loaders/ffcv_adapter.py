"""Every use of FFCV beyond its public API, in one place, written against ``FFCV_VERSION``.

  writing          ``DatasetWriter._write_common``: its worker loop, replaced by one that notices a dead
                   writer process (FFCV's waits for the sample count forever) and always frees the shared
                   metadata block; it reads the writer's ``prepare``/``finalize``, ``metadata_sm``,
                   ``metadata_type``, ``fields``, ``data_region_start`` and ``page_size``;
  traversal order  ``Loader.traversal_order``, ``Loader.indices``, ``TraversalOrder.indices`` and
                   ``Loader.first_traversal_order``: a compiled loader is pointed at each epoch's planned
                   order (FFCV copies the order at construction and sizes ``len()`` from the first one);
                   ``traversal_order.quasi_random.generate_order_inner``: FFCV's page-local order;
  epoch iterator   ``EpochIterator.output_queue``, ``terminate_event``, ``cuda_streams``, ``current_stream``
                   and ``epoch_iterator.IS_CUDA``: batches are taken with a timeout, so a dead pipeline thread
                   ends the epoch with an error instead of a hang.

Nothing here imports FFCV until it is called. tests/loaders/test_loader_ffcv_adapter.py fails on any other
installed FFCV version: check each use above against that version's source, then move the pin here and in
scripts/install_ffcv.sh.
"""
from __future__ import annotations

import ctypes
import queue
from functools import cache

import numpy as np
import torch

from .errors import DataError

FFCV_VERSION = "1.0.2"  # ffcv.__version__ says 0.0.3rc1 in this release: the package metadata is the version
INSTALL_HINT = ("FFCV compiles against OpenCV and libjpeg-turbo: install them (Debian/Ubuntu: apt-get install "
                "pkg-config g++ libopencv-dev libturbojpeg0-dev; macOS: brew install pkg-config opencv jpeg-turbo), "
                "then make ffcv, scripts/install_ffcv.sh PYTHON or pip install 'lure-fast[ffcv]' (docs/setup.md); "
                "or use --loader memory or torch")


def require_ffcv():
    """Import ffcv or raise one :class:`DataError` line saying how to install it."""
    threads = torch.get_num_threads()
    try:
        import ffcv  # noqa: F401
        import ffcv.writer  # noqa: F401
    except Exception as e:  # ImportError, or a broken native extension (OSError)
        raise DataError(f"the ffcv backend needs the ffcv package, which does not import here "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); {INSTALL_HINT}") from None
    finally:
        torch.set_num_threads(threads)  # importing ffcv sets torch's intra-op threads to 1 for the whole process
    return ffcv


# --------------------------------------------------------------------------- writing

def write_indexed(path: str, fields: dict, samples, workers: int, chunksize: int = 100) -> None:
    """``DatasetWriter(path, fields, num_workers=workers).from_indexed_dataset(samples, chunksize)``, except
    that a writer process that dies raises one :class:`DataError` line instead of hanging."""
    _writer_class()(path, fields, num_workers=workers).from_indexed_dataset(samples, chunksize=chunksize)


@cache
def _writer_class():
    from multiprocessing import Process, Queue, Value

    from ffcv.memory_allocator import MemoryAllocator
    from ffcv.writer import DatasetWriter

    class Writer(DatasetWriter):
        def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):
            self.num_samples = num_samples
            self.prepare()
            processes = []
            todo, results = Queue(), Queue()
            try:
                for chunk in queue_content:
                    todo.put(chunk)
                for _ in range(self.num_workers):
                    todo.put(None)
                allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
                args = (todo, self.metadata_sm, self.metadata_type, self.fields, allocator,
                        Value(ctypes.c_uint64, 0), results, *extra_worker_args)
                processes = [Process(target=work_fn, args=args, daemon=True) for _ in range(self.num_workers)]
                for p in processes:
                    p.start()
                allocations, pending = [], len(processes)
                while pending:  # every worker sends its allocation list once, when it has written all its pages
                    try:
                        allocations.extend(results.get(timeout=0.2))
                        pending -= 1
                    except queue.Empty:
                        dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                        if dead:
                            raise DataError(f"{self.fname}: a writer process failed (exit code {dead[0]}) while "
                                            "writing the .beton; see the error above, fix it and run again") from None
                for p in processes:
                    p.join()
                self.finalize(allocations)
            finally:
                for p in processes:
                    if p.is_alive():
                        p.terminate()
                        p.join()
                # chunks nobody will read: don't let the queue's feeder thread block interpreter exit
                todo.cancel_join_thread()
                todo.close()
                self.metadata_sm.close()
                self.metadata_sm.unlink()

    return Writer


# --------------------------------------------------------------------------- traversal order

def serve_planned_orders(loader) -> None:
    """Make the FFCV ``loader`` serve, every epoch, the order last given to :func:`plan_order`."""
    loader.traversal_order = _planned_order_class()(loader)


def plan_order(loader, order: np.ndarray) -> None:
    """The order (int64 sample ids) the next epoch of ``loader`` (set up by :func:`serve_planned_orders`) serves."""
    loader.traversal_order.planned = order
    loader.indices = loader.traversal_order.indices = order
    loader.first_traversal_order = order  # FFCV sizes len() and the epoch's slice from this


@cache
def _planned_order_class():
    from ffcv.traversal_order.base import TraversalOrder

    class PlannedOrder(TraversalOrder):
        """Serves the sample order planned for the coming epoch; FFCV only iterates it."""

        def __init__(self, loader):
            super().__init__(loader)
            self.planned = np.zeros(0, dtype=np.int64)

        def sample_order(self, epoch: int) -> np.ndarray:
            return self.planned

    return PlannedOrder


def quasi_random_fill(seed: int, table: np.ndarray, counts: np.ndarray, result: np.ndarray, window: int) -> None:
    """FFCV's quasi-random order: fills ``result`` from the samples of ``table`` (one row per page, ``counts``
    samples each), drawing from a window of ``window`` open pages; seeded by ``seed``."""
    from ffcv.traversal_order.quasi_random import generate_order_inner

    generate_order_inner(seed, table, counts, result, window)


# --------------------------------------------------------------------------- epoch iterator

def epoch_batches(iterator):
    """FFCV's ``EpochIterator.__next__``, except that a pipeline thread that died (an exception in an
    operation) ends the epoch with an error instead of leaving the caller waiting forever."""
    from ffcv.loader.epoch_iterator import IS_CUDA

    while True:
        try:
            item = iterator.output_queue.get(timeout=0.5)
        except queue.Empty:
            if iterator.is_alive():
                continue
            try:  # it may have queued its last batches and exited between the two checks
                item = iterator.output_queue.get_nowait()
            except queue.Empty:
                raise RuntimeError("the FFCV pipeline thread died (its traceback is printed above)") from None
        if item is None:
            iterator.close()
            return
        slot, result = item
        if IS_CUDA:
            iterator.current_stream.wait_stream(iterator.cuda_streams[slot])
        yield result


def stop_epoch(iterator) -> None:
    """End an FFCV epoch iterator and wait for its thread, so no two iterators of one loader overlap."""
    iterator.terminate_event.set()
    while iterator.is_alive():
        try:
            iterator.output_queue.get_nowait()  # a finished thread may block on putting its end marker
        except queue.Empty:
            pass
        iterator.join(0.02)
