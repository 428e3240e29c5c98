"""What a data folder holds: images and patients per class, image sizes, skipped files."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import config
from .errors import MalariaError
from .patients import patient_id


@dataclass
class CellRecord:
    """One cell image: where it is, its label and its patient (None when the name carries no key)."""

    path: Path
    label: str
    patient: str | None


def cell_dir_of(data_dir: str | Path, require_all: bool = True) -> Path:
    """Accept either DATA_DIR (holding cell_images/) or the cell_images folder itself.

    Training needs both class folders; scoring new cells (`require_all=False`) needs one.
    """
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise MalariaError(f"The data folder {data_dir} does not exist; run `malaria fetch` first or check --data-dir.")
    found = all if require_all else any
    for candidate in (data_dir / "cell_images", data_dir):
        if found((candidate / c).is_dir() for c in config.CLASSES):
            return candidate
    missing = [c for c in config.CLASSES if not (data_dir / "cell_images" / c).is_dir() and not (data_dir / c).is_dir()]
    raise MalariaError(
        f"{data_dir} has no {' or '.join(missing)} folder; it must hold cell_images/Parasitized and "
        "cell_images/Uninfected (run `malaria fetch` first)."
    )


def list_cells(data_dir: str | Path, require_all: bool = True) -> tuple[list[CellRecord], list[dict[str, str]]]:
    """Every PNG cell of a folder in the NIH layout, sorted, and the files that are not cells."""
    cell_dir = cell_dir_of(data_dir, require_all)
    cells: list[CellRecord] = []
    skipped: list[dict[str, str]] = []
    for label in config.CLASSES:
        if not (cell_dir / label).is_dir():
            continue
        for path in sorted((cell_dir / label).iterdir()):
            if path.is_file() and path.suffix.lower() in config.IMAGE_SUFFIXES:
                cells.append(CellRecord(path, label, patient_id(path.name)))
            elif path.name != config.FETCH_MARKER:
                skipped.append({"path": str(path.relative_to(cell_dir.parent)), "reason": "not a .png file"})
    if not cells:
        raise MalariaError(f"{cell_dir} holds no PNG cell image; check the folder.")
    for label in config.CLASSES if require_all else ():
        if not any(c.label == label for c in cells):
            raise MalariaError(f"The {label} folder in {cell_dir} holds no PNG image; fetch the data again.")
    return cells, skipped


@dataclass
class Inventory:
    """Counts worth checking before training on a folder of cells."""

    data_dir: str
    classes: dict[str, int]
    patients: int
    patients_per_class: dict[str, int]
    patients_without_key: int
    sizes: dict[str, dict[str, float]]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)

    def summary(self) -> str:
        lines = [f"Cells in {self.data_dir}:"]
        for label, n in self.classes.items():
            lines.append(f"  {label:<12} {n:>6,} images from {self.patients_per_class[label]:>3} patients")
        lines.append(f"  {'total':<12} {sum(self.classes.values()):>6,} images from {self.patients:>3} patients")
        if self.patients_without_key:
            lines.append(f"  {self.patients_without_key} images carry no patient key in their file name")
        w, h = self.sizes["width"], self.sizes["height"]
        lines.append(
            f"  image width {w['min']:.0f}-{w['max']:.0f} px (median {w['median']:.0f}), "
            f"height {h['min']:.0f}-{h['max']:.0f} px (median {h['median']:.0f})"
        )
        reasons = Counter(s["reason"] for s in self.skipped)
        lines.append(f"  skipped {len(self.skipped)} files" + (f": {dict(reasons)}" if reasons else ""))
        return "\n".join(lines)


def take_inventory(data_dir: str | Path) -> Inventory:
    """Count images, patients and sizes; include what `fetch` skipped on the way in."""
    cells, skipped = list_cells(data_dir)
    cell_dir = cell_dir_of(data_dir)
    try:
        fetched = json.loads((cell_dir / config.FETCH_MARKER).read_text())
        skipped = fetched.get("skipped", []) + skipped
    except (OSError, ValueError):
        pass
    widths, heights = [], []
    for cell in cells:
        try:
            with Image.open(cell.path) as image:  # reads the header only
                widths.append(image.width)
                heights.append(image.height)
        except (UnidentifiedImageError, OSError):
            skipped.append({"path": str(cell.path), "reason": "does not decode as an image"})

    def stats(values: list[int]) -> dict[str, float]:
        a = np.asarray(values or [0])
        return {"min": int(a.min()), "median": float(np.median(a)), "mean": round(float(a.mean()), 1),
                "max": int(a.max()), "p05": float(np.percentile(a, 5)), "p95": float(np.percentile(a, 95))}

    per_class = {c: sum(1 for x in cells if x.label == c) for c in config.CLASSES}
    patients_per_class = {c: len({x.patient for x in cells if x.label == c and x.patient}) for c in config.CLASSES}
    return Inventory(
        data_dir=str(data_dir),
        classes=per_class,
        patients=len({x.patient for x in cells if x.patient}),
        patients_per_class=patients_per_class,
        patients_without_key=sum(1 for x in cells if x.patient is None),
        sizes={"width": stats(widths), "height": stats(heights)},
        skipped=skipped,
    )
