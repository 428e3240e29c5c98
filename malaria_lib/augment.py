"""Data augmentation as Keras layers: tutorial A's exactly, and ours.

Tutorial A's `ImageDataGenerator(shear_range=0.2, zoom_range=0.2, horizontal_flip=True)` meant
a shear of at most 0.2 *degrees* (Keras 2 took the angle in degrees), a zoom between 0.8 and
1.2 on each axis, and left-right flips. Keras 3's `RandomShear` takes a shear factor (the
tangent of the angle), so 0.2 degrees is a factor of tan(0.2 deg) = 0.0035: almost nothing,
which is what the tutorial really trained with.

Ours follows what the data allow: a cell on a slide has no up, down, left or right (any flip
or rotation), its size varies a little (mild zoom), and the stain's colour and brightness vary
from slide to slide (hue, saturation, brightness, contrast jitter).
"""

from __future__ import annotations

import math

import keras
from keras import layers

from . import config


def tutorial_a_augmentation(seed: int = config.SEED) -> keras.Sequential:
    """Shear up to 0.2 degrees, zoom 0.8-1.2 per axis, left-right flip; borders filled with the nearest pixel, ImageDataGenerator's default."""
    shear = math.tan(math.radians(0.2))
    return keras.Sequential([
        layers.RandomShear(x_factor=shear, y_factor=0.0, fill_mode="nearest", seed=seed),
        layers.RandomZoom(height_factor=(-0.2, 0.2), width_factor=(-0.2, 0.2), fill_mode="nearest", seed=seed + 1),
        layers.RandomFlip("horizontal", seed=seed + 2),
    ], name="tutorial_a_augmentation")


def our_augmentation(seed: int = config.SEED, colour: float = 0.1) -> keras.Sequential:
    """Any flip and rotation, mild zoom, and stain-colour jitter."""
    return keras.Sequential([
        layers.RandomFlip("horizontal_and_vertical", seed=seed),
        layers.RandomRotation(0.5, fill_mode="constant", fill_value=0.0, seed=seed + 1),
        layers.RandomZoom(0.1, fill_mode="constant", fill_value=0.0, seed=seed + 2),
        layers.RandomBrightness(colour, value_range=(0.0, 1.0), seed=seed + 3),
        layers.RandomContrast(colour, seed=seed + 4),
        layers.RandomHue(colour / 2, value_range=(0.0, 1.0), seed=seed + 5),
        layers.RandomSaturation((0.5 - colour, 0.5 + colour), value_range=(0.0, 1.0), seed=seed + 6),
    ], name="our_augmentation")


def geometric_augmentation(seed: int = config.SEED) -> keras.Sequential:
    """Ours without the colour jitter, to measure what the colour part buys."""
    return keras.Sequential([
        layers.RandomFlip("horizontal_and_vertical", seed=seed),
        layers.RandomRotation(0.5, fill_mode="constant", fill_value=0.0, seed=seed + 1),
        layers.RandomZoom(0.1, fill_mode="constant", fill_value=0.0, seed=seed + 2),
    ], name="geometric_augmentation")


AUGMENTATIONS = {"tutorial_a": tutorial_a_augmentation, "ours": our_augmentation, "geometric": geometric_augmentation}


def build_augmentation(name: str | None, seed: int = config.SEED) -> keras.Sequential | None:
    """An augmentation pipeline by name (None means none)."""
    return None if name in (None, "none") else AUGMENTATIONS[name](seed)
