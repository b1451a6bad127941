#!/usr/bin/env bash
# Set up lure-fast in a virtual environment: bash scripts/setup.sh [VENV]   (default .venv)
#
# Installs requirements/lock.txt (exact versions and hashes for every supported platform, written by
# `make lock`) with plain pip, lure-fast itself on top with --no-deps, checks that every locked
# package is at its locked version, then builds FFCV (scripts/install_ffcv.sh; optional).
# Safe to run again: an existing environment is brought to the lock in place. docs/setup.md has more.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
LOCK=requirements/lock.txt

if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: $PYTHON not found; install Python 3.10 or newer, or set PYTHON=/path/to/python3" >&2; exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup: $("$PYTHON" --version) is too old; lure-fast needs Python 3.10 or newer (set PYTHON=...)" >&2; exit 1
fi
if [ ! -f "$LOCK" ]; then
  echo "setup: $LOCK is missing; restore it (git checkout $LOCK) or write it with make lock" >&2; exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV" || { echo "setup: could not create $VENV; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
fi
# the venv's own pip is enough for a lock with markers and hashes (pip >= 21.3 for the editable install)
if ! "$VENV/bin/python" -c 'import sys, pip; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (21, 3))'; then
  "$VENV/bin/python" -m pip install -q "pip>=21.3"
fi

# torch, torchvision and triton are the registry's standard builds: they run on a CPU as well.
# --no-deps: the lock is already the whole closure, and imagecorruptions (its frost textures only) declares
# opencv-python and scikit-image, which the lock replaces with opencv-python-headless (pyproject's [tool.uv])
"$VENV/bin/python" -m pip install -q --no-deps -r "$LOCK"
# lure-fast itself, with the locked setuptools as its build backend (nothing fetched)
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .

# Every package of the lock that applies here at its locked version, and every requirement that
# pyproject.toml states (with the test and ffcv extras) met: a lock older than pyproject fails here
"$VENV/bin/python" - "$LOCK" <<'EOF'
import importlib.metadata as md, re, sys
try:
    from packaging.markers import Marker
    from packaging.requirements import Requirement
except ImportError:  # packaging comes with the lock (pytest); pip vendors a copy
    from pip._vendor.packaging.markers import Marker
    from pip._vendor.packaging.requirements import Requirement

def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()

locked, wrong = {}, []
for line in open(sys.argv[1]):
    m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
    if not m or (m.group(3) and not Marker(m.group(3)).evaluate()):
        continue
    name, version = m.group(1), m.group(2)
    locked[canon(name)] = version
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have != version:
        wrong.append(f"{name} {have or 'missing'} (lock: {version})")
stale = []
for text in md.requires("lure-fast") or []:
    req = Requirement(text)
    if canon(req.name) == "ffcv":
        continue  # built by scripts/install_ffcv.sh
    if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ("", "test", "ffcv")):
        continue
    if canon(req.name) not in locked or not req.specifier.contains(locked[canon(req.name)], prereleases=True):
        stale.append(f"{req} (lock: {locked.get(canon(req.name), 'absent')})")
if wrong:
    print("setup: installed versions differ from the lock: " + "; ".join(wrong), file=sys.stderr)
if stale:
    print("setup: requirements/lock.txt does not meet pyproject.toml: " + "; ".join(stale)
          + "; refresh the lock with make lock (docs/setup.md)", file=sys.stderr)
if wrong or stale:
    sys.exit(1)
print(f"setup: {len(locked)} packages at the versions of requirements/lock.txt")
EOF

# FFCV (the --loader ffcv backend) compiles against OpenCV and libjpeg-turbo; optional
if ! bash scripts/install_ffcv.sh "$VENV/bin/python"; then
  echo "setup: FFCV is not installed (see the message above); everything else works, and --loader memory" \
       "or torch serve instead of --loader ffcv. After installing the system packages: make ffcv" >&2
fi
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import lure_fast.kernels, lure_fast.loaders, torch, torchvision  # noqa: F401
names = ("torch", "torchvision", "triton", "numpy", "ffcv")
have = []
for name in names:
    try:
        have.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
print("setup: lure-fast ready:", ", ".join(have))
EOF
