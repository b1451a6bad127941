#!/usr/bin/env bash
# Run THERE, on the GPU machine, from the repo root, with .carry/ carried (scripts/gpu_bundle.sh fills it
# here). Installs nothing but lure-fast itself (no dependencies, offline) and any carried wheels, then runs
# the GPU work in order; every step logs into $OUT and can be skipped:
#
#   setup    CIFAR-10 JPEG unpacked to $CIFAR (/tmp/cifar10-jpeg); carried wheels and lure-fast installed
#            into $SITE (/tmp/site) with pip --target; imports checked
#   tests    python3 -m pytest -m gpu tests                   SKIP_TESTS=1 skips; TESTS_ARGS adds pytest args
#   kernels  benchmarks/bench_unlearn.py --benchmark-enable   SKIP_KERNELS=1 skips; KERNELS_ARGS likewise
#   loop     benchmarks/bench_train.py --benchmark-enable     SKIP_LOOP=1 skips; LOOP_ARGS likewise (-k 64: one
#            batch size; the results file keeps the other cases of an earlier file carried in benchmarks/results/)
#   paper    lure-fast compare --preset paper (full Table-1)  only with RUN_PAPER=1 (needs CUDA); PAPER_METHODS,
#            PAPER_ARGS (default below), PAPER_RESUME=1 continues $PAPER_DIR
#   SKIP_GPU=1 skips tests, kernels, loop and paper (to check setup on a machine without a GPU).
#
# Why an install: pyproject maps lure_fast.kernels to kernels/ and lure_fast.loaders to loaders/, so a plain
# checkout on PYTHONPATH lacks both. PYTHONSAFEPATH=1 keeps `python3 -m ...` from putting the repo root
# first on sys.path, where its lure_fast/ (without kernels/ and loaders/) would hide the installed one.
#
# What comes back ($OUT, at most 8 files): summary.txt, session.log, results.tar.gz (every step's log and
# result files, rewritten after each step), and the result tables train-*.md, unlearn-*.md, paper-table.md.
# Steps stop at DEADLINE_S (default 570 s) after the start, so the files are written inside the 600 s limit
# of one call. The paper protocol may need several calls: its folder ($PAPER_DIR, /tmp/lf-paper) outlives a
# call while the machine stays warm (30 s), and RUN_PAPER=1 PAPER_RESUME=1 continues it from its checkpoints.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
: "${OUT:?set OUT to the folder for logs and results}"
PY=${PYTHON:-python3}
CIFAR=${CIFAR:-/tmp/cifar10-jpeg}
SITE=${SITE:-/tmp/site}
STAGE=${STAGE:-/tmp/gpu-session}
PAPER_DIR=${PAPER_DIR:-/tmp/lf-paper}
PAPER_METHODS=${PAPER_METHODS:-bl,lure}
PAPER_ARGS=${PAPER_ARGS:---compile --compile-mode reduce-overhead --jobs 2 --checkpoint-every 5}
DEADLINE_S=${DEADLINE_S:-570}
START=$SECONDS

mkdir -p "$OUT"
rm -rf "$STAGE"
mkdir -p "$STAGE/logs" "$STAGE/results"
touch "$STAGE/.start"
: >"$OUT/summary.txt"
exec > >(tee -a "$OUT/session.log") 2>&1
TEE=$!

say() { echo "[gpu_session +$((SECONDS - START))s] $*"; }
record() { echo "$1 rc=$2 seconds=$3${4:+ $4}" | tee -a "$OUT/summary.txt"; }
pack() { tar -czf "$OUT/results.tar.gz.tmp" -C "$STAGE" . && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"; }

# step NAME COMMAND...: runs COMMAND with what is left of the deadline, its output in logs/NAME.log
step() {
    local name=$1; shift
    local left=$((DEADLINE_S - (SECONDS - START)))
    if [ "$left" -lt 30 ]; then
        record "$name" skipped 0 "(only ${left}s left before DEADLINE_S=$DEADLINE_S; run it in another call)"
        return
    fi
    say "$name: $* (at most ${left}s)"
    local t0=$SECONDS rc
    timeout -k 15 "$left" "$@" 2>&1 | tee "$STAGE/logs/$name.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 124 ] && say "$name: stopped at the deadline"
    record "$name" "$rc" $((SECONDS - t0))
    pack
}
skipped() { record "$1" skipped 0 "($2)"; }

# ------------------------------------------------------------------ setup
t0=$SECONDS
say "setup: $(uname -n), $($PY --version 2>&1)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || say "setup: no nvidia-smi"
setup_ok=1
if [ -f "$CIFAR/.unpacked" ]; then
    say "setup: $CIFAR already unpacked"
elif [ -f .carry/cifar10-jpeg.npz ] && [ -f .carry/pack_imagefolder.py ]; then
    rm -rf "$CIFAR"
    $PY .carry/pack_imagefolder.py unpack .carry/cifar10-jpeg.npz "$CIFAR" && touch "$CIFAR/.unpacked" || setup_ok=0
    say "setup: unpacked $(find "$CIFAR" -name '*.jpg' | wc -l) JPEGs into $CIFAR"
else
    say "setup: .carry/cifar10-jpeg.npz missing (run scripts/gpu_bundle.sh here and carry .carry); the loop benchmark will skip"
fi

rm -rf "$SITE" /tmp/lf-src
mkdir -p "$SITE" /tmp/lf-src
shopt -s nullglob
wheels=(.carry/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
    $PY -m pip install -q --no-deps --no-index --no-compile --target "$SITE" "${wheels[@]}" || setup_ok=0
    say "setup: installed ${wheels[*]}"
fi
# build from a copy, so the checkout gets no build/ or egg-info
cp -r lure_fast kernels loaders pyproject.toml README.md /tmp/lf-src/
if [ -z "${FORCE_SHIM:-}" ] && $PY -m pip install -q --no-deps --no-index --no-build-isolation --no-compile \
        --target "$SITE" /tmp/lf-src; then
    say "setup: lure-fast installed into $SITE (a copy: later edits to the checkout need a new setup)"
else
    # no usable setuptools there: the same layout from symbolic links into the checkout
    say "setup: pip install failed or FORCE_SHIM set; linking the package layout instead"
    rm -rf "$SITE/lure_fast"
    mkdir -p "$SITE/lure_fast"
    for f in "$REPO"/lure_fast/*; do
        [ "$(basename "$f")" = __pycache__ ] || ln -s "$f" "$SITE/lure_fast/"
    done
    ln -s "$REPO/kernels" "$SITE/lure_fast/kernels"
    ln -s "$REPO/loaders" "$SITE/lure_fast/loaders"
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1
export LURE_FAST_CIFAR="$CIFAR" LURE_FAST_DECODED_CACHE=${LURE_FAST_DECODED_CACHE:-/tmp/lf-decoded}
$PY - "$SITE" <<'EOF' || setup_ok=0
import os, sys
import torch
import lure_fast, lure_fast.kernels, lure_fast.loaders.backends.memory, lure_fast.train
site = os.path.realpath(sys.argv[1])
where = os.path.realpath(os.path.dirname(os.path.dirname(lure_fast.__file__)))
assert where == site, f"lure_fast imported from {where}, not {site}"
try:
    import ffcv
    has_ffcv = f"ffcv {ffcv.__version__}"
except Exception as e:  # optional: only --loader ffcv and its tests need it
    has_ffcv = f"no ffcv ({type(e).__name__})"
print(f"imports ok: lure_fast from {lure_fast.__file__}, kernels {lure_fast.kernels.__file__}; torch {torch.__version__}, "
      f"cuda {torch.cuda.is_available()} {torch.cuda.get_device_name() if torch.cuda.is_available() else ''}; {has_ffcv}")
EOF
record setup $((1 - setup_ok)) $((SECONDS - t0))
if [ "$setup_ok" -ne 1 ]; then
    say "setup failed; see above"
    pack
    exit 1
fi

has_cuda=$($PY -c 'import torch; print(int(torch.cuda.is_available()))')
[ "$has_cuda" = 1 ] || say "no CUDA device here: the GPU tests and benchmarks will report themselves skipped"

copy_results() {  # the result files this session wrote, into the tarball and (the tables) into $OUT
    for f in "$REPO"/benchmarks/results/$1-*; do
        [ "$f" -nt "$STAGE/.start" ] || continue
        cp "$f" "$STAGE/results/"
        case $f in *.md) cp "$f" "$OUT/" ;; esac
    done
    pack
}

# ------------------------------------------------------------------ GPU steps
PYTEST=($PY -m pytest -q -rsx -p no:cacheprovider)
if [ -n "${SKIP_GPU:-}" ]; then
    skipped tests "SKIP_GPU"; skipped kernels "SKIP_GPU"; skipped loop "SKIP_GPU"; skipped paper "SKIP_GPU"
else
    if [ -n "${SKIP_TESTS:-}" ]; then
        skipped tests SKIP_TESTS
    else
        # shellcheck disable=SC2086  # *_ARGS are lists of arguments
        step tests "${PYTEST[@]}" -m gpu tests ${TESTS_ARGS:-}
    fi
    if [ -n "${SKIP_KERNELS:-}" ]; then
        skipped kernels SKIP_KERNELS
    else
        # shellcheck disable=SC2086
        step kernels "${PYTEST[@]}" benchmarks/bench_unlearn.py --benchmark-enable ${KERNELS_ARGS:-}
        copy_results unlearn
    fi
    if [ -n "${SKIP_LOOP:-}" ]; then
        skipped loop SKIP_LOOP
    else
        # shellcheck disable=SC2086
        step loop "${PYTEST[@]}" benchmarks/bench_train.py --benchmark-enable ${LOOP_ARGS:-}
        copy_results train
    fi
    if [ -z "${RUN_PAPER:-}" ]; then
        skipped paper "RUN_PAPER=1 runs it"
    elif [ "$has_cuda" != 1 ]; then
        skipped paper "needs CUDA"
    else
        resume=--overwrite
        [ -n "${PAPER_RESUME:-}" ] && [ -d "$PAPER_DIR" ] && resume=--resume
        # shellcheck disable=SC2086  # PAPER_ARGS is a list of flags
        step paper $PY -m lure_fast compare --methods "$PAPER_METHODS" --data "$CIFAR" --preset paper \
            --device cuda --out "$PAPER_DIR" --quiet $resume $PAPER_ARGS
        mkdir -p "$STAGE/paper"
        for m in ${PAPER_METHODS//,/ }; do
            [ -f "$PAPER_DIR/$m/results.json" ] && cp "$PAPER_DIR/$m/results.json" "$STAGE/paper/$m-results.json"
        done
        [ -f "$PAPER_DIR/table.md" ] && cp "$PAPER_DIR/table.md" "$STAGE/paper/" && cp "$PAPER_DIR/table.md" "$OUT/paper-table.md"
        [ -f "$PAPER_DIR/curves.png" ] && cp "$PAPER_DIR/curves.png" "$STAGE/paper/"
        pack
    fi
fi
pack
say "done in $((SECONDS - START))s"
cat "$OUT/summary.txt"
exec >&- 2>&-
wait "$TEE" 2>/dev/null || true  # session.log complete before the call returns
