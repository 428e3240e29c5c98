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

from .errors import MalariaError


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
    """The model card, or defaults read off the model itself (input size, threshold 0.5)."""
    try:
        return json.loads(card_path(model_path).read_text())
    except (OSError, ValueError):
        size = int(model.input_shape[1]) if model is not None else 96
        return {"input_size": size, "resize": "bilinear", "threshold": 0.5, "threshold_from": "default"}


def write_card(model_path: str | Path, card: dict) -> Path:
    path = card_path(model_path)
    path.write_text(json.dumps(card, indent=1))
    return path
