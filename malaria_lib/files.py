"""File-system writes and moves that never lose the user's work, even when the process is killed midway."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import MalariaError


def move_aside(folder: str | Path) -> Path:
    """Rename FOLDER to FOLDER.stale-TIMESTAMP beside it and return the new path: a split or a training run made
    with other settings is kept (it may hold hours of GPU time), while its place is freed for the new one."""
    folder = Path(folder)
    target = folder.with_name(f"{folder.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        folder.rename(target)
    except OSError as exc:
        raise MalariaError(f"Cannot move {folder} aside ({exc.strerror}); move or delete it yourself, "
                           "then run again.") from None
    return target


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write PATH through a temporary file beside it and rename it into place: a kill leaves the old file or the
    new one, never half of one (a rename within a folder is atomic)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)
    return path


def save_model_atomic(model, path: str | Path) -> Path:
    """`model.save(PATH)` through a temporary `.keras` file beside it, renamed into place when complete: Keras
    writes a `.keras` zip where it stands, so a kill during the save would leave a truncated checkpoint."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial.keras")  # Keras wants the .keras suffix
    model.save(partial)
    os.replace(partial, path)
    return path


def remove_partials(folder: str | Path) -> None:
    """Delete what a killed write left behind (`.NAME.partial*`); the files they were meant to replace are intact."""
    for partial in Path(folder).glob(".*.partial*"):
        partial.unlink(missing_ok=True)
