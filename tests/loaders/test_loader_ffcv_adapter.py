"""FFCV's internals are used in one module, ``loaders/ffcv_adapter.py``, written against one FFCV release."""
from __future__ import annotations

import importlib.metadata
import re

import pytest

from lure_fast.loaders import ffcv_adapter

from loader_testing import REPO, needs_ffcv


@needs_ffcv
def test_the_installed_ffcv_is_the_release_the_adapter_was_written_for():
    installed = importlib.metadata.version("ffcv")  # ffcv.__version__ is stale (1.0.2 says 0.0.3rc1)
    if installed != ffcv_adapter.FFCV_VERSION:
        pytest.fail(f"ffcv {installed} is installed, but loaders/ffcv_adapter.py was written for ffcv "
                    f"{ffcv_adapter.FFCV_VERSION}: check each use of FFCV's internals its docstring lists against "
                    f"ffcv {installed}'s source, then set FFCV_VERSION there and in scripts/install_ffcv.sh",
                    pytrace=False)


def test_the_install_script_installs_the_release_the_adapter_was_written_for():
    pinned = re.search(r'^FFCV_VERSION="([^"]+)"', (REPO / "scripts" / "install_ffcv.sh").read_text(), re.M)
    assert pinned and pinned.group(1) == ffcv_adapter.FFCV_VERSION, (
        f"scripts/install_ffcv.sh installs ffcv {pinned and pinned.group(1)} but loaders/ffcv_adapter.py was "
        f"written for {ffcv_adapter.FFCV_VERSION}; make them agree")


def test_without_ffcv_the_error_names_the_system_libraries_and_every_way_to_install(monkeypatch):
    import sys

    import pytest

    from lure_fast.loaders import DataError, require_ffcv
    monkeypatch.setitem(sys.modules, "ffcv", None)  # `import ffcv` now raises ImportError
    with pytest.raises(DataError) as e:
        require_ffcv()
    msg = str(e.value)
    assert "\n" not in msg and "does not import here" in msg
    for needle in ("libopencv-dev", "libturbojpeg0-dev", "make ffcv", "lure-fast[ffcv]", "--loader memory or torch"):
        assert needle in msg, needle
