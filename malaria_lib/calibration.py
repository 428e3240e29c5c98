"""Decisions a model card stores, made on validation data only: the cell threshold and the screening rule.

The test cells and patients never influence them: the threshold sits midway between the class
medians of the validation cells' scores, and the screening rule is chosen on the validation
patients (`rules.choose_default_rule`).
"""

from __future__ import annotations

from dataclasses import asdict

import keras
import numpy as np

from . import config
from .inference import predict_proba
from .metrics import choose_threshold
from .pipeline import SplitPart
from .rules import CHOOSERS, DEFAULT_CHOOSER, Rule, choose_default_rule
from .screening import patient_table


def decisions_from_validation(scores: np.ndarray, val_part: SplitPart) -> dict:
    """The cell threshold (midway between the class medians of the validation cells) and, when patients are known,
    the screening rule chosen on the same validation patients: what a model card stores, for one model's scores or
    an ensemble's mean."""
    positive = val_part.labels == config.CLASSES.index(config.POSITIVE_CLASS)
    decisions: dict = {"threshold": choose_threshold(positive.astype(int), scores),
                       "threshold_from": f"validation cells ({len(val_part)}), midway between the class medians"}
    if all(val_part.patients):
        rows = patient_table(scores, val_part.patients, decisions["threshold"], val_part.labels)
        decisions["screening"] = asdict(choose_default_rule(rows, decisions["threshold"]))
    return decisions


def calibrate_rule(model: keras.Model, val_part: SplitPart, card: dict, chooser: str = DEFAULT_CHOOSER,
                   tta: bool = False) -> Rule:
    """Choose the screening rule on a split's validation patients with the model's own cell threshold."""
    scores = predict_proba(model, val_part, card, tta=tta)
    rows = patient_table(scores, val_part.patients, float(card.get("threshold", 0.5)), val_part.labels)
    return CHOOSERS[chooser](rows, float(card.get("threshold", 0.5)))
