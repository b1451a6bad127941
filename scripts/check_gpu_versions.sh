#!/usr/bin/env bash
# Runs the test suite here, on the CPU, under the versions the GPU machine's image has (KINDS.md of the
# device tool: Python 3.12, torch 2.11.0, Triton 3.6.0, torchvision 0.26.0, numpy 2.5), to catch an API
# that those versions lack before a GPU session spends its minutes on it. With .carry/ filled by
# scripts/gpu_bundle.sh, the carried FFCV wheel is installed too, so its tests run as they would there.
#
#   bash scripts/check_gpu_versions.sh [pytest arguments]     (default: tests -q)
#
# The environment lives in $ENV_DIR (default /tmp/lf-gpu-versions) and is reused when its versions match.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
ENV_DIR=${ENV_DIR:-/tmp/lf-gpu-versions}
PINS=(torch==2.11.0 triton==3.6.0 torchvision==0.26.0 "numpy>=2.5,<2.6")
is312() { [ -n "$1" ] && "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; }
if [ -z "${PY312:-}" ]; then
    for candidate in $(command -v python3.12) "$HOME"/.pyenv/versions/3.12*/bin/python; do
        if is312 "$candidate"; then PY312=$candidate; break; fi
    done
fi
if ! is312 "${PY312:-}"; then
    echo "check_gpu_versions: no Python 3.12 found (set PY312=/path/to/python3.12, or install it with pyenv)" >&2
    exit 2
fi
stamp="$ENV_DIR/.pins"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${PINS[*]}" ]; then
    rm -rf "$ENV_DIR"
    "$PY312" -m venv "$ENV_DIR"
    "$ENV_DIR/bin/pip" install -q "${PINS[@]}" scikit-learn pillow tqdm matplotlib pytest pytest-benchmark \
        pytest-timeout numba opencv-python-headless
    echo "${PINS[*]}" >"$stamp"
fi
shopt -s nullglob
wheels=(.carry/ffcv-*cp312*.whl)
[ ${#wheels[@]} -gt 0 ] && "$ENV_DIR/bin/pip" install -q --no-deps --force-reinstall "${wheels[@]}"
# lure-fast from a copy (the checkout gets no build/), as scripts/gpu_session.sh installs it there
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r lure_fast kernels loaders pyproject.toml README.md "$src/"
"$ENV_DIR/bin/pip" install -q --no-deps --force-reinstall "$src"
"$ENV_DIR/bin/python" -c 'import torch, triton; print(f"torch {torch.__version__}, triton {triton.__version__}")'
# PYTHONSAFEPATH: the checkout's lure_fast/ (without kernels/ and loaders/) must not hide the installed one
cd "$REPO"
[ $# -gt 0 ] || set -- tests -q
PYTHONSAFEPATH=1 exec "$ENV_DIR/bin/python" -m pytest -p no:cacheprovider "$@"
