"""What a network looks at: the activations of its layers (tutorial A's keract figures) and Grad-CAM.

keract 4.5.2 cannot read activations from a Keras 3 model (its `get_activations` trips over
`model._is_compiled`), but its drawing functions take a plain dict of arrays. So activations are
read here with Keras and handed to keract only for drawing.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import config
from .errors import MalariaError

PARASITIZED = config.CLASSES.index(config.POSITIVE_CLASS)  # 0: the softmax follows the sorted class folders


# ---------------------------------------------------------------- activations


def _check_image(model: keras.Model, image: np.ndarray) -> np.ndarray:
    """One cell as a (1, H, W, 3) float32 batch, checked against the model's input size."""
    batch = np.asarray(image, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise MalariaError(f"Expected an RGB image of shape (H, W, 3); got shape {np.shape(image)}.")
    _check_size(model, batch)
    return batch


def _check_size(model: keras.Model, batch: np.ndarray) -> None:
    expected = tuple(model.input_shape[1:3])
    if any(e is not None and e != s for e, s in zip(expected, batch.shape[1:3], strict=True)):
        raise MalariaError(f"The model takes {expected[0]}x{expected[1]} images but got "
                           f"{batch.shape[1]}x{batch.shape[2]}; resize the cells to the model's input first.")


def layer_activations(
    model: keras.Model,
    image: np.ndarray,
    layer_types: tuple[type, ...] = (layers.Conv2D, layers.MaxPooling2D),
) -> dict[str, np.ndarray]:
    """The output of every layer of the given types for one cell, {layer name: (1, h, w, c) array}.

    Ordered as in the model, which is the order keract draws them in; the batch dimension of 1
    is kept because keract's drawing functions expect it.
    """
    chosen = [layer for layer in model.layers if isinstance(layer, layer_types)]
    if not chosen:
        names = ", ".join(t.__name__ for t in layer_types)
        raise MalariaError(f"The model {model.name!r} has no layer of type {names}.")
    batch = _check_image(model, image)
    reader = keras.Model(model.input, [layer.output for layer in chosen])
    outputs = reader(batch, training=False)
    if not isinstance(outputs, list | tuple):
        outputs = [outputs]
    return {layer.name: keras.ops.convert_to_numpy(out) for layer, out in zip(chosen, outputs, strict=True)}


@contextlib.contextmanager
def _captured_pyplot(figures: list[Figure]):
    """Keep keract's figures instead of showing them, and silence its prints.

    keract draws with pyplot, calls `plt.show()` unless saving and closes each figure; showing is
    replaced by nothing (so no GUI window ever blocks) and every closed figure is collected.
    """
    import matplotlib.pyplot as plt

    real_close, real_show = plt.close, plt.show

    def close(fig=None):
        if isinstance(fig, Figure):
            figures.append(fig)
        real_close(fig)

    plt.close, plt.show = close, lambda *args, **kwargs: None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        plt.close, plt.show = real_close, real_show


def show_activations(
    activations: dict[str, np.ndarray],
    save_dir: str | Path | None = None,
    cmap: str = "viridis",
    fig_size: tuple[float, float] = (12, 12),
) -> list[Path] | list[Figure]:
    """Tutorial A's figure set: one keract figure per layer, every channel as a small image.

    With `save_dir`, writes keract's `<index>_<layer>.png` files there and returns their paths;
    otherwise returns the figures (display them in a notebook with `display(fig)`).
    """
    import keract

    figures: list[Figure] = []
    with _captured_pyplot(figures):
        keract.display_activations(activations, cmap=cmap, save=save_dir is not None,
                                   directory=str(save_dir) if save_dir is not None else ".", fig_size=fig_size)
    if save_dir is None:
        return figures
    drawn = [name for name, acts in activations.items() if acts.shape[0] == 1]
    return [Path(save_dir) / f"{i}_{name.split('/')[0]}.png" for i, name in enumerate(drawn)]


# ---------------------------------------------------------------- Grad-CAM


def last_feature_map(model: keras.Model) -> keras.Layer:
    """The last layer with a 4-D output: the final activation map before pooling or flattening.

    For tutorial A that is the last MaxPooling2D, for malarianet the ReLU after the last
    Conv-BatchNorm; taking the map after the activation keeps Grad-CAM on what the head sees.
    """
    for layer in reversed(model.layers):
        if isinstance(layer, layers.InputLayer):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            return layer
    raise MalariaError(f"The model {model.name!r} has no layer with a 2-D feature map; Grad-CAM needs one.")


def _score_outputs(model: keras.Model) -> tuple[keras.KerasTensor, keras.Layer | None]:
    """What the class score is read from: the logits when the head is a softmax Dense layer.

    Gradients of a saturated softmax are exactly zero in float32 (P = 1.0 for a confident cell),
    so Grad-CAM, as in its paper, uses the score before the softmax.
    """
    last = model.layers[-1]
    if isinstance(last, layers.Dense) and last.activation is keras.activations.softmax:
        return last.input, last
    return model.output, None


def grad_cam(
    model: keras.Model,
    images: np.ndarray,
    class_index: int = PARASITIZED,
    layer_name: str | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM heatmaps (N, H, W) in [0, 1]: where in each cell the evidence for a class lies.

    The last feature map is weighted by the spatially averaged gradient of the class score,
    summed over channels, kept where positive, scaled to a maximum of 1 per image and upsampled
    to the input size. An image with no positive evidence gets an all-zero map.
    """
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise MalariaError(f"Expected RGB images of shape (N, H, W, 3); got shape {np.shape(images)}.")
    _check_size(model, batch)
    if layer_name is None:
        target = last_feature_map(model)
    else:
        try:
            target = model.get_layer(layer_name)
        except ValueError:
            raise MalariaError(f"The model {model.name!r} has no layer named {layer_name!r}.") from None
    score_tensor, head = _score_outputs(model)
    sub = keras.Model(model.input, [target.output, score_tensor])
    height, width = batch.shape[1:3]
    maps = []
    for start in range(0, len(batch), batch_size):
        x = tf.convert_to_tensor(batch[start:start + batch_size])
        with tf.GradientTape() as tape:
            feature_map, out = sub(x, training=False)
            out = tf.cast(out, tf.float32)
            if head is not None:
                out = tf.matmul(out, tf.cast(head.kernel, tf.float32))
                if head.use_bias:
                    out = out + tf.cast(head.bias, tf.float32)
            score = out[:, class_index]
        # the gradient is taken at the layer's own output (float16 in a mixed-precision model), then cast
        grads = tape.gradient(score, feature_map)  # images are independent, so one gradient serves the batch
        if grads is None:
            raise MalariaError(f"The class score does not depend on layer {target.name!r}; choose another layer.")
        grads, feature_map = tf.cast(grads, tf.float32), tf.cast(feature_map, tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1))
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        cam = tf.math.divide_no_nan(cam, peak)
        cam = tf.image.resize(cam[..., None], (height, width), method="bilinear")[..., 0]
        maps.append(np.clip(cam.numpy(), 0.0, 1.0))
    return np.concatenate(maps).astype(np.float32)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """The cell with the heatmap blended on top, as an RGB uint8 image (alpha is the heatmap's weight)."""
    picture = np.asarray(image, dtype=np.float32)
    if picture.max(initial=0) > 1.0:  # uint8 pixels
        picture = picture / 255.0
    if picture.shape[:2] != np.shape(heatmap):
        raise MalariaError(f"The heatmap {np.shape(heatmap)} and the image {picture.shape[:2]} differ in size.")
    colours = colormaps[cmap](np.clip(heatmap, 0.0, 1.0))[..., :3]
    blended = (1.0 - alpha) * np.clip(picture[..., :3], 0.0, 1.0) + alpha * colours
    return np.round(np.clip(blended, 0.0, 1.0) * 255).astype(np.uint8)


def show_grad_cam(
    images: np.ndarray,
    heatmaps: np.ndarray,
    titles: Sequence[str] | None = None,
    alpha: float = 0.4,
    save: str | Path | None = None,
) -> Figure:
    """Each cell above its Grad-CAM overlay, so the evidence can be compared with the cell itself."""
    n = len(images)
    if len(heatmaps) != n:
        raise MalariaError(f"Got {n} images but {len(heatmaps)} heatmaps; give one heatmap per image.")
    fig = Figure(figsize=(1.8 * max(n, 1), 3.9))
    axes = fig.subplots(2, max(n, 1), squeeze=False)
    for i in range(n):
        picture = np.asarray(images[i])
        axes[0, i].imshow(picture if picture.dtype == np.uint8 else np.clip(picture, 0, 1))
        axes[1, i].imshow(overlay_heatmap(picture, heatmaps[i], alpha))
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    axes[1, 0].text(-0.1, 0.5, "Grad-CAM", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right")
    FigureCanvasAgg(fig)
    if save is not None:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=100, bbox_inches="tight")
    return fig


# ---------------------------------------------------------------- choosing and comparing cells

EXAMPLE_GROUPS = (  # (name, true label is Parasitized, called Parasitized)
    ("Parasitized, found", True, True),
    ("Parasitized, missed", True, False),
    ("Uninfected, correct", False, False),
    ("Uninfected, false alarm", False, True),
)


def pick_examples(y_true: np.ndarray, scores: np.ndarray, threshold: float, per_group: int = 2) -> list[tuple[int, str]]:
    """Cells worth explaining: up to `per_group` of each outcome (found, missed, correct, false alarm).

    `y_true` is 1 for Parasitized and `scores` are P(Parasitized). Within a group the cells whose
    score lies furthest from the threshold come first: the clearest successes and the most
    confident mistakes. Returns (index, group name) pairs, group by group.
    """
    y_true, scores = np.asarray(y_true).astype(bool), np.asarray(scores, dtype=float)
    if y_true.shape != scores.shape:
        raise MalariaError(f"Got {len(y_true)} labels but {len(scores)} scores; give one score per cell.")
    called = scores >= threshold
    picks: list[tuple[int, str]] = []
    for name, truth, call in EXAMPLE_GROUPS:
        members = np.flatnonzero((y_true == truth) & (called == call))
        order = np.argsort(-np.abs(scores[members] - threshold), kind="stable")
        picks.extend((int(i), name) for i in members[order[:per_group]])
    return picks


def _resize_map(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if np.shape(heatmap) == tuple(shape):
        return np.asarray(heatmap, dtype=np.float32)
    resized = tf.image.resize(np.asarray(heatmap, dtype=np.float32)[..., None], shape, method="bilinear")
    return np.clip(resized.numpy()[..., 0], 0.0, 1.0)


def compare_grad_cam(
    cells: np.ndarray,
    heatmaps: dict[str, np.ndarray],
    captions: dict[str, Sequence[str]] | None = None,
    titles: Sequence[str] | None = None,
    alpha: float = 0.4,
    save: str | Path | None = None,
) -> Figure:
    """Several models' Grad-CAM side by side: the cells in the top row, one row of overlays per model.

    `cells` (N, H, W, 3) are drawn as they are; each model's maps (N, h, w), made at its own input
    size, are resized to the cells' size. `captions[model][i]` goes under overlay i (e.g. the
    model's score), `titles[i]` above cell i.
    """
    n = len(cells)
    if n == 0 or not heatmaps:
        raise MalariaError("Give at least one cell and one model's heatmaps.")
    for name, maps in heatmaps.items():
        if len(maps) != n:
            raise MalariaError(f"Got {n} cells but {len(maps)} heatmaps for {name!r}; give one map per cell.")
    rows = 1 + len(heatmaps)
    fig = Figure(figsize=(1.7 * n + 0.6, 1.95 * rows))
    axes = fig.subplots(rows, n, squeeze=False)
    shape = tuple(np.shape(cells)[1:3])
    for i in range(n):
        picture = np.asarray(cells[i])
        axes[0, i].imshow(picture if picture.dtype == np.uint8 else np.clip(picture, 0, 1))
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=8)
        for row, (name, maps) in enumerate(heatmaps.items(), 1):
            axes[row, i].imshow(overlay_heatmap(picture, _resize_map(maps[i], shape), alpha))
            if captions is not None and name in captions:
                axes[row, i].set_title(captions[name][i], fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[0, 0].set_ylabel("cell", fontsize=9)
    for row, name in enumerate(heatmaps, 1):
        axes[row, 0].set_ylabel(name, fontsize=9)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    if save is not None:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=100, bbox_inches="tight")
    return fig


def cell_mask(images: np.ndarray, level: float = 0.04) -> np.ndarray:
    """(N, H, W) True where a pixel belongs to the cell: brighter than the black background in some channel.

    `level` is a fraction of full brightness (images may be uint8 or floats in [0, 1]).
    """
    batch = np.asarray(images, dtype=np.float32)
    if batch.max(initial=0) > 1.0:
        batch = batch / 255.0
    return batch.max(axis=-1) > level


def _grow(mask: np.ndarray, k: int, outside: bool) -> np.ndarray:
    """Dilate (N, H, W) boolean masks by a (2k+1)-square; pixels beyond the image count as `outside`."""
    _, height, width = mask.shape
    padded = np.pad(mask, ((0, 0), (k, k), (k, k)), constant_values=outside)
    grown = np.zeros_like(mask)
    for dy in range(2 * k + 1):
        for dx in range(2 * k + 1):
            grown |= padded[:, dy:dy + height, dx:dx + width]
    return grown


REGIONS = ("inside", "edge", "background")


def heat_by_region(images: np.ndarray, heatmaps: np.ndarray, edge: float = 0.04) -> dict[str, np.ndarray]:
    """Where each image's Grad-CAM mass lies: inside the cell, along its edge, or on the background.

    The edge is a band `edge` x the image width wide on either side of the cell's outline (cut
    edges at the picture's border count too). Returns, per image, the share of the map's mass in
    each region (NaN for an empty map) and, under `area_<region>`, the share of the picture the
    region covers: what a map spread evenly would score. Maps of another size than the images
    (each network's own input size) are resized to them first.
    """
    mask = cell_mask(images)
    heat = np.asarray(heatmaps, dtype=np.float32)
    if heat.ndim != 3 or len(heat) != len(mask):
        raise MalariaError(f"Got {len(mask)} images but heatmaps of shape {heat.shape}; give one (H, W) map per image.")
    if heat.shape[1:] != mask.shape[1:]:
        heat = np.stack([_resize_map(h, mask.shape[1:]) for h in heat])
    k = max(1, round(edge * mask.shape[2]))
    inside = ~_grow(~mask, k, outside=True)
    outside = ~_grow(mask, k, outside=False)
    regions = {"inside": inside, "edge": ~inside & ~outside, "background": outside}
    total = heat.sum(axis=(1, 2), dtype=np.float64)
    result: dict[str, np.ndarray] = {}
    for name, region in regions.items():
        mass = (heat * region).sum(axis=(1, 2), dtype=np.float64)
        result[name] = np.divide(mass, total, out=np.full_like(total, np.nan), where=total > 0)
        result[f"area_{name}"] = region.mean(axis=(1, 2))
    return result
