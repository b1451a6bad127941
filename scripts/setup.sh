#!/usr/bin/env bash
# Set up lure-fast in a virtual environment: bash scripts/setup.sh [VENV]   (default .venv)
# Safe to run again: an existing environment is updated in place.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}

if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: $PYTHON not found; install Python 3.10 or newer, or set PYTHON=/path/to/python3" >&2; exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup: $("$PYTHON" --version) is too old; lure-fast needs Python 3.10 or newer (set PYTHON=...)" >&2; exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV" || { echo "setup: could not create $VENV; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch, torchvision and triton from the registry's standard builds: they run on a CPU as well
"$VENV/bin/python" -m pip install -q -e ".[test]"

# FFCV (the --loader ffcv backend) compiles against OpenCV and libjpeg-turbo; optional
if [ -f scripts/install_ffcv.sh ]; then
  if ! bash scripts/install_ffcv.sh "$VENV/bin/python"; then
    echo "setup: FFCV is not installed (see the message above); everything else works, and --loader memory or torch" \
         "serve instead of --loader ffcv" >&2
  fi
fi
"$VENV/bin/python" -c "import lure_fast.kernels, lure_fast.loaders, torch, torchvision; print('setup: lure-fast ready, torch', torch.__version__)"
