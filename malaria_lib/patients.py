"""Patient identity of a cell, from its file name or from NIH's mapping CSVs.

The slide key is the part of the name before `_IMG_`; the patient is its C-number, because one
infected patient (C47P8) was imaged on two microscopes and so has two slide keys.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .errors import MalariaError

_PATIENT = re.compile(r"^C(\d+)")


def slide_key(filename: str) -> str | None:
    """`C33P1thinF_IMG_20150619_114756a_cell_179.png` -> `C33P1thinF`; None without `_IMG_`."""
    name = Path(filename).name
    key, sep, _ = name.partition("_IMG_")
    return key if sep and key else None


def patient_id(filename: str) -> str | None:
    """The patient (C-number, e.g. `C33`) a cell image belongs to, or None if the name has no key."""
    key = slide_key(filename)
    if key is None:
        return None
    match = _PATIENT.match(key)
    return f"C{int(match.group(1))}" if match else None


def is_infected_key(key: str) -> bool:
    """Infected patients' slide keys carry a `P` number after the C-number (C33P1thinF); healthy ones do not."""
    return re.match(r"^C\d+A?P\d+", key) is not None


def read_patient_csv(path: str | Path) -> dict[str, str]:
    """Read one NIH mapping CSV (`key,['file.png', ...],,,`) into {file name: patient id}."""
    path = Path(path)
    mapping: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MalariaError(f"Cannot read the patient mapping file {path} ({exc}); check the path.") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(",")
        rest = rest.rstrip().rstrip(",")
        try:
            names = ast.literal_eval(rest) if sep else None
        except (ValueError, SyntaxError):
            names = None
        match = _PATIENT.match(key.strip())
        if not isinstance(names, list) or match is None:
            raise MalariaError(
                f"Line {number} of {path} is not in NIH's format `key,['file.png', ...]`; "
                "give the original patientid_cellmapping CSV."
            )
        pid = f"C{int(match.group(1))}"
        for name in names:
            mapping[str(name)] = pid
    return mapping
