"""Named subsets of the NIH archive that anyone can rebuild from it: which patients, and a manifest checksum.

The `dev` subset is the 60 patients (8,708 cells) on which this project's reference figures were measured.
It is defined by its patients' C-numbers; the checksum covers every cell's class, file name and bytes, so a
subset rebuilt from an archive that differs in one file is refused instead of silently measuring other cells.
`malaria fetch --subset dev` uses it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import config
from .errors import MalariaError, UsageError
from .patients import patient_id

FOLDER = Path(__file__).parent / "subsets"


def subset_names() -> list[str]:
    """The subsets shipped with the package."""
    return sorted(p.stem for p in FOLDER.glob("*.json"))


def read_subset(name_or_path: str | Path) -> dict:
    """A shipped subset by name (`dev`), or a subset file (JSON with `patients` and `manifest_sha256`)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = FOLDER / f"{name_or_path}.json"
        if not path.is_file():
            raise UsageError(f"Unknown subset '{name_or_path}'; choose one of: {', '.join(subset_names())}.")
    try:
        subset = json.loads(path.read_text())
        subset["patients"] = set(subset["patients"])
        subset["manifest_sha256"] = str(subset["manifest_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        raise MalariaError(f"The subset file {path} cannot be read; it needs 'patients' and 'manifest_sha256'.") from None
    return subset


def in_subset(filename: str, subset: dict) -> bool:
    """Whether a cell image belongs to one of the subset's patients (by the C-number in its name)."""
    return patient_id(filename) in subset["patients"]


def manifest_sha256(cell_dir: str | Path) -> str:
    """One checksum over every cell of CELL_DIR: sorted lines of class, file name and the file's sha256."""
    cell_dir = Path(cell_dir)
    lines = []
    for label in config.CLASSES:
        for path in sorted((cell_dir / label).glob("*.png")):
            lines.append(f"{label}/{path.name}\t{hashlib.sha256(path.read_bytes()).hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def describe_subset(cell_dir: str | Path, name: str, description: str) -> dict:
    """The definition of the subset that CELL_DIR holds (how `subsets/dev.json` was made from the dev zip)."""
    cell_dir = Path(cell_dir)
    counts = {label: len(list((cell_dir / label).glob("*.png"))) for label in config.CLASSES}
    patients = {patient_id(p.name) for label in config.CLASSES for p in (cell_dir / label).glob("*.png")}
    return {"name": name, "description": description, "cells": sum(counts.values()), "classes": counts,
            "patients": sorted(p for p in patients if p), "manifest_sha256": manifest_sha256(cell_dir)}
