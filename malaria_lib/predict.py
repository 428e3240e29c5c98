"""Scoring image files one by one: a label and a probability each, and a clear word on files that are not images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from . import config
from .artifacts import read_card
from .config import POSITIVE
from .errors import MalariaError
from .images import NotAnImage, decode_rgb
from .pipeline import resize_uint8


@dataclass
class Prediction:
    path: str
    label: str | None
    probability: float | None  # P(Parasitized)
    error: str | None = None


def expand_paths(items: list[str]) -> list[Path]:
    """Files as given; folders contribute their PNGs (recursively, sorted)."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in config.IMAGE_SUFFIXES))
        else:
            paths.append(path)
    return paths


def predict_files(model: keras.Model, model_path: str | Path, items: list[str], chunk: int = 256) -> list[Prediction]:
    """Score every readable image; unreadable or missing ones get an error instead of stopping the rest.

    Images are decoded and scored CHUNK at a time, so memory does not grow with the number of files.
    """
    card = read_card(model_path, model)
    size = int(model.input_shape[1])
    threshold = float(card.get("threshold", 0.5))
    results: list[Prediction] = []
    waiting: list[tuple[int, np.ndarray]] = []

    def score(batch: list[tuple[int, np.ndarray]]) -> None:
        scores = model.predict(np.stack([image for _, image in batch]).astype(np.float32) / 255.0, verbose=0)
        for (i, _), value in zip(batch, scores[:, POSITIVE], strict=True):
            results[i].probability = float(value)
            results[i].label = config.POSITIVE_CLASS if value >= threshold else config.CLASSES[1 - POSITIVE]

    for path in expand_paths(items):
        if not path.is_file():
            results.append(Prediction(str(path), None, None, "no such file"))
            continue
        try:
            image, _ = decode_rgb(path.read_bytes())  # any format and mode Pillow reads, as RGB
        except NotAnImage as exc:
            results.append(Prediction(str(path), None, None, str(exc)))
            continue
        waiting.append((len(results), resize_uint8(np.asarray(image), size, card.get("resize", "bilinear")).numpy()))
        results.append(Prediction(str(path), None, None))
        if len(waiting) == chunk:
            score(waiting)
            waiting = []
    if not results:
        raise MalariaError("No image files were given; pass PNG files or folders holding them.")
    if waiting:
        score(waiting)
    return results
