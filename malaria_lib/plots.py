"""Figures the chapters show, each returned as a matplotlib Figure and optionally saved as PNG.

Figures are built with `matplotlib.figure.Figure` rather than pyplot: no global state and no
GUI backend (the Agg canvas draws them), so they work the same headless, in papermill and in
Jupyter, where a Figure left as a cell's last value is displayed.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from . import config
from .inventory import list_cells

COLOURS = {"Parasitized": "#b0306a", "Uninfected": "#3a7fb8"}


def _finish(fig: Figure, save: str | Path | None) -> Figure:
    FigureCanvasAgg(fig)
    if save is not None:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=100, bbox_inches="tight")
    return fig


def figure_path(work_dir: str | Path, name: str) -> Path:
    """Where a chapter's figure NAME is kept: WORK_DIR/figures/NAME.png."""
    return Path(work_dir) / "figures" / f"{name}.png"


def sample_grid(data_dir: str | Path, per_class: int = 8, seed: int = config.SEED,
                save: str | Path | None = None) -> Figure:
    """One row of randomly chosen cells per class, each keeping its aspect ratio, captioned with its patient."""
    cells, _ = list_cells(data_dir)
    rng = random.Random(seed)
    fig = Figure(figsize=(1.4 * per_class, 3.3))
    axes = fig.subplots(len(config.CLASSES), per_class, squeeze=False)
    for row, label in zip(axes, config.CLASSES, strict=True):
        chosen = rng.sample([c for c in cells if c.label == label], min(per_class, sum(c.label == label for c in cells)))
        for ax, cell in zip(row, chosen + [None] * (per_class - len(chosen)), strict=True):
            ax.set_axis_off()
            if cell is not None:
                with Image.open(cell.path) as image:
                    ax.imshow(image.convert("RGB"))
                ax.set_title(cell.patient or "?", fontsize=8)
        row[0].text(-0.15, 0.5, label, transform=row[0].transAxes, rotation=90, va="center", ha="right",
                    fontsize=10, color=COLOURS[label])
    fig.suptitle("Random cells of each class (caption: patient)", fontsize=11)
    return _finish(fig, save)


def size_histogram(data_dir: str | Path, bins: int = 40, save: str | Path | None = None) -> Figure:
    """Histogram of image widths and heights per class: the cells are not all one size, so inputs get resized."""
    cells, _ = list_cells(data_dir)
    sizes: dict[str, list[tuple[int, int]]] = {label: [] for label in config.CLASSES}
    for cell in cells:
        with Image.open(cell.path) as image:  # header only
            sizes[cell.label].append(image.size)
    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, which, name in ((axes[0], 0, "width"), (axes[1], 1, "height")):
        for label, values in sizes.items():
            ax.hist([v[which] for v in values], bins=bins, alpha=0.6, color=COLOURS[label], label=label)
        ax.set_xlabel(f"image {name} (pixels)")
    axes[0].set_ylabel("images")
    axes[1].legend()
    fig.tight_layout()
    return _finish(fig, save)


def cells_per_patient(data_dir: str | Path, save: str | Path | None = None) -> Figure:
    """Stacked bars of each patient's cells by class, largest first: patients contribute very unequally."""
    cells, _ = list_cells(data_dir)
    counts = {label: Counter(c.patient for c in cells if c.label == label and c.patient) for label in config.CLASSES}
    patients = sorted({p for counter in counts.values() for p in counter},
                      key=lambda p: (-sum(counter[p] for counter in counts.values()), p))
    fig = Figure(figsize=(9, 3.2))
    ax = fig.subplots()
    bottom = [0] * len(patients)
    for label in config.CLASSES:
        heights = [counts[label][p] for p in patients]
        ax.bar(range(len(patients)), heights, bottom=bottom, width=1.0, color=COLOURS[label], label=label)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xlim(-0.5, len(patients) - 0.5)
    ax.set_xticks([])
    ax.set_xlabel(f"{len(patients)} patients, most cells first")
    ax.set_ylabel("cells")
    ax.legend()
    fig.tight_layout()
    return _finish(fig, save)


def augmentation_grid(image, augment, n: int = 8, seed: int = config.SEED,
                      save: str | Path | None = None) -> Figure:
    """One cell (float array in [0, 1]) and n augmented versions of it: what the network sees while training."""
    import numpy as np
    import tensorflow as tf

    tf.random.set_seed(seed)
    batch = np.repeat(np.asarray(image, dtype=np.float32)[None], n, axis=0)
    views = np.clip(np.asarray(augment(batch, training=True)), 0.0, 1.0)
    fig = Figure(figsize=(1.5 * (n + 1), 1.9))
    axes = fig.subplots(1, n + 1, squeeze=False)[0]
    for ax, view, title in zip(axes, [batch[0], *views], ["original"] + [f"view {i + 1}" for i in range(n)],
                               strict=True):
        ax.imshow(view)
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    return _finish(fig, save)
