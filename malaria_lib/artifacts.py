"""A trained model on disk: the `.keras` file and its card, the JSON beside it that says how to use it.

The card holds the input size and resizing the network was trained with, its decision threshold
(chosen on validation cells) and its patient screening rule (chosen on validation patients), so
that every later use of the model (evaluation, screening, prediction, export) feeds and judges it
the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras

from . import models  # noqa: F401  (registers CellStandardization, which loading a saved network needs)
from .errors import MalariaError
from .files import write_text_atomic


def load_model(path: str | Path) -> keras.Model:
    """Load a `.keras` file, with one clear sentence when it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise MalariaError(f"The model file {path} does not exist; check the path or train a model first.")
    try:
        # compile=False: inference needs no optimizer, and one saved under mixed precision would only be
        # skipped with a warning (training resumes through _restore instead)
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged zip or config
        raise MalariaError(
            f"The model file {path} cannot be read ({type(exc).__name__}); it is damaged or not a Keras 3 "
            ".keras file: delete it, or retrain."
        ) from None


def card_path(model_path: str | Path) -> Path:
    """The JSON beside a `.keras` file that says how to feed it and where its threshold lies."""
    return Path(model_path).with_suffix(".json")


def read_card(model_path: str | Path, model: keras.Model | None = None) -> dict:
    """The model card; without one, defaults read off the model itself (input size, threshold 0.5), marked
    `"threshold_from": "default"` so that every caller can say so. A card that exists but cannot be read is an
    error naming it: defaults never stand in silently for a broken file."""
    path = card_path(model_path)
    if not path.exists():
        size = int(model.input_shape[1]) if model is not None else 96
        return {"input_size": size, "resize": "bilinear", "threshold": 0.5, "threshold_from": "default"}
    try:
        card = json.loads(path.read_text())
        float(card["threshold"])
        int(card["input_size"])
    except (OSError, ValueError, TypeError, KeyError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise MalariaError(f"The model card {path} cannot be read ({reason}); restore it (or train again), or "
                           "delete it to use the defaults (threshold 0.5).") from None
    return card


def write_card(model_path: str | Path, card: dict) -> Path:
    """Write the card beside the model, atomically (a kill leaves the old card or the new one)."""
    return write_text_atomic(card_path(model_path), json.dumps(card, indent=1))
