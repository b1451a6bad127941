"""Helpers shared by the tests (a module of its own: each test folder has its own conftest)."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
CIFAR_JPEG = (Path(os.environ["LURE_FAST_CIFAR"]) if os.environ.get("LURE_FAST_CIFAR")  # e.g. on the GPU machine
              else SHARED / "data" / "cifar10-jpeg")


def run_cli(*args: str, env: dict | None = None, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """Run ``python -m lure_fast ARGS`` in a fresh process; returns the completed process."""
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "lure_fast", *args], capture_output=True, text=True,
                          env=e, cwd=cwd, timeout=timeout)


# pickled payloads that would create a file when unpickled: what a crafted checkpoint or dataset can do
class Touch:
    """Unpickling this runs ``os.system('touch PATH')``: what a crafted checkpoint or dataset file can do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch '{self.path}'",)


class OpenForWriting:
    """Unpickling this calls ``open(PATH, 'w')``, which creates the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")
