"""File-system moves that never lose the user's work."""

from __future__ import annotations

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
