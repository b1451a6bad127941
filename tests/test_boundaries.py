"""The rooms stay apart: ``kernels/`` imports nothing of the project, ``loaders/`` nothing of
``lure_fast`` outside itself, so either can be taken alone (docs/architecture.md)."""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported_modules(folder: pathlib.Path, package: str):
    """(file, absolute module name) of every import in ``folder``'s Python files; relative imports are
    resolved against ``package`` (the folder's installed name)."""
    for path in sorted(folder.rglob("*.py")):
        parts = package.split(".") + list(path.relative_to(folder).with_suffix("").parts)
        here = parts[:-1]  # the package a relative import starts from
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    yield path, a.name
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module
                yield path, mod
                for a in node.names:  # `from . import x` may name a module
                    yield path, f"{mod}.{a.name}"


@pytest.mark.parametrize("folder,package", [("kernels", "lure_fast.kernels"), ("loaders", "lure_fast.loaders")])
def test_a_room_imports_nothing_of_the_project_outside_itself(folder, package):
    bad = [f"{p.relative_to(ROOT)}: {m}" for p, m in imported_modules(ROOT / folder, package)
           if (m == "lure_fast" or m.startswith("lure_fast.")) and not (m == package or m.startswith(package + "."))]
    assert not bad, "imports across a room's wall:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", ["lure_fast.kernels", "lure_fast.loaders"])
def test_importing_a_room_loads_no_other_part_of_the_project(package):
    code = (f"import sys, {package}; print(sorted(m for m in sys.modules if m.startswith('lure_fast') "
            f"and m != 'lure_fast' and not m.startswith('{package}')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_walls_are_seen():
    """The scan itself resolves relative imports that leave the room (so the tests above can fail)."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        room = pathlib.Path(d)
        (room / "a.py").write_text("from .. import methods\nfrom ..config import RunConfig\nimport lure_fast.run\n")
        found = {m for _, m in imported_modules(room, "lure_fast.kernels")}
    assert {"lure_fast.methods", "lure_fast.config", "lure_fast.run"} <= found
