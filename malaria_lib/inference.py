"""Scores from a trained model: P(Parasitized) for the cells of a split part or a folder.

Every image is resized the way the model's card says it was trained; test-time augmentation
averages the eight flips and right-angle rotations of each cell.
"""

from __future__ import annotations

import keras
import numpy as np

from .config import POSITIVE
from .pipeline import SplitPart, load_images


def predict_proba(model: keras.Model, part: SplitPart, card: dict, tta: bool = False, batch_size: int = 128) -> np.ndarray:
    """P(Parasitized) for every cell; any image size is resized to the model's input.

    With `tta`, the score is the mean over the eight flips and right-angle rotations of the cell,
    which a cell (it has no up or down) should not care about.
    """
    size = int(model.input_shape[1])
    images = load_images(part.paths, size, card.get("resize", "bilinear")).astype(np.float32) / 255.0
    if not tta:
        return model.predict(images, batch_size=batch_size, verbose=0)[:, POSITIVE]
    views = []
    for k in range(4):
        rotated = np.rot90(images, k, axes=(1, 2))
        views.append(model.predict(rotated, batch_size=batch_size, verbose=0)[:, POSITIVE])
        views.append(model.predict(rotated[:, :, ::-1], batch_size=batch_size, verbose=0)[:, POSITIVE])
    return np.mean(views, axis=0)
