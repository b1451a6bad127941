"""The ``lure-fast`` command: ``run`` one method over a stream, or ``compare`` several on the same one."""
from __future__ import annotations

import argparse
import os
import sys
import time

from . import config as C

EPILOG = "Settings not given come from the preset (digits for the embedded data, paper otherwise)."


def _csv_ints(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def add_run_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and stream")
    g.add_argument("--dataset", help="digits (embedded, default) | cifar10 | cifar100 | a name for --data")
    g.add_argument("--data", help="folder: cifar-10-batches-py, cifar-100-python or an ImageFolder with train/ and test/")
    g.add_argument("--image-size", type=int, help="resize ImageFolder images to this square size")
    g.add_argument("--replay", help="full | none | buffer | window (default full)")
    g.add_argument("--megabatches", type=int, help="number of mega-batches t (paper: 8)")
    g.add_argument("--megabatch-size", type=int, help="samples per mega-batch (default: training set / t)")
    g.add_argument("--buffer-size", type=int, help="buffer replay: samples kept per mega-batch (paper 186)")
    g.add_argument("--shuffle", dest="shuffle", action="store_const", const=True,
                   help="permute the training set with the seed before cutting mega-batches (default for "
                        "ImageFolder trees and the digits)")
    g.add_argument("--no-shuffle", dest="shuffle", action="store_const", const=False,
                   help="cut mega-batches in the data's own order (default for torchvision's CIFAR folders, "
                        "as SPEC §1 and the authors' code)")
    g = p.add_argument_group("method")
    g.add_argument("--method", help="bl | lure | sp | llf | fc | cold")
    g.add_argument("--importance", help="LURE importance: snip | fim | magnitude | random")
    g.add_argument("--reinit-fraction", type=float, help="fraction of parameters LURE re-initialises (0.2)")
    g.add_argument("--reinit-scope", help="paper (conv/linear weights) | code (every *weight*, as the authors' code)")
    g.add_argument("--importance-batches", help="paper (all of pi) | code (the first batch of 100 only)")
    g.add_argument("--importance-fraction", type=float, help="size of pi as a fraction of the training set (0.2)")
    g.add_argument("--sp-lambda", type=float, help="shrink factor of S&P (paper 0.4)")
    g.add_argument("--sp-sigma", type=float, help="noise scale of S&P (paper 0.001)")
    g.add_argument("--reset-momentum", action="store_const", const=True, help="zero SGD momentum between mega-batches")
    g = p.add_argument_group("model and training")
    g.add_argument("--arch", help="resnet18 | resnet50 | wrn50_2 | vgg16_bn")
    g.add_argument("--width", type=int, help="channel width (64 = the standard network)")
    g.add_argument("--stem", help="cifar | imagenet")
    g.add_argument("--epochs", type=int, help="epochs per mega-batch (paper 50)")
    g.add_argument("--batch-size", type=int, help="training batch size (paper 64)")
    g.add_argument("--lr", type=float, help="learning rate, reset every mega-batch (0.1)")
    g.add_argument("--lr-milestones", type=_csv_ints, help="epochs where lr is multiplied by gamma (default 40%%,80%%)")
    g.add_argument("--warmup-epochs", type=float,
                   help="linear lr warm-up over the first N epochs of every mega-batch (paper 0, fast preset 5)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--momentum", type=float)
    g.add_argument("--no-augment", dest="augment", action="store_const", const=False)
    g = p.add_argument_group("execution")
    g.add_argument("--preset", help=f"one of {', '.join(C.PRESETS)}")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto | cpu | cuda")
    g.add_argument("--loader", help="auto (default: memory for the embedded data and on a GPU it fits; else ffcv "
                                    "when installed) | memory | torch | ffcv")
    g.add_argument("--precision", help="auto (bf16 on CUDA) | fp32 | bf16")
    g.add_argument("--compile", action="store_const", const=True,
                   help="torch.compile the model for full batches (default: on CUDA only)")
    g.add_argument("--no-compile", dest="compile", action="store_const", const=False, help="never compile")
    g.add_argument("--compile-mode", help="auto (reduce-overhead on CUDA) | default | reduce-overhead (CUDA graphs) "
                                          "| max-autotune | max-autotune-no-cudagraphs")
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--checkpoint-every", type=int, help="epochs between checkpoints (0: mega-batch ends only)")
    g.add_argument("--checkpoint-interval", type=float,
                   help="and at least this many seconds since the last checkpoint (default 30; 0: none), so "
                        "short GPU epochs do not wait for the disk; mega-batch ends always checkpoint")
    g.add_argument("--out", help="output folder (default runs/<command>-<time>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: every core; with --jobs J, cores/J)")


RUN_CONTROL = {"out", "resume", "overwrite", "quiet", "command", "methods", "func", "threads", "jobs", "seeds"}


def set_threads(n: int | None) -> None:
    import torch
    if n is not None:
        if n < 1:
            raise C.ConfigError(f"--threads {n}: must be at least 1")
        torch.set_num_threads(n)


def train_images(res: dict) -> int:
    """Training images a run pushed through the model (epochs x training-set size, summed)."""
    return sum(m["train_size"] for m in res["megabatches"]) * res["config"]["epochs"]


def _run_job(cfg_dict: dict, folder: str, resume: bool, overwrite: bool, label: str, threads: int) -> dict:
    """One method of ``compare --jobs``, in a worker process."""
    from .run import run
    set_threads(threads)
    cfg_dict = {**cfg_dict, "lr_milestones": tuple(cfg_dict["lr_milestones"])}
    return run(C.RunConfig(**cfg_dict), folder, resume=resume, overwrite=overwrite, progress=False, label=label)


def settings(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k not in RUN_CONTROL and v is not None}


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
    from .report import curves, summary, table
    from .run import prepare_out, run, write_json
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        C._choice("method", m, C.METHODS)
    if len(set(methods)) != len(methods):
        raise C.ConfigError(f"--methods {args.methods}: names a method twice")
    base = settings(args)
    if args.seeds is not None:
        if "seed" in base:
            raise C.ConfigError("--seed and --seeds both given; keep one (--seeds 0,1,2 runs every method per seed)")
        if not args.seeds or len(set(args.seeds)) != len(args.seeds):
            raise C.ConfigError(f"--seeds {','.join(map(str, args.seeds))}: give distinct seeds, e.g. --seeds 0,1,2")
    seeds = args.seeds or [C.resolve(base).seed]
    runs = [(m, s) for m in methods for s in seeds]
    cfgs = {(m, s): C.resolve({**base, "method": m, "seed": s}) for m, s in runs}  # validate all before any compute
    if args.jobs < 1:
        raise C.ConfigError(f"--jobs {args.jobs}: must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise C.ConfigError(f"--threads {args.threads}: must be at least 1")
    out = args.out or default_out("compare")
    prepare_out(out, args.resume, args.overwrite)

    def folder(m, s):  # one seed: DIR/<method>; several: DIR/<method>/seed-<s>
        return os.path.join(out, m) if len(seeds) == 1 else os.path.join(out, m, f"seed-{s}")

    def label(m, s):
        return m if len(seeds) == 1 else f"{m} seed {s}"

    def resume_of(key):  # a run killed before its first checkpoint starts afresh
        f = folder(*key)
        return args.resume and os.path.isdir(f) and bool(os.listdir(f))

    t0 = time.perf_counter()
    if args.jobs == 1:
        set_threads(args.threads)
        results = {k: run(cfgs[k], folder(*k), resume=resume_of(k), overwrite=args.overwrite,
                          progress=not args.quiet, label=label(*k)) for k in runs}
    else:  # each run in its own process: together they keep a GPU (or the cores) busy
        import concurrent.futures as cf
        import multiprocessing as mp
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
        with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {k: pool.submit(_run_job, cfgs[k].to_dict(), folder(*k), resume_of(k),
                                      args.overwrite, label(*k), threads) for k in runs}
            results = {k: f.result() for k, f in futures.items()}
    wall = time.perf_counter() - t0
    images = sum(train_images(r) for r in results.values())
    groups = {m: [results[(m, s)] for s in seeds] for m in methods}
    md = table(groups) + (f"\nWall time {wall:.1f} s for {len(runs)} runs ({args.jobs} at a time): "
                          f"{images / wall:,.0f} training images/s in aggregate.\n")
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(md)
    write_json(os.path.join(out, "summary.json"), {"seeds": seeds, "wall_seconds": wall, "jobs": args.jobs,
                                                   "training_images": images, "methods": summary(groups)})
    curves(groups, os.path.join(out, "curves.png"))
    print(md)
    print(f"table.md, summary.json and curves.png in {out}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lure-fast", description="Learn, Unlearn and Relearn (LURE) and its baselines.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one method over a stream of mega-batches", epilog=EPILOG)
    add_run_flags(r)
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("compare", help="run several methods on the same stream and tabulate them", epilog=EPILOG)
    c.add_argument("--methods", default="bl,lure,sp,llf", help="comma-separated methods (default bl,lure,sp,llf)")
    c.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (default 1)")
    c.add_argument("--seeds", type=_csv_ints, help="run every method with each seed (e.g. 0,1,2); the table "
                                                    "gives mean ± std (default: the one --seed)")
    add_run_flags(c)
    c.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .checkpoint import RunError
    from .loaders import DataError
    try:
        return args.func(args)
    except (C.ConfigError, DataError, RunError) as e:
        print(f"lure-fast: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lure-fast: interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
