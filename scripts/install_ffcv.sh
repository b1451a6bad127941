#!/usr/bin/env bash
# Install FFCV (the --loader ffcv backend) into the environment of a Python interpreter.
#
#   scripts/install_ffcv.sh [PYTHON]        PYTHON defaults to .venv/bin/python of this checkout
#
# FFCV 1.0.2 is an sdist on PyPI (checked against its SHA-256 below): its C extension compiles against
# OpenCV and libjpeg-turbo found by pkg-config, so the system packages below are installed first (apt, as
# root; elsewhere this says what to install). A wheel for the interpreter's Python in <repo>/.whl/
# (ffcv-1.0.2-cpXY-cpXY-*.whl, e.g. the auditwheel-repaired one with OpenCV, libjpeg-turbo and their
# libraries vendored) is installed instead, with no compiler or apt.
# Python side: numba (llvmlite), opencv-python-headless, tqdm, psutil and setuptools at the versions of
# requirements/lock.txt (`make setup` has installed them already; here they are installed only when
# missing, so an image that already has numba or OpenCV keeps its own versions). ffcv's other declared
# requirements (opencv-python, pytorch_pfn_extras, fastargs, assertpy, terminaltables) are used only by
# its benchmarks and NormalizeImage, so ffcv is installed with --no-deps and numpy/torch/torchvision are
# pinned to what the interpreter already has: this script never changes them.
# Idempotent: returns at once when ffcv already imports.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${1:-$REPO/.venv/bin/python}"
FFCV_VERSION="1.0.2"
FFCV_SHA256="42766a487c8a659b543d070f24732c4b65aab8d96980f5792c63e91e55511f00"  # ffcv-1.0.2.tar.gz
LOCK="$REPO/requirements/lock.txt"
# module to import : package installed only when the module is missing (an image that already has
# numba or OpenCV keeps its own versions, and nothing is fetched on a machine without network);
# versions from the lock, or these where the lock is absent
PY_DEPS=("numba:numba" "cv2:opencv-python-headless" "tqdm:tqdm" "psutil:psutil")
FALLBACK_PINS=("numba==0.68.1" "llvmlite==0.50.0" "opencv-python-headless==5.0.0.93")
APT_PKGS=(pkg-config g++ libopencv-dev libturbojpeg0-dev)
BREW_PKGS=(pkg-config opencv jpeg-turbo)

system_hint() {
    echo "  Debian/Ubuntu: sudo apt-get install -y ${APT_PKGS[*]}" >&2
    echo "  macOS (Homebrew; FFCV is untested there): brew install ${BREW_PKGS[*]}" >&2
    echo "  then run: make ffcv   (or: bash scripts/install_ffcv.sh $PY)" >&2
}

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
        echo "install_ffcv.sh: FFCV $FFCV_VERSION compiles against OpenCV and libjpeg-turbo, and this machine lacks ${need[*]}; install the system packages:" >&2
        system_hint
        exit 1
    fi
    echo "installing system packages: ${need[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PKGS[@]}" >/dev/null; }; then
        echo "install_ffcv.sh: apt-get could not install ${APT_PKGS[*]} (see above), which FFCV $FFCV_VERSION compiles against" >&2
        system_hint
        exit 1
    fi
fi

# --------------------------------------------------------------------------- python packages
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
constraints="$work/constraints.txt"
# numpy/torch/torchvision as the interpreter has them; FFCV's Python dependencies as the lock has them
# (its lines whose markers hold here), else FALLBACK_PINS
"$PY" - "$constraints" "$LOCK" "${FALLBACK_PINS[@]}" <<'EOF'
import importlib.metadata as m, os, re, sys
out, lock, fallback = sys.argv[1], sys.argv[2], sys.argv[3:]
pins = {}
for name in ("numpy", "torch", "torchvision"):
    try:
        pins[name] = f"{name}=={m.version(name)}"
    except m.PackageNotFoundError:
        pass
wanted = {"numba", "llvmlite", "opencv-python-headless", "tqdm", "psutil", "setuptools"}
if os.path.exists(lock):
    try:
        from packaging.markers import Marker
    except ImportError:
        from pip._vendor.packaging.markers import Marker
    for line in open(lock):
        g = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if g and g.group(1).lower() in wanted and not (g.group(3) and not Marker(g.group(3)).evaluate()):
            pins[g.group(1).lower()] = f"{g.group(1)}=={g.group(2)}"
else:
    for pin in fallback:
        pins[pin.split("==")[0]] = pin
with open(out, "w") as f:
    f.write("\n".join(pins.values()) + "\n")
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
    echo "ffcv==$FFCV_VERSION --hash=sha256:$FFCV_SHA256" > "$work/ffcv.txt"
    # the interpreter's setuptools (the lock's) builds it where it has one: nothing unpinned is fetched
    isolation=()
    "$PY" -c 'import setuptools' >/dev/null 2>&1 && isolation=(--no-build-isolation)
    echo "building ffcv $FFCV_VERSION (C++ against OpenCV and libjpeg-turbo; about a minute)"
    if ! "$PY" -m pip install -q --no-deps ${isolation[@]+"${isolation[@]}"} -r "$work/ffcv.txt" >"$work/build.log" 2>&1; then
        tail -n 25 "$work/build.log" >&2
        echo "install_ffcv.sh: FFCV $FFCV_VERSION did not build (the end of pip's output is above). Its C++ extension" \
             "needs a C++ compiler, pkg-config, and the development files of OpenCV (opencv4) and libjpeg-turbo" \
             "(libturbojpeg); 'pkg-config --exists opencv4 libturbojpeg && echo found' checks the last two. Install them:" >&2
        system_hint
        exit 1
    fi
fi

if ! "$PY" -c "$check"; then
    echo "install_ffcv.sh: ffcv installed but does not import in $PY (see the error above)" >&2
    exit 1
fi
echo "ffcv $FFCV_VERSION ready in $PY"
