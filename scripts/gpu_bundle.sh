#!/usr/bin/env bash
# Run HERE, on a machine with ../shared beside the checkout: fills the git-ignored folder .carry/ with
# what a GPU session needs besides the working tree (which travels by itself), and prints the carry list.
#
#   .carry/cifar10-jpeg.npz      the real CIFAR-10 JPEG copy packed in one file: the shared 54 MiB npz
#                                rewritten compressed (scripts/repack_npz.py: same arrays, JPEG bytes
#                                unchanged, checked equal after writing; about 18 MiB)
#   .carry/pack_imagefolder.py   unpacks it into an ImageFolder tree
#   .carry/ffcv-*-cp312-*.whl    the FFCV wheel (9.3 MiB, OpenCV and libjpeg-turbo vendored), only if
#                                everything still fits: benchmarks/bench_loaders.py measures it, --loader
#                                ffcv uses it; the memory backend (every other GPU benchmark) needs none
#
# The working tree that travels (tracked + untracked-not-ignored files + carried folders) must stay under
# 64 MiB; this keeps it under LIMIT_MIB (default 62). Then, there: bash scripts/gpu_session.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
LIMIT_MIB=${LIMIT_MIB:-62}
NPZ="$SHARED/data/cifar10-jpeg.npz"
TOOL="$SHARED/tools/pack_imagefolder.py"

for f in "$NPZ" "$TOOL"; do
    [ -f "$f" ] || { echo "gpu_bundle: $f not found (set SHARED to the shared folder)" >&2; exit 1; }
done
git check-ignore -q .carry/x || { echo "gpu_bundle: .carry/ is not git-ignored; add /.carry/ to .gitignore" >&2; exit 1; }

PY=${PYTHON:-.venv/bin/python}
command -v "$PY" >/dev/null 2>&1 || PY=python3

rm -rf .carry
mkdir .carry
cp "$TOOL" .carry/
# the shared npz is stored without compression; deflated it takes a third of the room (repack_npz.py
# compares every array with the original after writing and exits non-zero on any difference)
"$PY" scripts/repack_npz.py "$NPZ" .carry/cifar10-jpeg.npz || { echo "gpu_bundle: repacking $NPZ failed" >&2; exit 1; }

sum_bytes() { awk '{s += $1} END {print s + 0}'; }
# tracked and untracked-not-ignored files (deleted tracked files are skipped by stat)
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null | sum_bytes)
inner_shared=0
[ -d shared ] && inner_shared=$(du -sb shared | cut -f1)  # a shared/ inside the checkout travels too
carry=$(du -sb .carry | cut -f1)
limit=$((LIMIT_MIB * 1024 * 1024))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

wheel=$(ls .whl/ffcv-*-cp312-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$wheel" ]; then
    w=$(stat -c %s "$wheel")
    if [ $((tree + inner_shared + carry + w)) -le "$limit" ]; then
        cp "$wheel" .carry/
        carry=$((carry + w))
        echo "gpu_bundle: FFCV wheel carried ($(mib "$w")); installed there with --no-deps: its declared needs"
        echo "            terminaltables, fastargs, assertpy, pytorch_pfn_extras serve only its own benchmarks and"
        echo "            NormalizeImage (scripts/install_ffcv.sh); numba and cv2 are on the GPU image"
    else
        echo "gpu_bundle: FFCV wheel left out: $(mib "$w") more would make $(mib $((tree + inner_shared + carry + w)))," \
             "over the ${LIMIT_MIB} MiB budget; bench_loaders will skip ffcv, the rest needs none"
    fi
else
    echo "gpu_bundle: no cp312 FFCV wheel in .whl/; bench_loaders will skip ffcv there, the rest needs none"
fi

total=$((tree + inner_shared + carry))
echo "gpu_bundle: working tree $(mib "$tree") + .carry $(mib "$carry") = $(mib "$total") (limit ${LIMIT_MIB} MiB)"
ls -l .carry
if [ "$total" -gt "$limit" ]; then
    echo "gpu_bundle: over the budget: commit or remove large untracked files first" >&2
    exit 1
fi
echo 'carry: [".carry"]'
