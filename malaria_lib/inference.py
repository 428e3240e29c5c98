"""Scores from a trained model: P(Parasitized) for the cells of a split part or a folder.

Every image is resized the way the model's card says it was trained; test-time augmentation
averages the eight flips and right-angle rotations of each cell.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from .config import POSITIVE
from .pipeline import AUTOTUNE, SplitPart, decode_image


def cell_batches(paths: list[str], size: int, resize: str = "bilinear", batch_size: int = 128,
                 view: Callable[[tf.Tensor], tf.Tensor] | None = None) -> tf.data.Dataset:
    """Batches of cells (float in [0, 1], SIZE x SIZE) decoded as they are needed: memory stays at a few batches
    however many cells there are (all 27,558 NIH cells at once would take 3 GB as float32)."""
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(lambda p: decode_image(p, size, resize),
                                                            num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(batch_size).map(lambda x: tf.cast(x, tf.float32) / 255.0)
    if view is not None:
        dataset = dataset.map(view)
    return dataset.prefetch(AUTOTUNE)


# The eight flips and right-angle rotations of a batch of cells, for test-time augmentation.
VIEWS = [(lambda x, k=k, flip=flip: tf.image.flip_left_right(tf.image.rot90(x, k)) if flip else tf.image.rot90(x, k))
         for k in range(4) for flip in (False, True)]


def predict_proba(model: keras.Model, part: SplitPart, card: dict, tta: bool = False, batch_size: int = 128) -> np.ndarray:
    """P(Parasitized) for every cell, streamed through tf.data; any image size is resized to the model's input.

    With `tta`, the score is the mean over the eight flips and right-angle rotations of the cell,
    which a cell (it has no up or down) should not care about.
    """
    if not part.paths:
        return np.zeros(0, dtype=np.float32)
    size, resize = int(model.input_shape[1]), card.get("resize", "bilinear")
    views = VIEWS if tta else [None]
    scores = [model.predict(cell_batches(part.paths, size, resize, batch_size, view), verbose=0)[:, POSITIVE]
              for view in views]
    return scores[0] if not tta else np.mean(scores, axis=0)
