"""The command line under random input (hypothesis): every flag combination and value either runs or is
one line on stderr and exit 2, never a traceback.

Two properties. The first throws anything at the parser and the settings (random flags, values of every
type, text with line breaks, unknown flags, missing values) for ``run``, ``compare`` and ``evaluate`` (over
folders that hold no run), with the run
itself replaced by what it does before any compute: validation, the device, the folder's checks and
lock. The second runs random valid-looking settings for real, on a tiny stream of the embedded digits.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from lure_fast import cli
from lure_fast import config as C

# no shrinking: a failing command line is reported as drawn (shrinking real runs takes many minutes)
FUZZ = settings(max_examples=60, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
RUNS = settings(FUZZ, max_examples=10)

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
numbers = st.one_of(st.integers(-10, 10 ** 6).map(str), st.integers(-2 ** 70, 2 ** 70).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["nan", "inf", "-inf", "1e400", "0", "-0", "1_000", " 3 ", "0x10", ""]))


def value(f) -> st.SearchStrategy[str]:
    """Values for the flag of RunConfig field ``f``: its own choices and numbers around its range, and junk."""
    meta, good = f.metadata, []
    if meta["choices"] is not None:
        good.append(st.sampled_from(list(meta["choices"])))
    lo, hi = meta["range"][:2]
    if lo is not None or hi is not None:
        a, b = (lo if lo is not None else -10), (hi if hi is not None else (lo or 0) + 1000)
        good.append(st.floats(a - 1, b + 1).map(lambda x: f"{x:g}"))
        good.append(st.integers(int(a) - 2, int(b) + 2).map(str))
    if "tuple" in str(f.type):
        good.append(st.lists(st.integers(-3, 60), max_size=4).map(lambda v: ",".join(map(str, v))))
    if f.name == "data":
        good.append(st.sampled_from(["/nonexistent", ".", "", "/dev/null", "/proc/self"]))
    if not good:
        return st.one_of(numbers, text)
    # mostly plausible values, so that a command line gets past its first flag; junk one time in five
    return st.integers(0, 4).flatmap(lambda i: st.one_of(*good) if i else st.one_of(numbers, text))


def flag_tokens(f) -> st.SearchStrategy[list[str]]:
    flag = "--" + f.name.replace("_", "-")
    if "bool" in str(f.type):
        return st.sampled_from([[flag], ["--no-" + flag[2:]], [flag + "=1"]])
    return st.integers(0, 9).flatmap(lambda i: st.just([flag]) if i == 0  # a missing value
                                     else value(f).map(lambda v: [f"{flag}={v}"]) if i == 1
                                     else value(f).map(lambda v: [flag, v]))


EXTRA = {"--threads": st.one_of(st.integers(-2, 8).map(str), numbers, text),
         "--out": st.sampled_from(["o", "o/sub", "", ".", "x/../o"]),
         "--resume": st.just(None), "--overwrite": st.just(None), "--quiet": st.just(None)}
COMPARE = {"--methods": st.one_of(st.lists(st.sampled_from([*C.METHODS, "nope", ""]), max_size=3).map(",".join),
                                  text),
           "--jobs": st.one_of(st.integers(-1, 3).map(str), numbers),
           "--seeds": st.one_of(st.lists(st.integers(-2, 5), max_size=3).map(lambda v: ",".join(map(str, v))),
                                text)}


csv_numbers = st.lists(st.one_of(st.floats(-5, 300).map(lambda x: f"{x:g}"), st.sampled_from(["nan", "x", ""])),
                       max_size=4).map(",".join)
EVALUATE = {"--what": st.one_of(st.sampled_from(["all", "calibration", "pgd,flatness", "corruptions", "nope", ""]),
                                text),
            "--eps": st.one_of(csv_numbers, text), "--noise-scales": st.one_of(csv_numbers, text),
            "--draws": st.one_of(st.integers(-1, 4).map(str), numbers), "--noise": st.one_of(
                st.sampled_from(["relative", "absolute"]), text),
            "--pgd-images": st.one_of(st.integers(-2, 5).map(str), numbers),
            "--flat-images": st.one_of(st.integers(-2, 5).map(str), numbers),
            "--seed": numbers, "--threads": st.one_of(st.integers(-1, 3).map(str), numbers),
            "--device": st.sampled_from(["auto", "cpu", "cuda", "tpu"]), "--out": st.sampled_from(["e", ".", ""]),
            "--data": st.sampled_from(["/nonexistent", "."]), "--corruptions": st.sampled_from(["/nonexistent", "."])}


@st.composite
def evaluate_argvs(draw) -> list[str]:
    """``evaluate`` over folders that hold no run (or do not exist): every flag checked, nothing to compute."""
    argv = ["evaluate", *draw(st.lists(st.sampled_from([".", "nope", "a\nb", "", "sub"]), max_size=2))]
    for flag in draw(st.lists(st.sampled_from(sorted(EVALUATE)), max_size=5)):
        argv += [flag, draw(EVALUATE[flag])]
    return argv


@st.composite
def argvs(draw) -> list[str]:
    command = draw(st.sampled_from(["run"] * 4 + ["compare"] * 3 + ["evaluate"] * 2 + ["bogus", "", "--help-me"]))
    if command == "evaluate":
        return draw(evaluate_argvs())
    argv = [command] if command else []
    pool = [flag_tokens(f) for f in C.fields()]
    extras = {**EXTRA, **(COMPARE if command == "compare" else {})}
    pool += [v.map(lambda x, k=k: [k] if x is None else [k, x]) for k, v in extras.items()]
    for tokens in draw(st.lists(st.sampled_from(pool), max_size=7)):
        argv += draw(tokens)
    if draw(st.integers(0, 5)) == 0 and argv:  # now and then: an unknown flag, or a value where a flag should be
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["--epoch", "-x", "--", "7", "--lr-"])))
    return argv


@contextlib.contextmanager
def fresh_folder():
    """A temporary working folder (hypothesis calls the test many times: one folder per call)."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        try:
            yield d
        finally:
            os.chdir(here)


def outcome(argv: list[str]) -> tuple[int, str]:
    """``lure-fast ARGV`` in this process: its exit code and stderr. Anything escaping is a failure."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse
            code = e.code
    return code, err.getvalue()


def one_line_or_success(argv, code, err) -> None:
    """Exit 0, or exit 2 with one error line, the last (a run that fails part-way has printed its finished
    mega-batches' lines before it), and no traceback."""
    assert "Traceback" not in err, (argv, err)
    if code == 0:
        return
    assert code == 2, (argv, code, err)
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("lure-fast: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and err.endswith("\n"), (argv, err)
    assert all(line.startswith(("[", "lure-fast: warning: ")) for line in lines[:-1]), (argv, err)


@pytest.fixture
def no_compute(monkeypatch):
    """``run`` does what it does before any compute (validation, device, the folder's checks and lock) and
    stops there; ``compare`` stops once its folder is taken; neither changes torch's thread count."""
    from lure_fast import prepare, rundir
    from lure_fast import run as run_module

    def run(cfg, out, resume=False, overwrite=False, progress=True, label=None):
        C.validate(cfg)
        prepare.resolve_device(cfg.device)
        rundir.prepare_out(out, resume, overwrite).release()
        return {"summary": {"test_acc": 0.0, "cer": 0, "gen_gap": 0.0, "seconds": 0.0}}

    monkeypatch.setattr(run_module, "run", run)
    monkeypatch.setattr(cli, "_compare", lambda *a, **k: 0)
    monkeypatch.setattr(cli, "set_threads", cli.check_threads)


@FUZZ
@given(argv=argvs())
@example(argv=["run", "--epochs", "x"])  # argparse's own errors: one line too
@example(argv=["run", "--bogus"])
@example(argv=["run", "--epochs"])
@example(argv=["run", "--method", "a\nb"])  # a line break in a value stays on the line
@example(argv=["run", "--no-such\nflag"])
@example(argv=["evaluate", ".", "--what", "x\x85y\u2028z"])  # the line breaks str.splitlines() knows beside \n
@example(argv=["compare", "--jobs", "x", "--seeds", "1,,x"])
@example(argv=["run", "--lr", "nan"])
@example(argv=["run", "--data", "/nonexistent\n", "--resume"])
def test_any_command_line_runs_or_is_one_line_and_exit_2(no_compute, argv):
    with fresh_folder():
        code, err = outcome(argv)
    one_line_or_success(argv, code, err)


@st.composite
def tiny_runs(draw) -> list[str]:
    """Settings a user might try on the embedded digits, most of them valid, drawn across their ranges."""
    argv = ["run", "--preset", "tiny", "--quiet", "--threads", "1", "--out", "run",
            "--method", draw(st.sampled_from(list(C.METHODS))),
            "--megabatches", str(draw(st.integers(1, 3))), "--epochs", str(draw(st.integers(1, 2))),
            "--batch-size", str(draw(st.integers(1, 64))), "--width", str(draw(st.integers(1, 6))),
            "--seed", str(draw(st.integers(0, 2 ** 40)))]
    optional = {
        "--megabatch-size": st.integers(5, 700), "--replay": st.sampled_from(list(C.REPLAYS)),
        "--buffer-size": st.integers(0, 300), "--importance": st.sampled_from(list(C.IMPORTANCES)),
        "--reinit-fraction": st.floats(0.01, 0.99), "--importance-fraction": st.floats(0.01, 1.0),
        "--importance-batch-size": st.integers(1, 300), "--sp-lambda": st.floats(0, 1),
        "--sp-sigma": st.floats(0, 0.1), "--lr": st.floats(1e-4, 0.5), "--lr-gamma": st.floats(0.01, 1),
        "--warmup-epochs": st.floats(0, 3), "--momentum": st.floats(0, 0.99), "--weight-decay": st.floats(0, 0.01),
        "--eval-batch-size": st.integers(1, 2000), "--checkpoint-every": st.integers(0, 2),
        "--checkpoint-interval": st.floats(0, 1), "--precision": st.sampled_from(["auto", "fp32", "bf16"]),
        "--loader": st.sampled_from(["memory", "torch"]), "--stem": st.sampled_from(["cifar", "imagenet"]),
        "--reinit-scope": st.sampled_from(list(C.SCOPES)), "--importance-batches": st.sampled_from(list(C.SCOPES)),
        "--lr-milestones": st.lists(st.integers(1, 2), max_size=2).map(lambda v: ",".join(map(str, v))),
    }
    for flag in draw(st.lists(st.sampled_from(sorted(optional)), max_size=6, unique=True)):
        v = draw(optional[flag])
        argv += [flag, f"{v:g}" if isinstance(v, float) else str(v)]
    argv += draw(st.lists(st.sampled_from(["--augment", "--no-augment", "--reset-momentum", "--shuffle",
                                           "--no-shuffle"]), max_size=2, unique=True))
    return argv


@RUNS
@given(argv=tiny_runs())
@example(argv=["run", "--preset", "tiny", "--quiet", "--threads", "1", "--out", "run", "--method", "bl",
               "--megabatches", "1", "--epochs", "1", "--batch-size", "1", "--width", "1"])  # BatchNorm, one image
def test_random_settings_on_a_tiny_stream_run_or_are_one_line(argv):
    threads = torch.get_num_threads()
    try:
        with fresh_folder() as d:
            code, err = outcome(argv)
            one_line_or_success(argv, code, err)
            if code == 0:
                assert os.path.exists(os.path.join(d, "run", "results.json")), argv
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("argv,needle", [
    (["--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
    (["--sp-sigma", "inf"], "argument --sp-sigma: expected a finite number, got 'inf'"),
    (["--checkpoint-interval=-inf"], "argument --checkpoint-interval: expected a finite number"),
    (["--threads", "100000000000000"], "--threads 100000000000000: must be at most 4096"),
    (["--method", "x\ny"], "--method x\\ny: unknown"),
])
def test_values_that_pass_a_range_check_or_overflow_are_one_line(tmp_path, argv, needle):
    """nan passes every range check, inf most, and a thread count past 2^31 overflows inside torch: each is
    one line here, in a fresh process, before anything runs."""
    from lf_helpers import run_cli
    p = run_cli("run", "--preset", "tiny", "--quiet", *argv, "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and needle in p.stderr, p.stderr
    assert not (tmp_path / "o").exists()
