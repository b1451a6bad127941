#!/usr/bin/env bash
# Install FFCV (the --loader ffcv backend) into the environment of a Python interpreter.
#
#   scripts/install_ffcv.sh [PYTHON]        PYTHON defaults to .venv/bin/python of this checkout
#
# FFCV 1.0.2 is an sdist on PyPI: its C extension compiles against OpenCV and libjpeg-turbo found by
# pkg-config, so the system packages below are installed first (apt, as root). A wheel for the
# interpreter's Python in <repo>/.whl/ (ffcv-1.0.2-cpXY-cpXY-*.whl, e.g. the auditwheel-repaired one with
# OpenCV, libjpeg-turbo and their libraries vendored) is installed instead, with no compiler or apt.
# Python side, versions tested with torch 2.15 / numpy 2.4 / Python 3.11:
#   ffcv 1.0.2, numba 0.68.1 (llvmlite 0.50.0), opencv-python-headless 5.0.0.93 (installed when missing)
# ffcv's other declared requirements (pytorch_pfn_extras, fastargs, assertpy, terminaltables) are
# used only by its benchmarks and NormalizeImage, so ffcv is installed with --no-deps and numpy/torch
# are pinned to what the interpreter already has: this script never changes them.
# Idempotent: returns at once when ffcv already imports.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${1:-$REPO/.venv/bin/python}"
FFCV_VERSION="1.0.2"
# module to import : requirement installed only when the module is missing (an image that already has
# numba or OpenCV keeps its own versions, and nothing is fetched on a machine without network)
PY_DEPS=("numba:numba==0.68.1" "cv2:opencv-python-headless==5.0.0.93" "tqdm:tqdm" "psutil:psutil")
APT_PKGS=(pkg-config g++ libopencv-dev libturbojpeg0-dev)

if ! [ -x "$PY" ] && ! command -v "$PY" >/dev/null 2>&1; then
    echo "install_ffcv.sh: '$PY' is not a Python interpreter; pass one, e.g. .venv/bin/python" >&2
    exit 2
fi

if ! "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
    echo "install_ffcv.sh: $PY has no torch/numpy; install the project first (pip install -e .), then run this" >&2
    exit 1
fi

check='import ffcv, ffcv.libffcv, ffcv.loader, numba, cv2'
if "$PY" -c "$check" >/dev/null 2>&1; then
    echo "ffcv $("$PY" -c 'import importlib.metadata as m; print(m.version("ffcv"))') already importable in $PY"
    exit 0
fi

# --------------------------------------------------------------------------- system packages
tag="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
wheel="$(ls "$REPO"/.whl/ffcv-"$FFCV_VERSION"-"$tag"-"$tag"-*.whl 2>/dev/null | head -n1 || true)"
need=()
if [ -z "$wheel" ]; then
    command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
    command -v g++ >/dev/null 2>&1 || need+=(g++)
    { pkg-config --exists opencv4 || pkg-config --exists opencv; } 2>/dev/null || need+=(libopencv-dev)
    pkg-config --exists libturbojpeg 2>/dev/null || need+=(libturbojpeg0-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "install_ffcv.sh: FFCV needs the system packages ${need[*]}; install them (Debian/Ubuntu: sudo apt-get install -y ${APT_PKGS[*]}) and run this again" >&2
        exit 1
    fi
    echo "installing system packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PKGS[@]}" >/dev/null
fi

# --------------------------------------------------------------------------- python packages
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$PY" - "$constraints" <<'EOF'
import importlib.metadata as m, sys
with open(sys.argv[1], "w") as f:
    for name in ("numpy", "torch", "torchvision"):
        try:
            f.write(f"{name}=={m.version(name)}\n")
        except m.PackageNotFoundError:
            pass
EOF
# Python >= 3.12 has no distutils; ffcv imports it, and setuptools provides it
if ! "$PY" -c 'import distutils' >/dev/null 2>&1; then
    "$PY" -m pip install -q -c "$constraints" setuptools
fi
missing=()
for dep in "${PY_DEPS[@]}"; do
    "$PY" -c "import ${dep%%:*}" >/dev/null 2>&1 || missing+=("${dep#*:}")
done
[ ${#missing[@]} -eq 0 ] || "$PY" -m pip install -q -c "$constraints" "${missing[@]}"
if [ -n "$wheel" ]; then
    "$PY" -m pip install -q --no-deps "$wheel"
else
    "$PY" -m pip install -q -c "$constraints" --no-deps "ffcv==$FFCV_VERSION"
fi

if ! "$PY" -c "$check"; then
    echo "install_ffcv.sh: ffcv installed but does not import in $PY (see the error above)" >&2
    exit 1
fi
echo "ffcv $FFCV_VERSION ready in $PY"
