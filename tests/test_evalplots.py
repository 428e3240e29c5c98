"""Tests for malaria_lib.evalplots: each figure's structure, and the choice of confident mistakes."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from malaria_lib import evalplots
from malaria_lib.errors import MalariaError

matplotlib.use("Agg")

HISTORY = {
    "epoch": [0, 1, 2, 3],
    "accuracy": [0.6, 0.8, 0.9, 0.95],
    "val_accuracy": [0.55, 0.75, 0.85, 0.9],
    "loss": [0.7, 0.4, 0.3, 0.2],
    "val_loss": [0.72, 0.5, 0.4, 0.35],
    "seconds": [10.0, 9.0, 9.0, 9.0],
}


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_history_tutorial_a_two_plots_train_and_validation(tmp_path):
    fig = evalplots.plot_history_tutorial_a(HISTORY, save=tmp_path / "a.png")
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["model accuracy", "model loss"]
    for ax, key in zip(fig.axes, ("accuracy", "loss"), strict=True):
        assert _legend(ax) == ["train", "validation"]
        assert ax.get_xlabel() == "epoch"
        train, val = ax.get_lines()
        assert list(train.get_xdata()) == [1, 2, 3, 4]
        assert list(train.get_ydata()) == HISTORY[key]
        assert list(val.get_ydata()) == HISTORY[f"val_{key}"]
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_history_tutorial_a_without_validation_and_with_keras2_names():
    fig = evalplots.plot_history_tutorial_a({"acc": [0.5, 0.7], "loss": [0.9, 0.6]})
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1]
    assert _legend(fig.axes[0]) == ["train"]
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [1, 2]
    with pytest.raises(MalariaError, match="accuracy"):
        evalplots.plot_history_tutorial_a({"loss": [1.0]})


def test_history_tutorial_b_side_by_side():
    fig = evalplots.plot_history_tutorial_b(HISTORY)
    assert [ax.get_title() for ax in fig.axes] == ["Training and Validation Accuracy", "Training and Validation Loss"]
    assert _legend(fig.axes[0]) == ["Training Accuracy", "Validation Accuracy"]
    assert _legend(fig.axes[1]) == ["Training Loss", "Validation Loss"]
    left, right = (ax.get_position() for ax in fig.axes)
    assert left.x1 <= right.x0 and abs(left.y0 - right.y0) < 1e-6  # side by side, not stacked


def test_confusion_counts_and_row_percentages(tmp_path):
    fig = evalplots.plot_confusion({"tp": 90, "fn": 10, "fp": 5, "tn": 195}, save=tmp_path / "c.png")
    (ax,) = fig.axes
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["90\n90.0%", "10\n10.0%", "5\n2.5%", "195\n97.5%"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Parasitized", "Uninfected"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Parasitized", "Uninfected"]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert (tmp_path / "c.png").is_file()


def test_confusion_empty_row_and_missing_key():
    fig = evalplots.plot_confusion({"tp": 0, "fn": 0, "fp": 3, "tn": 7})
    assert fig.axes[0].texts[0].get_text() == "0\n0.0%"
    with pytest.raises(MalariaError, match="tn"):
        evalplots.plot_confusion({"tp": 1, "fn": 1, "fp": 1})


def test_confusions_side_by_side_one_per_model(tmp_path):
    fig = evalplots.plot_confusions({"ours": {"tp": 9, "fn": 1, "fp": 2, "tn": 8},
                                     "tutorial_a": {"tp": 5, "fn": 5, "fp": 0, "tn": 10}}, save=tmp_path / "c.png")
    left, right = fig.axes
    assert [left.get_title(), right.get_title()] == ["ours", "tutorial_a"]
    assert [t.get_text() for t in right.texts] == ["5\n50.0%", "5\n50.0%", "0\n0.0%", "10\n100.0%"]
    assert left.get_position().x1 <= right.get_position().x0 and (tmp_path / "c.png").is_file()


def test_roc_one_line_per_model_with_auc_and_chance():
    rng = np.random.default_rng(0)
    y = np.array([1] * 50 + [0] * 50)
    curves = {"perfect": (y, y * 0.9 + 0.05), "noisy": (y, y * 0.5 + rng.random(100) * 0.6)}
    fig = evalplots.plot_roc(curves)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 3
    labels = _legend(ax)
    assert labels[0] == "perfect (AUC 1.0000)"
    assert labels[1].startswith("noisy (AUC 0.")
    assert labels[2] == "chance"
    assert list(ax.get_lines()[2].get_xdata()) == [0, 1]
    with pytest.raises(MalariaError, match="one class"):
        evalplots.plot_roc({"only": (np.ones(4), np.linspace(0, 1, 4))})


def test_most_confident_mistakes_hand_made():
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    s = np.array([0.9, 0.1, 0.95, 0.2, 0.45, 0.6, 0.3, 0.5])
    # mistakes at threshold 0.5: 1 (|0.1-.5|=.4), 2 (.45), 4 (.05), 5 (.1), 6 (.2), 7 (score 0.5 >= t: predicted 1, 0)
    np.testing.assert_array_equal(evalplots.most_confident_mistakes(y, s, 0.5, n=3), [2, 1, 6])
    np.testing.assert_array_equal(evalplots.most_confident_mistakes(y, s, 0.5, n=10), [2, 1, 6, 5, 4, 7])
    # a different threshold changes what counts as a mistake
    np.testing.assert_array_equal(evalplots.most_confident_mistakes(y, s, 0.25, n=10), [2, 5, 7, 1])
    assert len(evalplots.most_confident_mistakes(y, y.astype(float), 0.5)) == 0


def test_confident_mistakes_gallery(tmp_path):
    rng = np.random.default_rng(2)
    n = 20
    images = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 2, n)
    scores = rng.random(n)
    paths = [f"/data/cell_images/Parasitized/C33P1thinF_IMG_20150619_114756a_cell_{i}.png" for i in range(n)]
    picks = evalplots.most_confident_mistakes(y, scores, 0.5, 5)
    fig = evalplots.plot_confident_mistakes(images, y, scores, paths, 0.5, n=5, save=tmp_path / "m.png")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == len(picks) == 5
    for ax, i in zip(shown, picks, strict=True):
        title = ax.get_title()
        assert ("Parasitized" if y[i] == 1 else "Uninfected") in title.splitlines()[0]
        assert f"{scores[i]:.3f}" in title
        assert title.splitlines()[-1].endswith(f"cell_{i}")
        assert len(title.splitlines()[-1]) <= 24
        np.testing.assert_array_equal(ax.images[0].get_array(), images[i])
    assert "label errors" in fig._suptitle.get_text() and "5%" in fig._suptitle.get_text()
    assert (tmp_path / "m.png").is_file()


def test_confident_mistakes_gallery_without_mistakes():
    y = np.array([1, 0])
    fig = evalplots.plot_confident_mistakes(np.zeros((2, 4, 4, 3)), y, np.array([0.9, 0.1]), ["a", "b"], 0.5)
    assert not any(ax.images for ax in fig.axes)
    assert "The 0 most confident" in fig._suptitle.get_text()


def test_patient_accuracy_sorted_bars(tmp_path):
    rows = [{"patient": "C1", "cells": 10, "accuracy": 0.9}, {"patient": "C2", "cells": 30, "accuracy": 0.5},
            {"patient": "C3", "cells": 60, "accuracy": 1.0}]
    fig = evalplots.plot_patient_accuracy(rows, save=tmp_path / "p.png")
    (ax,) = fig.axes
    assert [bar.get_height() for bar in ax.patches] == [0.5, 0.9, 1.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["C2", "C1", "C3"]
    (overall,) = ax.get_lines()
    assert overall.get_ydata()[0] == pytest.approx((10 * 0.9 + 30 * 0.5 + 60 * 1.0) / 100)
    assert "3 patients" in ax.get_title()
    with pytest.raises(MalariaError):
        evalplots.plot_patient_accuracy([])


def test_augmentation_grid_shows_the_original_and_changed_views():
    import numpy as np

    from malaria_lib.augment import build_augmentation
    from malaria_lib.plots import augmentation_grid

    image = np.zeros((32, 32, 3), np.float32)
    image[4:12, 4:20] = [0.9, 0.6, 0.7]
    fig = augmentation_grid(image, build_augmentation("ours"), n=4)
    axes = fig.axes
    assert len(axes) == 5 and axes[0].get_title() == "original"
    shown = [ax.get_images()[0].get_array() for ax in axes]
    assert np.allclose(shown[0], image)
    assert any(not np.allclose(view, image) for view in shown[1:])


def test_patient_fractions_draw_the_rules_line():
    from malaria_lib.rules import Rule

    rows = [{"patient": f"C{i}", "cells": cells, "called_parasitized": called, "fraction": called / cells,
             "fraction_ci": [max(0.0, called / cells - 0.05), min(1.0, called / cells + 0.05)],
             "labelled_fraction": labelled, "infected": labelled > 0, "verdict": called / cells > 0.1}
            for i, (cells, called, labelled) in enumerate(((70, 2, 0.0), (80, 30, 0.4), (90, 12, 0.1)))]
    binomial = Rule("binomial", 0.05, 0.5, "test", 0.04)

    def dashed(fig):
        return [line for line in fig.axes[0].lines if line.get_linestyle() == "--"]

    (line,) = dashed(evalplots.plot_patient_fractions(rows, binomial))
    assert line.get_ydata()[0] == binomial.fraction_needed(80) and "80 cells" in line.get_label()
    (line,) = dashed(evalplots.plot_patient_fractions(rows, 0.07))
    assert line.get_ydata()[0] == 0.07
    assert dashed(evalplots.plot_patient_fractions(rows)) == []
