"""A folder the size of the NIH archive (27,558 cells) made from a smaller one in its layout, to time at full size.

The full archive is not on this machine (no internet), but the dev subset is: its cells are repeated, each copy
under new patient numbers (copy k turns patient C33 into C{33 + 1000 k}), until the folder holds as many cells
as the archive, class balance kept by taking whole patients of each class in turn for the last, partial copy.
Files are hard links where the file system allows (copies otherwise), so the folder costs no disk.

What it is good for: time. Decoding, caching, shuffling and training steps cost the same per cell as on the real
archive (same cells, same sizes). What it is not good for: accuracy. A copy of a cell is the same picture under
another patient, so a patient split puts duplicates on both sides.

    python benchmarks/full_size_folder.py --source data/dev --out /tmp/full_size [--zip /tmp/full_size.zip]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

NIH_CELLS = 27_558
CLASSES = ("Parasitized", "Uninfected")
_KEY = re.compile(r"^C(\d+)")


def renamed(name: str, copy: int) -> str:
    """C33P1thinF_IMG_... -> C1033P1thinF_IMG_... for copy 1: the same cell under another patient number."""
    return _KEY.sub(lambda m: f"C{int(m.group(1)) + 1000 * copy}", name, count=1) if copy else name


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copyfile(src, dst)


def build(source: Path, out: Path, cells: int = NIH_CELLS) -> dict[str, int]:
    """Fill OUT/cell_images with CELLS cells from SOURCE/cell_images; returns the count per class."""
    by_class = {c: sorted(p for p in (source / "cell_images" / c).glob("*.png")) for c in CLASSES}
    total = sum(len(v) for v in by_class.values())
    if total == 0:
        sys.exit(f"{source}/cell_images holds no PNG cells; point --source at a fetched folder in the NIH layout.")
    if (out / "cell_images").exists():
        sys.exit(f"{out}/cell_images exists already; remove it or choose another --out.")
    counts = dict.fromkeys(CLASSES, 0)
    copy = 0
    while sum(counts.values()) < cells:
        missing = cells - sum(counts.values())
        # a whole copy while it fits; the last copy takes each class's share of what is missing
        first = len(by_class[CLASSES[0]]) if missing >= total else round(missing * len(by_class[CLASSES[0]]) / total)
        for label, share in zip(CLASSES, (first, min(len(by_class[CLASSES[1]]), missing - first)), strict=True):
            target = out / "cell_images" / label
            target.mkdir(parents=True, exist_ok=True)
            for path in by_class[label][:share]:
                _link(path, target / renamed(path.name, copy))
            counts[label] += share
        copy += 1
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="a folder holding cell_images/ (e.g. data/dev)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=NIH_CELLS)
    parser.add_argument("--zip", type=Path, help="also pack the folder as a zip in the NIH layout (stored, not deflated)")
    args = parser.parse_args(argv)
    counts = build(args.source, args.out, args.cells)
    print(f"{args.out}/cell_images: {counts['Parasitized']:,} Parasitized, {counts['Uninfected']:,} Uninfected")
    if args.zip:
        with zipfile.ZipFile(args.zip, "w", zipfile.ZIP_STORED) as archive:
            for path in sorted((args.out / "cell_images").rglob("*.png")):
                archive.write(path, path.relative_to(args.out).as_posix())
        print(f"packed into {args.zip} ({args.zip.stat().st_size / 2**20:.0f} MB)")


if __name__ == "__main__":
    main()
