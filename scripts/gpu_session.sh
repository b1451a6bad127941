#!/usr/bin/env bash
# Run THERE, on the GPU machine, from the repo root, with .carry/ carried (scripts/gpu_bundle.sh fills it
# here). Installs nothing but lure-fast itself (no dependencies, offline) and the carried wheels made for
# that interpreter, then runs the chosen steps in the order given; every step logs into $OUT.
#
# Which steps: STEPS, a space-separated list, default "tests kernels loop loaders" (with MODE=detach, every
# step, in the order of $DETACH_STEPS: "kernels tests paper loop loaders fast jobs", the paper protocol
# third so that it gets most of a 30-minute session). RUN_PAPER=1, RUN_FAST=1, RUN_JOBS=1 add paper,
# fast, jobs to it (in the foreground the long runs are never in the default);
# SKIP_TESTS=1, SKIP_KERNELS=1, SKIP_LOOP=1, SKIP_LOADERS=1 take a step out; SKIP_GPU=1 runs setup alone
# (to check it on a machine without a GPU). An unknown name stops the script before setup. Every step
# not run is recorded in summary.txt with the reason.
#
#   setup    always: CIFAR-10 JPEG unpacked to $CIFAR (/tmp/cifar10-jpeg) unless already there; the carried
#            wheels whose tags fit the interpreter (others skipped with a message) and lure-fast installed
#            into $SITE (/tmp/site) with pip --target; imports checked (ffcv reported, optional)
#   tests    python3 -m pytest -m gpu tests                     TESTS_ARGS adds pytest arguments; with
#            pytest-xdist there, in TESTS_WORKERS (4) processes (the CPU suite passes under -n 2 here)
#   kernels  benchmarks/bench_unlearn.py --benchmark-enable     KERNELS_ARGS likewise -> unlearn-*.md
#   loop     benchmarks/bench_train.py --benchmark-enable       LOOP_ARGS likewise (-k 64: one batch size;
#            the results file keeps the other cases of an earlier file carried in benchmarks/results/)
#            -> train-*.md
#   loaders  benchmarks/bench_loaders.py --benchmark-enable     LOADERS_ARGS likewise: ffcv (if its wheel
#            was carried), torch (workers = cores) and memory backends; with a train-<gpu>.json of the
#            loop step (this call's, or one committed) also loader / training images/s -> loaders-*.md
#   paper    lure-fast compare --preset paper (full Table-1)    PAPER_METHODS (bl,lure), PAPER_ARGS (default
#            below), PAPER_RESUME=1 continues $PAPER_DIR (/tmp/lf-paper) -> paper-table.md
#   fast     lure-fast compare --preset fast                    FAST_METHODS (bl,lure), FAST_ARGS (--jobs 2),
#            FAST_RESUME=1 continues $FAST_DIR (/tmp/lf-fast) -> fast-table.md
#   jobs     lure-fast compare --methods $JOBS_METHODS (bl,lure,sp,llf) on a short real-CIFAR stream
#            (JOBS_ARGS, default --preset paper --megabatches 8 --epochs 5), first --jobs 1, then
#            --jobs $JOBS_CONCURRENT (4), each into its own folder under $JOBS_DIR (/tmp/lf-jobs), each
#            compiling from empty caches (CIFAR decoded before both); scripts/jobs_report.py writes their
#            wall times, aggregate images/s and the ratio -> compare-jobs-*.md (and .json in the tarball)
# paper, fast and jobs need CUDA (COMPARE_DEVICE=cpu runs them on the CPU, to try the script elsewhere).
#
# A 30-minute GPU session (device time counts from the machine's start, ~1-2 min, to its release; a call
# may run 600 s; a machine stays warm 30 s after a call, after which the next call starts a bare one and
# /tmp is gone). The steps together need more than one call, so they run DETACHED: one worker goes through
# them all in order, in a process session of its own that outlives each call, and every call follows it
# and brings back what it has so far:
#   1. {"command": "MODE=detach bash scripts/gpu_session.sh", "carry": [".carry"], "timeout_s": 600}
#      starts the worker on every step (STEPS narrows them: the default order is kernels tests paper
#      loop loaders fast jobs) from a copy of the checkout, then follows it for 570 s
#   2. {"command": "MODE=attach bash scripts/gpu_session.sh", "timeout_s": 600}, again and again, each
#      within 30 s of the last (rc 3: still running; 0: finished; 4: no worker, the machine was a fresh
#      one). Give the last one WAIT_S (e.g. MODE=attach WAIT_S=300) so that it returns before the
#      session's device time (status: budget_left_s) runs out: a call cut off brings nothing back.
# Every attach returns summary.txt (a line per finished step), session.log, worker.log, tables.md (every
# result table so far) and results.tar.gz (every finished step's logs and results, the log of the step
# under way, and under inflight/ the progress.json of the paper/fast runs under way: their finished
# mega-batches, so even a protocol the session cannot finish leaves its first mega-batches). In the
# worker, DEADLINE_S is WORKER_DEADLINE_S (default 1750 s), so no step is cut for a call's limit; the
# benchmark and test steps are capped (KERNELS_LIMIT_S 300, TESTS_LIMIT_S 240, LOOP_LIMIT_S 360,
# LOADERS_LIMIT_S 180; any step NAME takes a NAME_LIMIT_S, in either mode), so that none can run away
# with the paper protocol's time.
# Without MODE (foreground), the steps run inside the call itself, stopped at DEADLINE_S (570 s):
#   {"command": "STEPS='kernels loop' bash scripts/gpu_session.sh", "carry": [".carry"], "timeout_s": 600}
# and PAPER_RESUME=1 / FAST_RESUME=1 continue a paper/fast run that an earlier call's deadline stopped.
# Then commit what came back (the tables are in $OUT, the JSON files in results.tar.gz: tar -xzf
# results.tar.gz ./results, into benchmarks/results/).
#
# Why an install: pyproject maps lure_fast.kernels to kernels/ and lure_fast.loaders to loaders/, so a plain
# checkout on PYTHONPATH lacks both. PYTHONSAFEPATH=1 keeps `python3 -m ...` from putting the repo root
# first on sys.path, where its lure_fast/ (without kernels/ and loaders/) would hide the installed one.
# FFCV imports distutils (ffcv/pipeline/graph.py), which Python >= 3.12 lacks: setuptools' shim provides
# it (SETUPTOOLS_USE_DISTUTILS=local, setuptools is on the GPU image); without one, setup adds a minimal
# distutils.log to PYTHONPATH.
#
# What comes back in the foreground ($OUT, at most 8 files): summary.txt, session.log, results.tar.gz (every step's log and
# result files, rewritten after each step), and the result tables of the steps run (unlearn-*.md,
# train-*.md, loaders-*.md, paper-table.md, fast-table.md, compare-jobs-*.md): keep a call to at most
# five table-writing steps. Steps stop at DEADLINE_S (default 570 s) after the start, so the files are
# written inside the 600 s limit of one call; each step gets what is left, and one with under 30 s left
# is skipped and recorded.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
: "${OUT:?set OUT to the folder for logs and results}"
PY=${PYTHON:-python3}
CIFAR=${CIFAR:-/tmp/cifar10-jpeg}
SITE=${SITE:-/tmp/site}
STAGE=${STAGE:-/tmp/gpu-session}
COMPARE_DEVICE=${COMPARE_DEVICE:-cuda}
PAPER_DIR=${PAPER_DIR:-/tmp/lf-paper}
PAPER_METHODS=${PAPER_METHODS:-bl,lure}
# bl and lure share the GPU (--jobs 2): each run's recorded time is then an upper bound on its time alone
PAPER_ARGS=${PAPER_ARGS:---compile --compile-mode reduce-overhead --jobs 2}
FAST_DIR=${FAST_DIR:-/tmp/lf-fast}
FAST_METHODS=${FAST_METHODS:-bl,lure}
FAST_ARGS=${FAST_ARGS:---jobs 2}
JOBS_DIR=${JOBS_DIR:-/tmp/lf-jobs}
JOBS_METHODS=${JOBS_METHODS:-bl,lure,sp,llf}
# 5 epochs per mega-batch (1.0 M training images a run), so compiling (once per process) is not the most of it
JOBS_ARGS=${JOBS_ARGS:---preset paper --megabatches 8 --epochs 5}
JOBS_CONCURRENT=${JOBS_CONCURRENT:-4}
DEADLINE_S=${DEADLINE_S:-570}
START=$SECONDS

# ------------------------------------------------------------------ which steps
ALL_STEPS="tests kernels loop loaders paper fast jobs"
DETACH_STEPS="kernels tests paper loop loaders fast jobs"  # the headline protocol before the long benchmarks
steps=${STEPS:-tests kernels loop loaders}
[ -n "${RUN_PAPER:-}" ] && steps="$steps paper"
[ -n "${RUN_FAST:-}" ] && steps="$steps fast"
[ -n "${RUN_JOBS:-}" ] && steps="$steps jobs"
chosen=()
for s in $steps; do
    case " $ALL_STEPS " in
        *" $s "*) ;;
        *) echo "gpu_session: unknown step '$s' in STEPS; choose from: $ALL_STEPS" >&2; exit 2 ;;
    esac
    case " ${chosen[*]-} " in *" $s "*) continue ;; esac  # named twice: once
    chosen+=("$s")
done

# ------------------------------------------------------------------ detached sessions
# MODE=detach starts the steps as a worker in a process session of its own (setsid), which outlives the
# call, and then follows it like MODE=attach; MODE=attach follows a running worker for WAIT_S seconds
# (default: what is left of DEADLINE_S) and brings back what it has so far. $BG holds the worker's files.
MODE=${MODE:-foreground}
BG=${BG:-/tmp/gpu-bg}
case $MODE in
    foreground|worker|detach|attach) ;;
    *) echo "gpu_session: unknown MODE '$MODE'; choose foreground (the default), detach or attach" >&2; exit 2 ;;
esac

worker_alive() { [ -f "$BG/worker.pid" ] && kill -0 "$(cat "$BG/worker.pid")" 2>/dev/null; }

# collect: what the worker has so far, into $OUT (5 files): summary.txt, session.log, worker.log, tables.md
# (every result table, one after another) and results.tar.gz (the worker's stage: every step's log and
# result files, the log of the step under way as far as it got; under inflight/, the progress.json of
# the runs under way: their finished mega-batches)
collect() {
    local f d p rel
    for f in summary.txt session.log; do [ -f "$BG/out/$f" ] && cp "$BG/out/$f" "$OUT/"; done
    [ -f "$BG/worker.log" ] && cp "$BG/worker.log" "$OUT/"
    : >"$OUT/tables.md"
    for f in "$BG"/out/*.md; do
        [ -f "$f" ] && printf '<!-- %s -->\n%s\n\n' "$(basename "$f")" "$(cat "$f")" >>"$OUT/tables.md"
    done
    rm -rf "$BG/inflight"
    mkdir -p "$BG/inflight" "$BG/stage"
    for d in $(cat "$BG/dirs" 2>/dev/null); do
        [ -d "$d" ] || continue
        while IFS= read -r p; do
            rel=$(basename "$d")/${p#"$d"/}
            mkdir -p "$BG/inflight/$(dirname "$rel")" && cp "$p" "$BG/inflight/$rel"
        done < <(find "$d" -name progress.json)
    done
    tar -czf "$OUT/results.tar.gz" -C "$BG/stage" . -C "$BG" inflight
}

attach() {
    local wait_s=${WAIT_S:-$((DEADLINE_S - (SECONDS - START)))} t0=$SECONDS seen=0 n last=0 rc
    mkdir -p "$OUT"
    if [ ! -f "$BG/worker.pid" ]; then
        echo "gpu_session: no detached session in $BG (a fresh machine: /tmp is gone with the last one); start one with MODE=detach" | tee "$OUT/summary.txt" >&2
        exit 4
    fi
    echo "[attach] following the worker (pid $(cat "$BG/worker.pid")) in $BG for at most ${wait_s}s"
    while :; do
        if [ -f "$BG/out/summary.txt" ]; then  # the steps finished since the last look
            n=$(wc -l <"$BG/out/summary.txt")
            [ "$n" -gt "$seen" ] && sed -n "$((seen + 1)),${n}p" "$BG/out/summary.txt" | sed 's/^/[attach] /'
            seen=$n
        fi
        [ -f "$BG/done" ] && break
        if ! worker_alive; then
            echo "[attach] the worker is gone without finishing (killed?); see worker.log"
            break
        fi
        [ $((SECONDS - t0)) -ge "$wait_s" ] && break
        if [ $((SECONDS - last)) -ge 60 ] && [ -f "$BG/out/session.log" ]; then  # a sign of life each minute
            echo "[attach +$((SECONDS - t0))s] $(tail -n 1 "$BG/out/session.log" | tr '\r' '\n' | tail -n 1 | cut -c1-200)"
            last=$SECONDS
        fi
        sleep 5
    done
    collect
    if [ -f "$BG/done" ]; then
        rc=$(cat "$BG/done")
        echo "[attach] the worker finished (rc=$rc) after $(( $(date +%s) - $(stat -c %Y "$BG/worker.pid") ))s; everything is in \$OUT"
        exit "$rc"
    elif worker_alive; then
        echo "[attach] the worker is still running: call MODE=attach again within 30 s, or the machine goes back"
        exit 3
    fi
    exit 5
}

if [ "$MODE" = attach ]; then
    attach
elif [ "$MODE" = detach ]; then
    if worker_alive; then
        echo "gpu_session: a worker is already running in $BG (pid $(cat "$BG/worker.pid")); follow it with MODE=attach" >&2
        exit 2
    fi
    rm -rf "$BG"
    mkdir -p "$BG/out"
    echo "$PAPER_DIR $FAST_DIR $JOBS_DIR" >"$BG/dirs"
    # the worker runs from a copy of the checkout (with .carry): a later call re-sends the working tree,
    # which must not change the scripts, benchmarks or result files of a worker under way
    mkdir -p "$BG/repo"
    tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=__pycache__ -cf - . | tar -C "$BG/repo" -xf - || exit 1
    [ -n "${STEPS:-}" ] || chosen=($DETACH_STEPS)  # detached, every step unless STEPS names some
    # the worker: this script in a process session of its own, which the end of the call does not kill
    launch=(setsid)
    command -v setsid >/dev/null || launch=($PY -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])')
    # caps on the steps before paper, so that one running away cannot eat the paper protocol's time
    # (the benchmarks write their results after every measurement: a capped one keeps what it measured)
    env MODE=worker STEPS="${chosen[*]}" OUT="$BG/out" STAGE="$BG/stage" DEADLINE_S="${WORKER_DEADLINE_S:-1750}" \
        TESTS_LIMIT_S="${TESTS_LIMIT_S:-240}" KERNELS_LIMIT_S="${KERNELS_LIMIT_S:-300}" \
        LOOP_LIMIT_S="${LOOP_LIMIT_S:-360}" LOADERS_LIMIT_S="${LOADERS_LIMIT_S:-180}" \
        "${launch[@]}" bash "$BG/repo/scripts/gpu_session.sh" </dev/null >"$BG/worker.log" 2>&1 &
    echo $! >"$BG/worker.pid"
    echo "[detach] worker pid $! runs: ${chosen[*]}"
    sleep 2
    attach
fi
# the worker leaves its exit status in $BG/done for attach
[ "$MODE" = worker ] && trap 'echo $? >"$BG/done"' EXIT

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

# step NAME COMMAND...: runs COMMAND with what is left of the deadline, its output in logs/NAME.log;
# returns COMMAND's status (1 when skipped for the deadline)
step() {
    local name=$1; shift
    local left=$((DEADLINE_S - (SECONDS - START)))
    if [ "$left" -lt 30 ]; then
        record "$name" skipped 0 "(only ${left}s left before DEADLINE_S=$DEADLINE_S; run it in another call)"
        return 1
    fi
    local cap_var=${name^^}_LIMIT_S  # e.g. KERNELS_LIMIT_S: a cap of the step's own, below the deadline
    cap_var=${cap_var//-/_}
    local cap=${!cap_var:-}
    [ -n "$cap" ] && [ "$cap" -lt "$left" ] && left=$cap
    say "$name: $* (at most ${left}s)"
    local t0=$SECONDS rc
    timeout -k 15 "$left" "$@" 2>&1 | tee "$STAGE/logs/$name.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 124 ] && say "$name: stopped at its time limit (${left}s)"
    record "$name" "$rc" $((SECONDS - t0))
    pack
    return "$rc"
}
skipped() { record "$1" skipped 0 "($2)"; }

say "steps: ${chosen[*]-none}${SKIP_GPU:+ (SKIP_GPU: setup only)}"

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
    say "setup: .carry/cifar10-jpeg.npz missing (run scripts/gpu_bundle.sh here and carry .carry); the benchmarks will skip"
fi

rm -rf "$SITE" /tmp/lf-src /tmp/lf-distutils
mkdir -p "$SITE" /tmp/lf-src
shopt -s nullglob
wheels=(.carry/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
    # only the wheels this interpreter can use (a cp312 wheel is skipped, not fatal, under another Python)
    mapfile -t fit < <($PY - "${wheels[@]}" <<'EOF'
import os, sys
try:
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename
except ImportError:
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import parse_wheel_filename
here = set(sys_tags())
for path in sys.argv[1:]:
    try:
        tags = parse_wheel_filename(os.path.basename(path))[3]
    except Exception as e:
        print(f"setup: skipping {path}: not a wheel's name ({e})", file=sys.stderr)
        continue
    if tags & here:
        print(path)
    else:
        print(f"setup: skipping {path}: made for {', '.join(sorted(map(str, tags)))}, not this Python "
              f"{sys.version_info[0]}.{sys.version_info[1]}", file=sys.stderr)
EOF
)
    if [ ${#fit[@]} -gt 0 ]; then
        $PY -m pip install -q --no-deps --no-index --no-compile --target "$SITE" "${fit[@]}" || setup_ok=0
        say "setup: installed ${fit[*]}"
    fi
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
export LURE_FAST_BETON_CACHE=${LURE_FAST_BETON_CACHE:-/tmp/lf-beton}
# ffcv's `from distutils.log import warn`: setuptools' shim serves it on Python >= 3.12 ('local' is its default)
export SETUPTOOLS_USE_DISTUTILS=${SETUPTOOLS_USE_DISTUTILS:-local}
if [ -d "$SITE/ffcv" ] && ! $PY -c 'import distutils.log' >/dev/null 2>&1; then
    mkdir -p /tmp/lf-distutils/distutils
    : >/tmp/lf-distutils/distutils/__init__.py
    printf 'from logging import debug, info, warning as warn, error, fatal\n' >/tmp/lf-distutils/distutils/log.py
    export PYTHONPATH="$PYTHONPATH:/tmp/lf-distutils"
    say "setup: no distutils here (no setuptools shim): a minimal distutils.log for ffcv in /tmp/lf-distutils"
fi
$PY - "$SITE" <<'EOF' || setup_ok=0
import importlib.metadata, os, sys
import torch
import lure_fast, lure_fast.kernels, lure_fast.loaders.backends.memory, lure_fast.train
site = os.path.realpath(sys.argv[1])
where = os.path.realpath(os.path.dirname(os.path.dirname(lure_fast.__file__)))
assert where == site, f"lure_fast imported from {where}, not {site}"
try:
    import ffcv, ffcv.libffcv, ffcv.loader  # noqa: F401
    has_ffcv = f"ffcv {importlib.metadata.version('ffcv')} from {os.path.dirname(ffcv.__file__)}"
except Exception as e:  # optional: only --loader ffcv, its tests and bench_loaders' ffcv rows need it
    has_ffcv = f"no ffcv ({type(e).__name__}: {e})"
print(f"imports ok: lure_fast from {lure_fast.__file__}, kernels {lure_fast.kernels.__file__}; torch {torch.__version__}, "
      f"cuda {torch.cuda.is_available()} {torch.cuda.get_device_name() if torch.cuda.is_available() else ''}; {has_ffcv}")
EOF
record setup $((1 - setup_ok)) $((SECONDS - t0))
if [ "$setup_ok" -ne 1 ]; then
    say "setup failed; see above"
    pack
    exit 1
fi

gpu_name=$($PY -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "")')
has_cuda=0
[ -n "$gpu_name" ] && has_cuda=1
[ "$has_cuda" = 1 ] || say "no CUDA device here: the GPU tests and benchmarks will report themselves skipped"

copy_results() {  # the result files this session wrote, into the tarball and (the tables) into $OUT
    for f in "$REPO"/benchmarks/results/$1-*; do
        [ "$f" -nt "$STAGE/.start" ] || continue
        cp "$f" "$STAGE/results/"
        case $f in *.md) cp "$f" "$OUT/" ;; esac
    done
    pack
}

compare_can_run() {  # NAME: whether the compare-based step NAME can run on $COMPARE_DEVICE here
    if [ "$COMPARE_DEVICE" = cuda ] && [ "$has_cuda" != 1 ]; then
        skipped "$1" "needs CUDA (COMPARE_DEVICE=cpu runs it on the CPU)"
        return 1
    fi
}

# compare_run NAME DIR METHODS PRESET RESUME ARGS: a lure-fast compare into DIR (continued when RESUME is set
# and DIR holds a run); its results.json files, table.md and curves.png go to the tarball's NAME/, the
# table also to $OUT/NAME-table.md
compare_run() {
    local name=$1 dir=$2 methods=$3 preset=$4 resume_asked=$5 args=$6 resume=--overwrite
    compare_can_run "$name" || return
    [ -n "$resume_asked" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ] && resume=--resume
    # shellcheck disable=SC2086  # args is a list of flags
    # --dataset cifar10: SPEC's normalisation constants and the name cifar10 (not the folder's cifar10-jpeg)
    step "$name" $PY -m lure_fast compare --methods "$methods" --dataset cifar10 --data "$CIFAR" --preset "$preset" \
        --device "$COMPARE_DEVICE" --out "$dir" --quiet $resume $args
    mkdir -p "$STAGE/$name"
    for m in ${methods//,/ }; do
        [ -f "$dir/$m/results.json" ] && cp "$dir/$m/results.json" "$STAGE/$name/$m-results.json"
    done
    if [ -f "$dir/table.md" ] && [ "$dir/table.md" -nt "$STAGE/.start" ]; then  # not an earlier call's
        cp "$dir/table.md" "$STAGE/$name/" && cp "$dir/table.md" "$OUT/$name-table.md"
    fi
    [ -f "$dir/curves.png" ] && cp "$dir/curves.png" "$STAGE/$name/"
    pack
}

run_jobs() {
    compare_can_run jobs || return
    rm -rf "$JOBS_DIR"
    local seq="$JOBS_DIR/sequential" conc="$JOBS_DIR/concurrent" common
    # shellcheck disable=SC2206  # JOBS_ARGS is a list of flags
    common=(-m lure_fast compare --methods "$JOBS_METHODS" --dataset cifar10 --data "$CIFAR" --device "$COMPARE_DEVICE" --quiet
            --overwrite $JOBS_ARGS)
    # on equal terms: the decoded CIFAR cache filled before either run, and each run compiling from its own
    # empty torch.compile / Triton caches (the first run would otherwise warm them for the second)
    local cmd_seq=(env "TORCHINDUCTOR_CACHE_DIR=$seq-cache/inductor" "TRITON_CACHE_DIR=$seq-cache/triton"
                   "$PY" "${common[@]}" --out "$seq" --jobs 1)
    local cmd_conc=(env "TORCHINDUCTOR_CACHE_DIR=$conc-cache/inductor" "TRITON_CACHE_DIR=$conc-cache/triton"
                    "$PY" "${common[@]}" --out "$conc" --jobs "$JOBS_CONCURRENT")
    step jobs-data $PY -c 'import os; from lure_fast.loaders import load_dataset
load_dataset(path=os.environ["LURE_FAST_CIFAR"])' || return
    # the ratio needs both: no concurrent run after a sequential one that failed or met the deadline
    step jobs-sequential "${cmd_seq[@]}" && step jobs-concurrent "${cmd_conc[@]}"
    step jobs-report $PY scripts/jobs_report.py --device "${gpu_name:-cpu}" \
        --run sequential "$seq" "${cmd_seq[*]}" --run concurrent "$conc" "${cmd_conc[*]}"
    mkdir -p "$STAGE/jobs"
    for d in "$seq" "$conc"; do
        [ -f "$d/table.md" ] && cp "$d/table.md" "$STAGE/jobs/$(basename "$d")-table.md"
    done
    copy_results compare-jobs
}

# ------------------------------------------------------------------ the steps
PYTEST=($PY -m pytest -q -rsx -p no:cacheprovider)
for s in "${chosen[@]}"; do
    if [ -n "${SKIP_GPU:-}" ]; then
        skipped "$s" SKIP_GPU
        continue
    fi
    flag="SKIP_${s^^}"
    if [ -n "${!flag:-}" ]; then
        skipped "$s" "$flag"
        continue
    fi
    # shellcheck disable=SC2086  # *_ARGS are lists of arguments
    case $s in
        tests)   # in TESTS_WORKERS (4) processes when pytest-xdist is there (it is on the GPU image)
                 workers=()
                 $PY -c 'import xdist' 2>/dev/null && workers=(-n "${TESTS_WORKERS:-4}")
                 step tests "${PYTEST[@]}" "${workers[@]}" -m gpu tests ${TESTS_ARGS:-} ;;
        kernels) step kernels "${PYTEST[@]}" benchmarks/bench_unlearn.py --benchmark-enable ${KERNELS_ARGS:-}
                 copy_results unlearn ;;
        loop)    step loop "${PYTEST[@]}" benchmarks/bench_train.py --benchmark-enable ${LOOP_ARGS:-}
                 copy_results train ;;
        loaders) step loaders "${PYTEST[@]}" benchmarks/bench_loaders.py --benchmark-enable ${LOADERS_ARGS:-}
                 copy_results loaders ;;
        paper)   compare_run paper "$PAPER_DIR" "$PAPER_METHODS" paper "${PAPER_RESUME:-}" "$PAPER_ARGS" ;;
        fast)    compare_run fast "$FAST_DIR" "$FAST_METHODS" fast "${FAST_RESUME:-}" "$FAST_ARGS" ;;
        jobs)    run_jobs ;;
    esac
done
for s in $ALL_STEPS; do
    case " ${chosen[*]-} " in *" $s "*) ;; *) skipped "$s" "not in STEPS" ;; esac
done
pack
say "done in $((SECONDS - START))s"
cat "$OUT/summary.txt"
exec >&- 2>&-
wait "$TEE" 2>/dev/null || true  # session.log complete before the call returns
