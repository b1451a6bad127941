"""Restricted ImageNet (balanced), the third dataset of the LURE paper (A.2, citing Ilyas et al. 2019 and
Tsipras et al. 2019): 14 superclasses, each the union of 4-5 consecutive ImageNet classes, images
resized to 32x32 (``image_size`` keeps a larger size where wanted).

The grouping is ``BALANCED_RANGES``, inclusive ImageNet class-index ranges as used with the
``robustness`` library (its ``RestrictedImageNetBalanced`` / ``CustomImageNet``; the library's own
``RESTRICTED_IMAGNET_RANGES`` is the older, unbalanced 9-class grouping). ImageNet's class index is
the position of the class's WordNet id in the sorted list of the 1,000 wnid folders; ``WNIDS`` spells
out the 69 wnids the ranges cover, so a tree holding only those folders maps the same way. The paper
says "five subclasses each", but the grouping gives the monkeys four (371-374): 69, not 70. Checked
(2026-11-21) against a public copy of the ``RestrictedImageNetBalanced`` ranges and, wnid by wnid,
against the standard ``imagenet_class_index.json``.

Layout read: ``ROOT/train/<wnid>/*.JPEG`` and ``ROOT/val/<wnid>/*`` (or ``ROOT/test/<wnid>/``); folders
outside the grouping are ignored. Splits are file lists (``sources.FileSplit``), as for ImageFolder: the
``.beton`` writer decodes them file by file (224 px, ~13.5 GB, never needs to fit in RAM); where they are
decoded into memory the result is cached (``.npz`` in ``sources.decoded_cache_root``), keyed by the files'
names, sizes and mtimes and the image size, because decoding ~90k full-size JPEGs is the slow part.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError
from .sources import IMAGE_EXTENSIONS, Dataset, FileSplit, decoded_cache

SUPERCLASSES = ("bird", "turtle", "lizard", "spider", "crab", "dog", "cat", "big_cat", "beetle",
                "butterfly", "monkey", "fish", "fruit", "fungus")
BALANCED_RANGES = ((10, 14), (33, 37), (42, 46), (72, 76), (118, 122), (200, 204), (281, 285),
                   (286, 290), (302, 306), (322, 326), (371, 374), (393, 397), (948, 952), (992, 996))

# ImageNet class index -> WordNet id, for the 69 classes in BALANCED_RANGES
WNIDS = {
    10: "n01530575", 11: "n01531178", 12: "n01532829", 13: "n01534433", 14: "n01537544",      # finches, junco, bunting
    33: "n01664065", 34: "n01665541", 35: "n01667114", 36: "n01667778", 37: "n01669191",      # turtles
    42: "n01687978", 43: "n01688243", 44: "n01689811", 45: "n01692333", 46: "n01693334",      # lizards
    72: "n01773157", 73: "n01773549", 74: "n01773797", 75: "n01774384", 76: "n01774750",      # spiders
    118: "n01978287", 119: "n01978455", 120: "n01980166", 121: "n01981276", 122: "n01983481",  # crabs, lobster
    200: "n02097474", 201: "n02097658", 202: "n02098105", 203: "n02098286", 204: "n02098413",  # terriers, Lhasa
    281: "n02123045", 282: "n02123159", 283: "n02123394", 284: "n02123597", 285: "n02124075",  # domestic cats
    286: "n02125311", 287: "n02127052", 288: "n02128385", 289: "n02128757", 290: "n02128925",  # cougar .. jaguar
    302: "n02167151", 303: "n02168699", 304: "n02169497", 305: "n02172182", 306: "n02174001",  # beetles
    322: "n02277742", 323: "n02279972", 324: "n02280649", 325: "n02281406", 326: "n02281787",  # butterflies
    371: "n02486261", 372: "n02486410", 373: "n02487347", 374: "n02488291",                    # monkeys
    393: "n02607072", 394: "n02640242", 395: "n02641379", 396: "n02643566", 397: "n02655020",  # fish
    948: "n07742313", 949: "n07745940", 950: "n07747607", 951: "n07749582", 952: "n07753113",  # fruit
    992: "n12998815", 993: "n13037406", 994: "n13040303", 995: "n13044778", 996: "n13052670",  # fungi
}
NUM_IMAGENET_CLASSES = 1000


def superclass_of_index(class_index: int) -> int | None:
    """Superclass (0..13) of an ImageNet class index, or None when it is outside the grouping."""
    for s, (lo, hi) in enumerate(BALANCED_RANGES):
        if lo <= class_index <= hi:
            return s
    return None


def superclass_map(folders: list[str], root: str = "") -> dict[str, int]:
    """Map class-folder names (wnids) to superclasses; folders outside the grouping are left out.

    With all 1,000 ImageNet folders present, a folder's class index is its sorted position, and it
    must agree with ``WNIDS`` (else the tree is not standard ImageNet). With fewer folders, each
    folder is looked up in ``WNIDS``.
    """
    folders = sorted(folders)
    if len(folders) == NUM_IMAGENET_CLASSES:
        for i, wnid in WNIDS.items():
            if folders[i] != wnid:
                raise DataError(f"{root}: holds 1,000 class folders but folder {i} is '{folders[i]}', not ImageNet's "
                                f"'{wnid}'; pass the ImageNet train/val tree with one folder per wnid")
    by_wnid = {w: superclass_of_index(i) for i, w in WNIDS.items()}
    return {f: by_wnid[f] for f in folders if f in by_wnid}


def _list_split(root: str, expected: dict[str, int] | None) -> tuple[dict[str, int], list[tuple[str, int]]]:
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such folder; Restricted ImageNet needs train/ and val/ (or test/) wnid folders")
    folders = [e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)) and not e.startswith(".")]
    mapping = superclass_map(folders, root)
    missing = [SUPERCLASSES[s] for s in range(len(SUPERCLASSES)) if s not in mapping.values()]
    if missing:
        raise DataError(f"{root}: no class folder for superclass(es) {', '.join(missing)}; it needs the ImageNet wnid "
                        f"folders of {', '.join(WNIDS[lo] for lo, _ in BALANCED_RANGES[:2])}, ... (see WNIDS)")
    if expected is not None and mapping.keys() != expected.keys():
        only = sorted(set(mapping) ^ set(expected))
        raise DataError(f"{root}: its Restricted ImageNet class folders differ from train/'s ({', '.join(only[:4])}); "
                        "train and val must hold the same wnids")
    samples = []
    for wnid in sorted(mapping):
        folder = os.path.join(root, wnid)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(f"{folder}: class folder holds no images; add its images or remove the folder")
        samples += [(os.path.join(folder, f), mapping[wnid]) for f in files]
    return mapping, samples


def _read_split(root: str, expected, size: int, cache: Path | None, workers: int):
    mapping, samples = _list_split(root, expected)
    tag = f"restricted_imagenet-{os.path.basename(root)}-{size}px"
    return mapping, FileSplit(samples, size, root, cache, tag, workers)


def read_restricted_imagenet(path: str, image_size: int = 32, cache_dir: str | os.PathLike | None = None,
                             workers: int | None = None) -> Dataset:
    """Read Restricted ImageNet (balanced) from an ImageNet ImageFolder tree at ``path``.

    Returns a :class:`Dataset` with 14 classes (``SUPERCLASSES``); its splits are ``sources.FileSplit``
    objects (nothing is decoded here but each split's first file) of uint8 ``[N, image_size, image_size, 3]``
    images (each file decoded and resized, aspect not kept, with ``sources.decode_image``) and int64
    superclass labels, in (wnid, file name) order. ``val/`` (or ``test/``) becomes the test split.
    Unreadable files are skipped with a warning and counted in ``dataset.skipped`` once a split is decoded
    or written. Decoded splits are cached under ``cache_dir`` (default: ``$LURE_FAST_DECODED_CACHE`` or
    ~/.cache/lure-fast/decoded, as for ImageFolder; pass ``cache_dir=False`` to not cache).
    """
    if not os.path.isdir(path):
        raise DataError(f"--data {path}: no such folder; pass the ImageNet folder holding train/ and val/")
    if image_size < 8:
        raise DataError(f"Restricted ImageNet image size must be at least 8 pixels, got {image_size}")
    test_dir = next((os.path.join(path, d) for d in ("val", "test") if os.path.isdir(os.path.join(path, d))), None)
    if test_dir is None:
        raise DataError(f"--data {path}: no val/ (or test/) folder; ImageNet's validation images must sit in "
                        "val/<wnid>/ class folders")
    cache = decoded_cache(cache_dir)
    workers = workers or len(os.sched_getaffinity(0))
    mapping, train = _read_split(os.path.join(path, "train"), None, image_size, cache, workers)
    _, test = _read_split(test_dir, mapping, image_size, cache, workers)
    for split in (train, test):  # a split without one readable file: one error now, not at its first use
        split.first()
    name = "restricted_imagenet" if image_size == 32 else f"restricted_imagenet{image_size}"
    return Dataset(name, "restricted_imagenet", train, test, list(SUPERCLASSES), os.path.abspath(path),
                   {"wnids": dict(sorted(mapping.items())),
                    "ranges": BALANCED_RANGES, "image_size": image_size})
