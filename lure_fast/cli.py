"""The ``lure-fast`` command: ``run`` one method over a stream, or ``compare`` several on the same one."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

from . import config as C
from . import launch
from .methods import METHODS

EPILOG = "Settings not given come from the preset (digits for the embedded data, paper otherwise)."


def _csv_ints(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _finite(s: str) -> float:
    """A float flag's value: a number, and a finite one (``nan`` passes every range check, ``inf`` most)."""
    try:
        x = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {s!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    return x


MAX_THREADS = 4096


LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # every character str.splitlines() breaks at


def one_line(text: str) -> str:
    """``text`` on one line: line breaks (from a value given on the command line, say) shown escaped, ``\\n``."""
    return "".join(c.encode("unicode_escape").decode("ascii") if c in LINE_BREAKS else c for c in text)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``lure-fast: error: <what>; see lure-fast <command> --help``, exit 2."""

    def error(self, message: str):
        print(f"lure-fast: error: {one_line(message)}; see {self.prog} --help", file=sys.stderr)
        raise SystemExit(2)


def _flag_type(f):
    """The argparse type of a RunConfig field, from its annotation."""
    kind = str(f.type)
    if "tuple" in kind:
        return _csv_ints
    for name, t in (("int", int), ("float", _finite)):
        if kind.startswith(name):
            return t
    return str


def _flag(f) -> str:
    return "--" + f.name.replace("_", "-")


def _is_bool(f) -> bool:
    return "bool" in str(f.type)


def _help(f) -> str:
    """A flag's help from its declaration: what it does, and its default (where the flag has one)."""
    text = f.metadata["help"]
    if f.default is not None and not isinstance(f.default, bool):
        text += f"; default {f.default}"
    return text.replace("%", "%%")


def _metavar(f) -> str:
    choices = f.metadata["choices"]
    if choices is not None:
        return "{" + ",".join(choices) + "}"
    return {int: "N", _finite: "X", _csv_ints: "N,N"}.get(_flag_type(f), "VALUE" if f.name != "data" else "PATH")


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field, generated from its declaration (config.setting); every default is
    None, so a flag not given leaves the preset's or the config's value."""
    groups = {name: p.add_argument_group(name) for name in C.GROUPS}
    for f in C.fields():
        flag, g = _flag(f), groups[f.metadata["group"]]
        if _is_bool(f):
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=_help(f))
        else:
            g.add_argument(flag, dest=f.name, type=_flag_type(f), default=None, help=_help(f),
                           metavar=_metavar(f))
    g = p.add_argument_group("output")
    g.add_argument("--out", help="output folder (default runs/<command>-<time>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: every core; with --jobs J, cores/J)")


def check_threads(n: int | None) -> None:
    if n is not None and n < 1:
        raise C.ConfigError(f"--threads {n}: must be at least 1")
    if n is not None and n > MAX_THREADS:
        raise C.ConfigError(f"--threads {n}: must be at most {MAX_THREADS}")


def set_threads(n: int | None) -> None:
    import torch
    check_threads(n)
    if n is not None:
        torch.set_num_threads(n)


def train_images(res: dict) -> int:
    """Training images a run pushed through the model (epochs x training-set size, summed)."""
    return sum(m["train_size"] for m in res["megabatches"]) * res["config"]["epochs"]


def settings(args: argparse.Namespace) -> dict:
    """The RunConfig settings given on the command line."""
    names = {f.name for f in C.fields()}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def default_out(command: str) -> str:
    return os.path.join("runs", f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")


def cmd_run(args) -> int:
    from .run import run
    set_threads(args.threads)
    cfg = C.resolve(settings(args))
    out = args.out or default_out("run")
    res = run(cfg, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    s = res["summary"]
    print(f"{cfg.method}: test accuracy {s['test_acc']:.2f} %, CER {s['cer']}, gap {s['gen_gap']:.2f}, "
          f"{s['seconds']:.1f} s -> {os.path.join(out, 'results.json')}")
    return 0


def cmd_compare(args) -> int:
    from .rundir import prepare_out
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        C._choice("method", m, METHODS)
    if len(set(methods)) != len(methods):
        raise C.ConfigError(f"--methods {args.methods}: names a method twice")
    base = settings(args)
    if args.seeds is not None:
        if "seed" in base:
            raise C.ConfigError("--seed and --seeds both given; keep one (--seeds 0,1,2 runs every method per seed)")
        if not args.seeds or len(set(args.seeds)) != len(args.seeds):
            raise C.ConfigError(f"--seeds {','.join(map(str, args.seeds))}: give distinct seeds, e.g. --seeds 0,1,2")
    seeds = args.seeds or [C.resolve(base).seed]
    # every run's settings validated before any compute
    cfgs = {(m, s): C.resolve({**base, "method": m, "seed": s}) for m in methods for s in seeds}
    if args.jobs < 1:
        raise C.ConfigError(f"--jobs {args.jobs}: must be at least 1")
    check_threads(args.threads)
    launch.check(args)
    out = args.out or default_out("compare")
    lock = prepare_out(out, args.resume, args.overwrite)  # one compare per folder; each run locks its own
    try:
        return _compare(args, out, methods, seeds, cfgs)
    finally:
        lock.release()


def _compare(args, out: str, methods: list[str], seeds: list[int], cfgs: dict) -> int:
    from .checkpoint import atomic_write
    from .report import curves, summary, table
    from .rundir import run_entries, write_json
    runs = list(cfgs)

    def folder(m, s):  # one seed: DIR/<method>; several: DIR/<method>/seed-<s>
        return os.path.join(out, m) if len(seeds) == 1 else os.path.join(out, m, f"seed-{s}")

    def label(m, s):
        return m if len(seeds) == 1 else f"{m} seed {s}"

    def resume_of(key):  # a run killed before its first checkpoint starts afresh
        return args.resume and bool(run_entries(folder(*key)))

    finished = {k for k in runs if os.path.isfile(os.path.join(folder(*k), "results.json"))}  # skipped below
    t0 = time.perf_counter()
    jobs = {k: launch.Job(cfgs[k], folder(*k), label(*k), resume_of(k)) for k in runs}
    results = launch.run_all(args, jobs, out)  # --launcher: here, a pool of processes, SLURM or submitit-local
    wall = time.perf_counter() - t0
    launcher = getattr(args, "launcher", "local")
    how = {"local": f"{args.jobs} at a time", "slurm": "as SLURM jobs",
           "submitit-local": f"as submitit-local jobs, {args.jobs} at a time"}[launcher]
    images = sum(train_images(r) for k, r in results.items() if k not in finished)
    groups = {m: [results[(m, s)] for s in seeds] for m in methods}
    if len(finished) == len(runs):
        md = table(groups) + f"\nAll {len(runs)} runs were finished already: nothing trained now.\n"
    else:
        ran = len(runs) - len(finished)
        md = table(groups) + (f"\nWall time {wall:.1f} s for {ran} runs ({how}): "
                              f"{images / wall:,.0f} training images/s in aggregate"
                              f"{f'; {len(finished)} more were finished already' if finished else ''}.\n")
    atomic_write(os.path.join(out, "table.md"), md.encode())  # a full disk: one line, no half table
    write_json(os.path.join(out, "summary.json"), {"seeds": seeds, "wall_seconds": wall, "jobs": args.jobs,
                                                   "launcher": launcher, "training_images": images,
                                                   "methods": summary(groups)})
    curves(groups, os.path.join(out, "curves.png"))
    print(md)
    print(f"table.md, summary.json and curves.png in {out}")
    if args.evaluate:
        from .evaluate import evaluate
        set_threads(args.threads)
        evaluate([out], args.evaluate, out=out, data=args.data, quiet=args.quiet)
        print(f"eval.json and the evaluation figures in {out}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import EVAL_JSON, evaluate, parse_what, summary_line
    from .rundir import FolderLock
    set_threads(args.threads)
    what = parse_what(args.what)
    for flag, n in (("--pgd-images", args.pgd_images), ("--flat-images", args.flat_images),
                    ("--corruption-images", args.corruption_images)):
        if n < 0:
            raise C.ConfigError(f"{flag} {n}: must be 0 (all) or more")
    # one writer per folder: the folder eval.json and the figures go to (a run or compare folder in use, or
    # another evaluate's --out, is refused with the holder's pid); released when the command ends
    target = args.out or (args.dirs[0] if len(args.dirs) == 1 else None)
    if target is not None and (args.out is not None or os.path.isdir(target)):
        made = not os.path.isdir(target)
        try:
            os.makedirs(target, exist_ok=True)
        except OSError as e:
            raise C.ConfigError(f"--out {target}: cannot write there ({e.strerror}); pick a writable folder") from None
        FolderLock(target, made_folder=made, label=f"--out {target}" if args.out else target).claim()
    report = evaluate(args.dirs, what, out=args.out, data=args.data, corruptions=args.corruptions,
                      device=args.device, eps=args.eps, scales=args.noise_scales, draws=args.draws, seed=args.seed,
                      pgd_images=args.pgd_images or None, flat_images=args.flat_images or None,
                      corruption_images=args.corruption_images or None, quiet=True,
                      noise=args.noise)
    for r in report["runs"]:
        print(f"{r['method']} seed {r['seed']} ({r['folder']}): {summary_line(r)}")
    out = args.out or args.dirs[0]
    print(f"{EVAL_JSON} and {', '.join(os.path.basename(f) for f in report['figures'])} in {out}")
    return 0


def _csv_floats(s: str) -> list[float]:
    try:
        return [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def _what(s: str) -> list[str]:
    from .evaluate import EvalError, parse_what
    try:
        return parse_what(s)
    except EvalError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="lure-fast", description="Learn, Unlearn and Relearn (LURE) and its baselines.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    r = sub.add_parser("run", help="run one method over a stream of mega-batches", epilog=EPILOG)
    add_run_flags(r)
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("compare", help="run several methods on the same stream and tabulate them", epilog=EPILOG)
    c.add_argument("--methods", default="bl,lure,sp,llf", help="comma-separated methods (default bl,lure,sp,llf)")
    c.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (default 1)")
    c.add_argument("--seeds", type=_csv_ints, help="run every method with each seed (e.g. 0,1,2); the table "
                                                    "gives mean ± std (default: the one --seed)")
    c.add_argument("--evaluate", type=_what, metavar="WHAT", help="after training, run lure-fast evaluate on "
                   "the folder: all, or some of calibration,pgd,flatness,corruptions (docs/evaluate.md)")
    add_run_flags(c)
    launch.add_flags(c)
    c.set_defaults(func=cmd_compare)
    e = sub.add_parser("evaluate", help="evaluate trained runs: calibration, PGD, flatness, corruptions "
                                        "(docs/evaluate.md)")
    e.add_argument("dirs", nargs="+", metavar="RUN_DIR", help="run folders, or compare folders holding them")
    e.add_argument("--what", default="all", help="comma-separated: calibration,pgd,flatness,corruptions, or all "
                                                  "(default all)")
    e.add_argument("--data", metavar="PATH", help="the runs' data, where it moved since training")
    e.add_argument("--corruptions", metavar="PATH", help="the released CIFAR-10-C folder (<corruption>.npy, "
                                                          "labels.npy); default: generate from the test images")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    e.add_argument("--out", help="folder for eval.json and the figures (default: the one RUN_DIR given)")
    e.add_argument("--eps", type=_csv_floats, default=[0.5, 1, 2, 4, 8], metavar="E,E",
                   help="PGD strengths in /255 (default 0.5,1,2,4,8)")
    e.add_argument("--noise-scales", type=_csv_floats, default=[0, 0.05, 0.1, 0.2, 0.3, 0.5], metavar="S,S",
                   help="flatness: noise scales relative to each tensor's RMS (default 0,0.05,0.1,0.2,0.3,0.5)")
    e.add_argument("--draws", type=int, default=3, help="flatness: noise draws per scale (default 3)")
    e.add_argument("--noise", default="relative", choices=("relative", "absolute"),
                   help="flatness: sigma = scale x each tensor's RMS (relative, default) or sigma = scale")
    e.add_argument("--pgd-images", type=int, default=1000, help="test images attacked (0: all; default 1000)")
    e.add_argument("--corruption-images", type=int, default=0, help="images of each corruption and severity "
                                                                     "evaluated, the first N (0: all 10,000; default 0)")
    e.add_argument("--flat-images", type=int, default=2000,
                   help="training images of the last mega-batch for flatness (0: all; default 2000)")
    e.add_argument("--seed", type=int, default=0, help="seed of PGD's starts, the noise, generated corruptions")
    e.add_argument("--threads", type=int, help="CPU threads for torch (default: every core)")
    e.set_defaults(func=cmd_evaluate)
    rp = sub.add_parser("reproduce", help="a table or figure of the paper as one resumable command, our numbers "
                                          "beside the paper's (docs/reproduce.md)")
    rp.add_argument("name", help="table1 ... table9, fig2 ... fig6, or all")
    rp.add_argument("--scale", default="paper", help="paper (the protocol exactly), small (the small preset: a 2-core "
                                                     "CPU) or tiny (smoke tests, the embedded digits); default paper")
    rp.add_argument("--profile", default="paper", help="paper (the paper's text) or authors (the published code)")
    rp.add_argument("--seeds", type=_csv_ints, help="seeds of every run (default 0,1,2)")
    rp.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (default 1)")
    rp.add_argument("--data", metavar="PATH", help="CIFAR-10 (cifar-10-batches-py or an ImageFolder)")
    rp.add_argument("--data-cifar100", metavar="PATH", help="CIFAR-100 (cifar-100-python); its rows are listed "
                                                             "as not run without it")
    rp.add_argument("--data-rimagenet", metavar="PATH", help="the ImageNet folder (train/<wnid>, val/<wnid>) "
                                                              "Restricted ImageNet's 14 classes are read from at "
                                                              "32x32; its rows are listed as not run without it")
    rp.add_argument("--corruptions", metavar="PATH", help="the released CIFAR-10-C folder for Figure 2 (default: "
                                                          "generated from the test images)")
    rp.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    rp.add_argument("--out", default="runs/reproduce", help="folder of the runs, report.md and report.html (default "
                                                             "runs/reproduce)")
    rp.add_argument("--resume", action="store_true", help="accepted for symmetry: reproduce always skips "
                                                          "finished runs and resumes killed ones")
    rp.add_argument("--quiet", action="store_true", help="no progress bars")
    rp.add_argument("--threads", type=int, help="CPU threads for torch (default: every core; with --jobs J, "
                                                "cores/J)")
    launch.add_flags(rp)
    rp.set_defaults(func=cmd_reproduce)
    return p


def cmd_reproduce(args) -> int:
    from .reproduce import reproduce
    if args.jobs < 1:
        raise C.ConfigError(f"--jobs {args.jobs}: must be at least 1")
    check_threads(args.threads)
    launch.check(args)
    if args.profile not in C.PROFILES:
        raise C.ConfigError(f"--profile {args.profile}: unknown; choose one of {', '.join(C.PROFILES)}")
    return reproduce(args, _compare)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .checkpoint import RunError
    from .loaders import DataError
    from .rundir import FolderLock
    try:
        return args.func(args)
    except (C.ConfigError, DataError, RunError) as e:
        print(f"lure-fast: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lure-fast: interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130
    finally:  # a run that failed before its loop began still holds its folder's lock
        FolderLock.release_all()




def flags_markdown() -> str:
    """The run flags as a Markdown table (docs/cli.md holds it; a test keeps the two equal)."""
    rows = ["| flag | what it sets | default | paper | choices or range |", "|---|---|---|---|---|"]
    for group in C.GROUPS:
        rows.append(f"| **{group}** | | | | |")
        for f in C.fields():
            meta = f.metadata
            if meta["group"] != group:
                continue
            flag = _flag(f) + (f" / --no-{_flag(f)[2:]}" if _is_bool(f) else "")
            allowed = " \\| ".join(map(str, meta["choices"])) if meta["choices"] is not None else ""
            if meta["range"][:2] != (None, None):
                allowed = C.range_text(*meta["range"])
            cells = [f"`{flag}`", meta["help"].replace("|", "\\|"), "" if f.default is None else f"{f.default}",
                     "" if meta["paper"] is None else f"{meta['paper']}", allowed]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def presets_markdown() -> str:
    """The presets as a Markdown table: what each one changes from the defaults."""
    rows = ["| preset | changes from the defaults |", "|---|---|"]
    for name, values in C.PRESETS.items():
        changes = ", ".join(f"`--{k.replace('_', '-')} {v}`" for k, v in values.items()) or "none (SPEC §2 exactly)"
        rows.append(f"| `{name}` | {changes} |")
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- generated from lure_fast/config.py: begin -->", "<!-- generated: end -->"


def generated_docs() -> str:
    return f"{BEGIN}\n{flags_markdown()}\n{presets_markdown()}{END}"


def write_docs(path: str = "docs/cli.md") -> None:
    """Rewrite the generated part of ``path`` from the declarations (python -m lure_fast.cli docs)."""
    with open(path) as f:
        text = f.read()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(head + generated_docs() + tail)


if __name__ == "__main__":
    if sys.argv[1:] == ["docs"]:
        write_docs()
    else:
        sys.exit(main())
