"""Collect the ``bench_*.py`` files when pytest is given this folder (``make bench``): pytest's own
file patterns (``test_*.py``) would find nothing here. A file named on the command line is collected
by pytest itself."""
import pytest


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
