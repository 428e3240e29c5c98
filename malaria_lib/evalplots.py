"""Figures about training and evaluation: learning curves, confusion matrix, ROC, mistakes, patients.

Like `plots`, every function builds a `matplotlib.figure.Figure` without pyplot (no global state,
no GUI backend, nothing shown), returns it, and writes a PNG when given `save`. Labels `y_true`
are 1 for Parasitized (the positive class) and 0 for Uninfected; scores are P(Parasitized).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn import metrics as skm

from . import config
from .errors import MalariaError
from .plots import COLOURS, _finish  # colours and one way to attach a canvas and save, shared with the data figures
from .rules import Rule

MISLABELED_SHARE = "about 5%"  # literature estimate of the data set's label noise


def _curves(history: dict[str, list[float]], metric: str) -> tuple[list[int], list[float], list[float] | None]:
    """Epoch numbers (from 1), training and validation values of one metric from a Keras history."""
    aliases = {"accuracy": ("accuracy", "acc"), "loss": ("loss",)}[metric]
    train = next((history[k] for k in aliases if k in history), None)
    if train is None:
        raise MalariaError(f"The history has no {metric!r} column; pass the dict read from a run's history.csv.")
    val = next((history[f"val_{k}"] for k in aliases if f"val_{k}" in history), None)
    epochs = [int(e) + 1 for e in history["epoch"]] if "epoch" in history else list(range(1, len(train) + 1))
    return epochs, list(train), list(val) if val is not None else None


def plot_history_tutorial_a(history: dict[str, list[float]], save: str | Path | None = None) -> Figure:
    """Tutorial A's two learning-curve plots, 'model accuracy' above 'model loss', train against validation."""
    fig = Figure(figsize=(6, 8))
    for ax, metric, where in zip(fig.subplots(2, 1), ("accuracy", "loss"), ("upper left", "upper right"), strict=True):
        epochs, train, val = _curves(history, metric)
        ax.plot(epochs, train)
        legend = ["train"]
        if val is not None:
            ax.plot(epochs, val)
            legend.append("validation")
        ax.set_title(f"model {metric}")
        ax.set_ylabel(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(legend, loc=where)
    fig.tight_layout()
    return _finish(fig, save)


def plot_history_tutorial_b(history: dict[str, list[float]], save: str | Path | None = None) -> Figure:
    """Tutorial B's learning curves: accuracy and loss side by side, training against validation."""
    fig = Figure(figsize=(11, 4.5))
    for ax, metric, where in zip(fig.subplots(1, 2), ("accuracy", "loss"), ("lower right", "upper right"), strict=True):
        epochs, train, val = _curves(history, metric)
        name = metric.capitalize()
        ax.plot(epochs, train, label=f"Training {name}")
        if val is not None:
            ax.plot(epochs, val, label=f"Validation {name}")
        ax.legend(loc=where)
        ax.set_title(f"Training and Validation {name}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _finish(fig, save)


def plot_confusion(confusion: dict[str, int], classes: Sequence[str] = config.CLASSES,
                   title: str = "Confusion matrix", save: str | Path | None = None) -> Figure:
    """The confusion matrix (rows: true class, columns: predicted) with counts and row percentages.

    Row percentages are the per-class recall (sensitivity, specificity), which counts alone hide
    when the classes differ in size. Colours follow the row percentage.
    """
    fig = Figure(figsize=(4.6, 4))
    _draw_confusion(fig.subplots(), confusion, classes, title)
    return _finish(fig, save)


def plot_confusions(confusions: dict[str, dict[str, int]], classes: Sequence[str] = config.CLASSES,
                    save: str | Path | None = None) -> Figure:
    """One confusion matrix per model, side by side on the same scale, titled by the model's name."""
    fig = Figure(figsize=(4.4 * len(confusions), 4))
    axes = np.atleast_1d(fig.subplots(1, len(confusions)))
    for ax, (name, confusion) in zip(axes, confusions.items(), strict=True):
        _draw_confusion(ax, confusion, classes, name)
    return _finish(fig, save)


def _draw_confusion(ax, confusion: dict[str, int], classes: Sequence[str], title: str) -> None:
    missing = [k for k in ("tp", "fn", "fp", "tn") if k not in confusion]
    if missing:
        raise MalariaError(f"The confusion dict lacks {', '.join(missing)}; pass Evaluation.confusion.")
    counts = np.array([[confusion["tp"], confusion["fn"]], [confusion["fp"], confusion["tn"]]], dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{int(counts[i, j]):,}\n{100 * share[i, j]:.1f}%", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=11)
    ax.set_xticks([0, 1], list(classes))
    ax.set_yticks([0, 1], list(classes), rotation=90, va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str = "ROC curves",
             save: str | Path | None = None) -> Figure:
    """ROC curves of several models on one axis, AUC in the legend, against the chance diagonal."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for name, (y_true, scores) in curves.items():
        y_true = np.asarray(y_true)
        if len(np.unique(y_true)) < 2:
            raise MalariaError(f"The cells for {name!r} hold only one class, so no ROC curve can be drawn.")
        fpr, tpr, _ = skm.roc_curve(y_true, np.asarray(scores))
        ax.plot(fpr, tpr, label=f"{name} (AUC {skm.auc(fpr, tpr):.4f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    return _finish(fig, save)


def most_confident_mistakes(y_true: np.ndarray, scores: np.ndarray, threshold: float, n: int = 12) -> np.ndarray:
    """Indices of the n misclassified cells whose score lies furthest from the threshold, most confident first."""
    y_true, scores = np.asarray(y_true).astype(int), np.asarray(scores, dtype=float)
    if y_true.shape != scores.shape:
        raise MalariaError(f"Got {len(y_true)} labels but {len(scores)} scores; give one score per cell.")
    wrong = np.flatnonzero((scores >= threshold).astype(int) != y_true)
    order = np.argsort(-np.abs(scores[wrong] - threshold), kind="stable")
    return wrong[order[:n]]


def _short_name(path: str | Path, width: int = 24) -> str:
    """A file name short enough for a subplot title: its start (the slide) and end (the cell number)."""
    name = Path(path).stem
    return name if len(name) <= width else f"{name[:10]}…{name[-(width - 11):]}"


def plot_confident_mistakes(images: np.ndarray, y_true: np.ndarray, scores: np.ndarray, paths: Sequence[str],
                            threshold: float, n: int = 12, save: str | Path | None = None) -> Figure:
    """A gallery of the most confident mistakes: candidates for label errors worth a second look.

    Each cell is titled with its true label, its P(Parasitized) and its file name.
    """
    picks = most_confident_mistakes(y_true, scores, threshold, n)
    cols = min(6, max(len(picks), 1))
    rows = max(1, math.ceil(len(picks) / cols))
    fig = Figure(figsize=(2.1 * cols, 2.5 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, picks, strict=False):
        picture = np.asarray(images[i])
        ax.imshow(picture if picture.dtype == np.uint8 else np.clip(picture, 0, 1))
        truth = config.POSITIVE_CLASS if int(y_true[i]) == 1 else config.CLASSES[1]
        ax.set_title(f"true {truth}\nP(Parasitized) {float(scores[i]):.3f}\n{_short_name(paths[i])}", fontsize=7)
    if len(picks) == 0:
        axes[0, 0].text(0.5, 0.5, "no mistakes at this threshold", ha="center", va="center")
    fig.suptitle(f"The {len(picks)} most confident mistakes at threshold {threshold:.3f}: candidates for label "
                 f"errors\n(the data set reportedly holds {MISLABELED_SHARE} mislabeled cells)", fontsize=10)
    return _finish(fig, save)


def plot_patient_accuracy(per_patient: list[dict], title: str = "Accuracy per patient",
                          save: str | Path | None = None) -> Figure:
    """One bar per patient, sorted from worst to best, with the overall cell accuracy as a line.

    A mean over cells can hide a few patients on whom the model fails; this shows them.
    """
    if not per_patient:
        raise MalariaError("There are no patients to plot; pass Evaluation.per_patient.")
    rows = sorted(per_patient, key=lambda r: (r["accuracy"], str(r["patient"])))
    accuracy = [r["accuracy"] for r in rows]
    cells = np.array([r["cells"] for r in rows], dtype=float)
    fig = Figure(figsize=(max(5.0, 0.22 * len(rows) + 1.5), 4))
    ax = fig.subplots()
    ax.bar(range(len(rows)), accuracy, color="#3a7fb8")
    overall = float(np.dot(accuracy, cells) / cells.sum()) if cells.sum() else float(np.mean(accuracy))
    ax.axhline(overall, color="#b0306a", linestyle="--", label=f"all cells {overall:.3f}")
    ax.set_xticks(range(len(rows)), [str(r["patient"]) for r in rows], rotation=90, fontsize=7)
    ax.set_ylim(0, 1.15)  # bars start at zero, so their lengths compare honestly; room for the legend
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("accuracy")
    ax.set_xlabel("patient (sorted by accuracy)")
    ax.set_title(f"{title} ({len(rows)} patients)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return _finish(fig, save)


def plot_patient_fractions(rows: list[dict], cutoff: float | Rule | None = None, title: str = "Patients screened",
                           save: str | Path | None = None) -> Figure:
    """Each patient's fraction of cells called parasitized (95% interval) against its labelled fraction.

    Points on the diagonal are patients whose fraction the model gets right; colour says whether the
    patient is infected, an open marker that the verdict was wrong; the dashed line is the rule's cutoff
    (for a binomial rule, which weighs the cell count, the fraction that makes a patient of median size infected).
    """
    if not rows or any("labelled_fraction" not in r for r in rows):
        raise MalariaError("Plotting fractions needs labelled patients; pass Screening.patients of labelled cells.")
    fig = Figure(figsize=(5.8, 5.2))
    ax = fig.subplots()
    for infected, colour, name in ((True, COLOURS["Parasitized"], "infected"), (False, COLOURS["Uninfected"], "healthy")):
        group = [r for r in rows if r["infected"] == infected]
        if not group:
            continue
        x = np.array([r["labelled_fraction"] for r in group])
        y = np.array([r["fraction"] for r in group])
        err = np.array([[r["fraction"] - r["fraction_ci"][0], r["fraction_ci"][1] - r["fraction"]] for r in group]).T
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor=colour, alpha=0.4, linewidth=1)
        right = np.array([r.get("verdict", infected) == infected for r in group])
        ax.scatter(x[right], y[right], color=colour, s=28, label=f"{name} patients ({len(group)})", zorder=3)
        if (~right).any():
            ax.scatter(x[~right], y[~right], facecolors="white", edgecolors=colour, s=40, linewidths=1.5,
                       label=f"{name}, wrong verdict ({int((~right).sum())})", zorder=4)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="predicted = labelled")
    if isinstance(cutoff, Rule) and cutoff.statistic != "fraction":
        cells = int(np.median([r["cells"] for r in rows]))
        needed = cutoff.fraction_needed(cells)
        ax.axhline(needed, color="black", linestyle="--", linewidth=1, label=f"infected from {needed:.3f} up, at {cells} cells")
    elif cutoff is not None:
        value = cutoff.cutoff if isinstance(cutoff, Rule) else cutoff
        ax.axhline(value, color="black", linestyle="--", linewidth=1, label=f"rule's cutoff {value:.3f}")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("labelled fraction of parasitized cells")
    ax.set_ylabel("fraction called parasitized (95% CI)")
    ax.set_title(f"{title} ({len(rows)} patients)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _finish(fig, save)
