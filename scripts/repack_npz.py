#!/usr/bin/env python3
"""Rewrite an uncompressed .npz as a compressed one (np.savez_compressed) holding exactly the same arrays,
and check that it does.

    repack_npz.py SRC DST

The CIFAR-10 JPEG copy (``../shared/data/cifar10-jpeg.npz``, packed by ``pack_imagefolder.py``) is stored
without compression, and its 60,000 small JPEG files share ~600-byte headers: deflated, it takes about a
third of the room, which leaves space in the GPU machine's 64 MiB working tree for the FFCV wheel. The JPEG
bytes are not touched (deflate is lossless), and ``np.load`` -- so ``pack_imagefolder.py unpack`` -- reads
the result unchanged.

After writing, DST is read back and every array compared with SRC's (same names, dtypes, shapes, values);
on any difference DST is deleted and the exit status is 1, with the differences named. Only plain arrays
(no pickled objects) are read or written.
"""
from __future__ import annotations

import os
import sys

import numpy as np


class RepackError(RuntimeError):
    """DST does not hold the same arrays as SRC."""


def differences(a: str, b: str) -> list[str]:
    """What differs between the arrays of the .npz files ``a`` and ``b`` (empty when they hold the same
    names, each with the same dtype, shape and values)."""
    with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
        na, nb = set(za.files), set(zb.files)
        out = [f"{name}: only in {a}" for name in sorted(na - nb)]
        out += [f"{name}: only in {b}" for name in sorted(nb - na)]
        for name in sorted(na & nb):
            x, y = za[name], zb[name]
            if x.dtype != y.dtype:
                out.append(f"{name}: dtype {x.dtype} != {y.dtype}")
            elif x.shape != y.shape:
                out.append(f"{name}: shape {x.shape} != {y.shape}")
            elif not np.array_equal(x, y):
                out.append(f"{name}: values differ ({int(np.count_nonzero(x != y))} of {x.size} elements)")
    return out


def write_compressed(src: str, dst: str) -> None:
    """``dst`` := np.savez_compressed of every array of ``src``, names unchanged."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    tmp = dst + ".tmp.npz"  # savez adds .npz to a name without it
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, dst)


def repack(src: str, dst: str) -> dict:
    """Write ``dst`` compressed from ``src`` and verify it; raises RepackError (``dst`` removed) when an
    array differs. Returns the two sizes in bytes."""
    if os.path.abspath(src) == os.path.abspath(dst):
        raise RepackError(f"{src}: SRC and DST are the same file")
    write_compressed(src, dst)
    diff = differences(src, dst)
    if diff:
        os.remove(dst)
        raise RepackError(f"{dst} does not hold the arrays of {src}; removed it:\n  " + "\n  ".join(diff))
    return {"src_bytes": os.path.getsize(src), "dst_bytes": os.path.getsize(dst)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = argv
    try:
        sizes = repack(src, dst)
    except (RepackError, OSError, ValueError) as e:
        print(f"repack_npz: {e}", file=sys.stderr)
        return 1
    s, d = sizes["src_bytes"], sizes["dst_bytes"]
    print(f"repack_npz: {src} ({s / 2**20:.1f} MiB) -> {dst} ({d / 2**20:.1f} MiB, {100 * d / s:.0f} %); "
          "every array checked equal (names, dtypes, shapes, values)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
