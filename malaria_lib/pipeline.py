"""The input pipeline: a split manifest in, batches of (image, one-hot label) out.

Each image is read, decoded and resized once, cached in memory as uint8 (27,558 cells at
128x128 take 1.4 GB), then shuffled, batched, augmented on whole batches by Keras layers, and
prefetched, so that the CPU decodes PNGs once per run instead of once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import config
from .errors import MalariaError
from .images import NotAnImage, decode_rgb
from .inventory import list_cells
from .split import cell_paths, read_manifest

AUTOTUNE = tf.data.AUTOTUNE
# tf.data's autotuner while a network trains on a CPU: off. It sizes the pipeline's thread pools as if the cores were
# the pipeline's own, and once the cells come from the cache its threads take the cores the training step needs: our
# network's second epoch on the dev subset took 135 s with it and 88 s without, tutorial A's 185 and 152 s, with the
# same weights to the last bit (benchmarks/autotune.py, results/autotune.json). On a GPU it stays on.
AUTOTUNE_WHILE_TRAINING_ON_CPU = False


@dataclass
class SplitPart:
    """The files of one part (train, val or test) of a split, with labels and patients."""

    paths: list[str]
    labels: np.ndarray  # 0 = Parasitized, 1 = Uninfected, as Keras orders the class folders
    patients: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def read_part(split_dir: str | Path, part: str) -> SplitPart:
    """The rows of one part of a split, checked: every file must exist."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise MalariaError(f"The split folder {split_dir} does not exist; make it with `malaria split --out {split_dir}`.")
    rows = [r for r in read_manifest(split_dir) if r["split"] == part]
    if not rows:
        raise MalariaError(f"The split in {split_dir} has no '{part}' part; make a split with a non-zero {part} ratio.")
    paths = [str(path) for path in cell_paths(split_dir, rows)]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise MalariaError(
            f"{len(missing)} files listed in {split_dir}/manifest.csv are missing (e.g. {missing[0]}); "
            "fetch the data again or remake the split with --force."
        )
    labels = np.array([config.CLASSES.index(r["label"]) for r in rows], dtype=np.int32)
    return SplitPart(paths, labels, [r["patient"] for r in rows])


def read_folder(data_dir: str | Path) -> SplitPart:
    """All cells of a folder in the NIH layout, as one part (for scoring new data)."""
    cells, _ = list_cells(data_dir, require_all=False)
    return SplitPart([str(c.path) for c in cells],
                     np.array([config.CLASSES.index(c.label) for c in cells], dtype=np.int32),
                     [c.patient or "" for c in cells])


def drop_unreadable(part: SplitPart) -> tuple[SplitPart, list[str]]:
    """The cells of PART that decode as images, and one line per file that does not (path: reason).

    A folder we did not fetch (`--data`) can hold a truncated PNG or a file that only looks like one; TensorFlow's
    decoder would stop the whole batch on it with a raw error, so each file is opened with Pillow first (about
    half a millisecond per cell) and the bad ones are named and left out.
    """
    keep, bad = [], []
    for i, path in enumerate(part.paths):
        try:
            with open(path, "rb") as handle:
                decode_rgb(handle.read())
            keep.append(i)
        except (NotAnImage, OSError) as exc:
            bad.append(f"{path}: {exc.strerror if isinstance(exc, OSError) else exc}")
    if not bad:
        return part, []
    return SplitPart([part.paths[i] for i in keep], part.labels[keep], [part.patients[i] for i in keep]), bad


def unreadable_note(bad: list[str]) -> str:
    """One note naming the files `drop_unreadable` left out (the first three)."""
    return (f"{len(bad)} file(s) could not be read and were left out: " + "; ".join(bad[:3])
            + ("; ..." if len(bad) > 3 else ""))


def decode_image(path: tf.Tensor, size: int, method: str = "bilinear") -> tf.Tensor:
    """A PNG of any size and mode (L, RGB, RGBA, 16-bit) as a size x size x 3 uint8 tensor.

    Decoding with four channels and multiplying by alpha puts transparent pixels on black, the
    data set's background, the same way `malaria fetch` converts such files.
    """
    rgba = tf.io.decode_png(tf.io.read_file(path), channels=4)
    rgba = tf.cast(rgba, tf.float32)
    return resize_uint8(rgba[..., :3] * (rgba[..., 3:] / 255.0), size, method)


def resize_uint8(rgb: tf.Tensor, size: int, method: str = "bilinear") -> tf.Tensor:
    """Resize an RGB image (values 0-255) to size x size and round to uint8, the way training saw it."""
    resized = tf.image.resize(tf.cast(rgb, tf.float32), (size, size), method=method, antialias=method != "nearest")
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def load_images(paths: list[str], size: int, method: str = "bilinear") -> np.ndarray:
    """Decode a list of files into one uint8 array (N, size, size, 3); for prediction and plots."""
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda p: decode_image(p, size, method), num_parallel_calls=AUTOTUNE).batch(256)
    return np.concatenate([b.numpy() for b in dataset]) if paths else np.zeros((0, size, size, 3), np.uint8)


def make_dataset(
    part: SplitPart,
    image_size: int,
    batch_size: int,
    *,
    training: bool = False,
    augment: keras.Layer | None = None,
    resize: str = "bilinear",
    seed: int = config.SEED,
    cache: bool = True,
    skip_orders: int = 0,
) -> tf.data.Dataset:
    """Batches of (float image in [0, 1], one-hot label); shuffled and augmented only when training.

    Every iterator over a training dataset draws the next order of a sequence fixed by the seed; `skip_orders`
    draws that many first, so a resumed run sees the cells in the order an uninterrupted run would have.
    """
    dataset = tf.data.Dataset.from_tensor_slices((part.paths, part.labels))
    dataset = dataset.map(lambda p, y: (decode_image(p, image_size, resize), y), num_parallel_calls=AUTOTUNE)
    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(len(part), seed=seed, reshuffle_each_iteration=True)
        for _ in range(skip_orders):  # each new iterator draws the next order; nothing is read
            iter(dataset)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, tf.one_hot(y, len(config.CLASSES))),
                          num_parallel_calls=AUTOTUNE)
    if training and augment is not None:
        dataset = dataset.map(lambda x, y: (tf.clip_by_value(augment(x, training=True), 0.0, 1.0), y),
                              num_parallel_calls=AUTOTUNE)
    dataset = dataset.prefetch(AUTOTUNE)
    if training and not AUTOTUNE_WHILE_TRAINING_ON_CPU and not tf.config.list_physical_devices("GPU"):
        options = tf.data.Options()
        options.autotune.enabled = False
        dataset = dataset.with_options(options)
    return dataset
