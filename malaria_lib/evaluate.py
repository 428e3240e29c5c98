"""Scoring a trained model honestly: metrics with patient-bootstrap intervals, per-patient accuracy.

The decision threshold on P(Parasitized) is chosen on validation data (midway between the typical
parasitized and the typical uninfected score) and stored beside the model, so the test data never
influence it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from sklearn import metrics as skm

from . import config
from .errors import MalariaError
from .pipeline import SplitPart, load_images

POSITIVE = config.CLASSES.index(config.POSITIVE_CLASS)  # 0: Parasitized is the positive class
METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "mcc", "auc")


# ---------------------------------------------------------------- model card


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


# ---------------------------------------------------------------- prediction


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


THRESHOLD_RULES = ("medians", "youden", "fixed")


def choose_threshold(y_true_positive: np.ndarray, scores: np.ndarray, rule: str = "medians") -> float:
    """The cell threshold from validation scores; 0.5 when one class is missing.

    `medians` (default): midway between the median score of the parasitized and of the uninfected
    cells. It uses every validation cell, so it barely moves between splits. `youden`: the point of
    the ROC curve furthest above chance (Youden's J); it rests on the few cells near the boundary of
    a handful of validation patients and, in patient cross-validation, jumped between 0.37 and 0.81
    and cost up to 4 points of test accuracy in a fold (chapter 5). `fixed`: 0.5, the threshold a
    network trained on balanced classes aims for.
    """
    if rule not in THRESHOLD_RULES:
        raise MalariaError(f"Unknown threshold rule {rule!r}; use one of {', '.join(THRESHOLD_RULES)}.")
    y_true_positive = np.asarray(y_true_positive).astype(bool)
    scores = np.asarray(scores, dtype=float)
    if rule == "fixed" or len(np.unique(y_true_positive)) < 2:
        return 0.5
    if rule == "medians":
        return float((np.median(scores[y_true_positive]) + np.median(scores[~y_true_positive])) / 2)
    fpr, tpr, thresholds = skm.roc_curve(y_true_positive.astype(int), scores)
    best = int(np.argmax(tpr - fpr))
    return float(np.clip(thresholds[best], 1e-6, 1 - 1e-6))


# ---------------------------------------------------------------- metrics


def point_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    """Metrics for one set of cells; y is 1 for Parasitized. None where a metric cannot be computed."""
    pred = (scores >= threshold).astype(int)
    tp = int(np.sum((pred == 1) & (y == 1)))
    tn = int(np.sum((pred == 0) & (y == 0)))
    fp = int(np.sum((pred == 1) & (y == 0)))
    fn = int(np.sum((pred == 0) & (y == 1)))
    both = len(np.unique(y)) == 2

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "accuracy": (tp + tn) / len(y) if len(y) else None,
            "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp),
            "precision": ratio(tp, tp + fp),
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "mcc": float(skm.matthews_corrcoef(y, pred)) if both else None,
            "auc": float(skm.roc_auc_score(y, scores)) if both else None,
        }


def bootstrap_intervals(y: np.ndarray, scores: np.ndarray, patients: list[str], threshold: float,
                        reps: int = 1000, seed: int = config.SEED) -> dict[str, list[float] | None]:
    """95% intervals from resampling whole patients, because cells of one patient are not independent."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(patients):
        groups.setdefault(p or f"cell{i}", []).append(i)
    members = [np.array(v) for v in groups.values()]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(reps):
        pick = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        for name, value in point_metrics(y[pick], scores[pick], threshold).items():
            if value is not None:
                samples[name].append(value)
    return {m: ([float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) >= reps // 2 else None)
            for m, v in samples.items()}


@dataclass
class Evaluation:
    """Everything `malaria evaluate` reports about one model on one set of cells."""

    n_images: int
    n_patients: int
    threshold: float
    metrics: dict[str, float | None]
    intervals: dict[str, list[float] | None]
    confusion: dict[str, int]
    per_patient: list[dict]
    notes: list[str] = field(default_factory=list)
    patients: dict | None = None  # screening over patients (malaria_lib.screen), when the card holds a rule

    def to_dict(self) -> dict:
        flat: dict = {k: v for k, v in self.metrics.items()}
        flat.update(n_images=self.n_images, n_patients=self.n_patients, threshold=self.threshold,
                    intervals=self.intervals, confusion=self.confusion, per_patient=self.per_patient, notes=self.notes)
        if self.patients is not None:
            flat["patients"] = self.patients
        return flat

    def summary(self) -> str:
        lines = [f"{self.n_images:,} cells from {self.n_patients} patients, threshold {self.threshold:.3f}"]
        for name in METRICS:
            value, interval = self.metrics[name], self.intervals.get(name)
            if value is None:
                lines.append(f"  {name:<12} n/a")
            else:
                ci = f"  (95% CI {interval[0]:.4f}-{interval[1]:.4f})" if interval else ""
                lines.append(f"  {name:<12} {value:.4f}{ci}")
        c = self.confusion
        lines.append(f"  confusion    TP {c['tp']}  FN {c['fn']}  FP {c['fp']}  TN {c['tn']}")
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.patients is not None:
            s = self.patients["summary"]
            figures = ", ".join(f"{m} " + ("n/a" if s.get(m) is None else f"{s[m]:.3f}")
                                for m in ("sensitivity", "specificity", "auc", "fraction_mae"))
            lines.append(f"Patients screened ({s['patients']}: {s.get('infected', '?')} infected, "
                         f"{s.get('healthy', '?')} healthy): {figures}")
        return "\n".join(lines)


def evaluate_scores(labels: np.ndarray, scores: np.ndarray, patients: list[str], threshold: float,
                    reps: int = 1000, seed: int = config.SEED) -> Evaluation:
    """Metrics, intervals, confusion matrix and per-patient accuracy from P(Parasitized) scores."""
    if len(labels) == 0:
        raise MalariaError("There are no cells to score; check the data folder or split.")
    y = (np.asarray(labels) == POSITIVE).astype(int)
    pred = (scores >= threshold).astype(int)
    notes = []
    if len(np.unique(y)) < 2:
        present = config.CLASSES[POSITIVE] if y[0] == 1 else config.CLASSES[1 - POSITIVE]
        notes.append(f"Only {present} cells are present, so AUC, MCC and "
                     + ("specificity" if y[0] == 1 else "sensitivity") + " cannot be computed; they are n/a.")
    per_patient = []
    for patient in sorted(set(patients)):
        idx = np.array([i for i, p in enumerate(patients) if p == patient])
        per_patient.append({"patient": patient, "cells": len(idx), "parasitized": int(y[idx].sum()),
                            "accuracy": float(np.mean(pred[idx] == y[idx]))})
    return Evaluation(
        n_images=len(y),
        n_patients=len({p for p in patients if p}),
        threshold=float(threshold),
        metrics=point_metrics(y, scores, threshold),
        intervals=bootstrap_intervals(y, scores, patients, threshold, reps, seed),
        confusion={"tp": int(np.sum((pred == 1) & (y == 1))), "fn": int(np.sum((pred == 0) & (y == 1))),
                   "fp": int(np.sum((pred == 1) & (y == 0))), "tn": int(np.sum((pred == 0) & (y == 0)))},
        per_patient=per_patient,
        notes=notes,
    )


def evaluate_model(model_path: str | Path, split_dir: str | Path | None = None, data_dir: str | Path | None = None,
                   part: str = "test", tta: bool = False, reps: int = 1000) -> Evaluation:
    """Score a saved model on a split's test part or on any folder in the NIH layout."""
    from .pipeline import read_folder, read_part
    from .train import load_model

    if (split_dir is None) == (data_dir is None):
        raise MalariaError("Give either --split (a split's test part) or --data (a folder in the NIH layout).")
    model = load_model(model_path)
    card = read_card(model_path, model)
    cells = read_part(split_dir, part) if split_dir is not None else read_folder(data_dir)
    scores = predict_proba(model, cells, card, tta=tta)
    evaluation = evaluate_scores(cells.labels, scores, cells.patients, float(card.get("threshold", 0.5)), reps)
    if card.get("threshold_from") == "default":
        evaluation.notes.append(f"No model card {card_path(model_path).name} beside the model: threshold 0.5 used.")
    size = int(model.input_shape[1])
    evaluation.notes.append(f"Cells were resized to the model's {size}x{size} input.")
    from .screen import rule_from_card, screen_scores

    rule = rule_from_card(card)
    if rule is not None and all(cells.patients):
        evaluation.patients = screen_scores(scores, cells.patients, rule, cells.labels, reps).to_dict()
    else:
        evaluation.notes.append("No patient screening: " + ("the model card holds no screening rule (`malaria screen "
                                "--split` chooses one)." if rule is None else "some cells have no patient key."))
    return evaluation
