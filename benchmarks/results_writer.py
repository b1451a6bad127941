"""The one writer of benchmark results: ``benchmarks/results/<benchmark>-<device slug>.json`` (the measurements)
and the ``.md`` beside it (their tables), so every benchmark names and writes its files the same way.

A benchmark imports it as ``results_writer`` (benchmarks/ is on ``sys.path`` when pytest collects a
benchmark; a benchmark loaded by file path puts it there itself).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_slug(name: str) -> str:
    """A device's name as a file-name part: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (a slug stays
    itself: 'cpu-2core')."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def results_path(benchmark: str, device: str, out_dir: str | Path = RESULTS_DIR) -> Path:
    """``<out_dir>/<benchmark>-<device slug>.json``: where :func:`write` puts ``benchmark``'s results on ``device``."""
    return Path(out_dir) / f"{benchmark}-{device_slug(device)}.json"


def write(benchmark: str, device: str, doc: dict, markdown: Sequence[str], out_dir: str | Path = RESULTS_DIR) -> Path:
    """Write ``doc`` as indented JSON and the ``markdown`` lines (joined, newline-terminated) beside it, at
    :func:`results_path`; returns the JSON's path. A benchmark calls it after every measurement, so a run
    stopped part-way keeps what it measured."""
    path = results_path(benchmark, device, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    path.with_suffix(".md").write_text("\n".join(markdown) + "\n")
    return path
