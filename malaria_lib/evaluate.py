"""Scoring a trained model honestly: metrics with patient-bootstrap intervals, per-patient accuracy.

The decision threshold on P(Parasitized) is chosen on validation data (midway between the typical
parasitized and the typical uninfected score) and stored beside the model, so the test data never
influence it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config
from .artifacts import card_path, load_model, read_card
from .config import POSITIVE
from .errors import MalariaError, UsageError
from .inference import predict_proba
from .metrics import METRICS, bootstrap_intervals, point_metrics
from .pipeline import drop_unreadable, read_folder, read_part, unreadable_note
from .screening import rule_from_card, screen_scores


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
    unreadable: list[str] = field(default_factory=list)  # files of --data that could not be read, left out

    def to_dict(self) -> dict:
        flat: dict = {k: v for k, v in self.metrics.items()}
        flat.update(n_images=self.n_images, n_patients=self.n_patients, threshold=self.threshold,
                    intervals=self.intervals, confusion=self.confusion, per_patient=self.per_patient, notes=self.notes,
                    unreadable=self.unreadable)
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
    if (split_dir is None) == (data_dir is None):
        raise UsageError("Give either --split (a split's test part) or --data (a folder in the NIH layout).")
    model = load_model(model_path)
    card = read_card(model_path, model)
    unreadable: list[str] = []
    if split_dir is not None:
        cells = read_part(split_dir, part)
    else:
        cells, unreadable = drop_unreadable(read_folder(data_dir))
    scores = predict_proba(model, cells, card, tta=tta)
    evaluation = evaluate_scores(cells.labels, scores, cells.patients, float(card.get("threshold", 0.5)), reps)
    if unreadable:
        evaluation.unreadable = unreadable
        evaluation.notes.append(unreadable_note(unreadable))
    if card.get("threshold_from") == "default":
        evaluation.notes.append(f"No model card {card_path(model_path).name} beside the model: threshold 0.5 used.")
    size = int(model.input_shape[1])
    evaluation.notes.append(f"Cells were resized to the model's {size}x{size} input.")
    rule = rule_from_card(card)
    if rule is not None and all(cells.patients):
        evaluation.patients = screen_scores(scores, cells.patients, rule, cells.labels, reps).to_dict()
    else:
        evaluation.notes.append("No patient screening: " + ("the model card holds no screening rule (`malaria screen "
                                "--split` chooses one)." if rule is None else "some cells have no patient key."))
    return evaluation
