"""Figures about cells, with honest intervals: the threshold rule, point metrics, one bootstrap over patients.

No Keras here: these functions take scores and labels, so evaluation, screening, calibration and the
benchmarks share them. Cells of one patient are not independent (same smear, stain, microscope),
so intervals come from resampling whole patients; proportions get exact binomial intervals.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy.stats import binomtest
from sklearn import metrics as skm

from . import config
from .errors import MalariaError

METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "mcc", "auc")
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


def bootstrap_over_patients(n_patients: int, statistic: Callable[[np.ndarray], dict[str, float | None]],
                            reps: int = 1000, seed: int = config.SEED) -> dict[str, list[float] | None]:
    """95% percentile intervals of STATISTIC over `reps` resamplings of the patients (drawn with replacement).

    STATISTIC takes the indices of the drawn patients (a patient drawn twice appears twice) and returns named
    figures; a figure it cannot compute on a sample (None: say, no healthy patient was drawn) is left out of
    that figure's distribution, and a figure left out of more than half the samples gets None, not an interval.
    The one bootstrap of the library: cell metrics (evaluation) and patient figures (screening) use it alike.
    """
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(reps):
        drawn = rng.integers(0, n_patients, n_patients)
        for name, value in statistic(drawn).items():
            samples.setdefault(name, [])
            if value is not None:
                samples[name].append(value)
    return {name: ([float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) >= reps // 2 else None)
            for name, v in samples.items()}


def bootstrap_intervals(y: np.ndarray, scores: np.ndarray, patients: list[str], threshold: float,
                        reps: int = 1000, seed: int = config.SEED) -> dict[str, list[float] | None]:
    """95% intervals of the cell metrics from resampling whole patients (a cell without a patient counts alone)."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(patients):
        groups.setdefault(p or f"cell{i}", []).append(i)
    members = [np.array(v) for v in groups.values()]

    def figures(drawn: np.ndarray) -> dict[str, float | None]:
        pick = np.concatenate([members[i] for i in drawn])
        return point_metrics(y[pick], scores[pick], threshold)

    found = bootstrap_over_patients(len(members), figures, reps, seed)
    return {m: found.get(m) for m in METRICS}


def proportion_interval(k: int, n: int) -> list[float]:
    """Exact 95% interval of k successes in n trials (Clopper-Pearson)."""
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="exact")
    return [float(ci.low), float(ci.high)]
