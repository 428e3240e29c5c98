"""Screening patients, the statistics: from cell scores to a parasitized-cell fraction and a verdict per patient.

A clinician screens a patient, not a cell. The cells of a patient are grouped (by the C-number in
their file name, or NIH's mapping CSV), the fraction the model calls parasitized is reported with a
95% interval, and a rule (`rules`: by default a binomial test against the false-positive rate of healthy
patients' cells) turns it into a verdict, with one line saying why. The rule is chosen on validation patients and
stored in the model card, so the patients being scored never influence it.

Intervals: a patient's fraction and the sensitivity and specificity over patients are binomial
proportions, so they get exact (Clopper-Pearson) intervals from scipy; the ROC AUC over patients
and the mean absolute error of the fraction come from resampling patients.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from . import config
from .errors import MalariaError
from .metrics import bootstrap_over_patients, proportion_interval
from .patients import patient_id, read_patient_csv
from .rules import Rule, choose_rule, statistic_of

__all__ = ["Rule", "choose_rule"]  # chapter 9 and older code import them from here
POSITIVE = config.POSITIVE


# ---------------------------------------------------------------- grouping


def group_patients(paths: list[str], mapping: dict[str, str] | None = None) -> list[str]:
    """The patient of every cell, from NIH's mapping (file name -> patient) or else from the file name.

    Raises one sentence when some cells cannot be placed: how many, an example, and what to do.
    """
    names = [Path(p).name for p in paths]
    if mapping is not None:
        missing = [n for n in names if n not in mapping]
        if missing:
            raise MalariaError(
                f"The --patients file(s) do not cover {len(missing)} of the {len(names)} cells (e.g. {missing[0]}); "
                "give NIH's mapping CSVs for both classes, or leave --patients out to read patients from file names.")
        return [mapping[n] for n in names]
    patients = [patient_id(n) for n in names]
    unknown = [n for n, p in zip(names, patients, strict=True) if p is None]
    if unknown:
        raise MalariaError(
            f"{len(unknown)} of the {len(names)} cells have no patient key in their file name (e.g. {unknown[0]}); "
            "give NIH's patientid_cellmapping CSVs with --patients.")
    return [str(p) for p in patients]


def read_patient_csvs(paths: list[str | Path]) -> dict[str, str]:
    """One file name -> patient mapping from one or more NIH mapping CSVs (one per class)."""
    mapping: dict[str, str] = {}
    for path in paths:
        mapping.update(read_patient_csv(path))
    if not mapping:
        raise MalariaError(f"The --patients file(s) {', '.join(map(str, paths))} list no cells; give NIH's mapping CSVs.")
    return mapping


# ---------------------------------------------------------------- per patient


def patient_table(scores: np.ndarray, patients: list[str], cell_threshold: float,
                  labels: np.ndarray | None = None) -> list[dict]:
    """One row per patient: cells, cells called parasitized, their fraction with a 95% interval, and,
    where labels are known, the labelled fraction and whether the patient is infected (any parasitized cell)."""
    scores = np.asarray(scores, dtype=float)
    if len(scores) != len(patients):
        raise MalariaError(f"Got {len(scores)} scores for {len(patients)} cells; give one score per cell.")
    called = scores >= cell_threshold
    rows = []
    for patient in sorted(set(patients), key=_patient_order):
        idx = np.array([i for i, p in enumerate(patients) if p == patient])
        k, n = int(called[idx].sum()), len(idx)
        row = {"patient": patient, "cells": n, "called_parasitized": k, "fraction": k / n,
               "fraction_ci": proportion_interval(k, n), "mean_score": float(scores[idx].mean())}
        if labels is not None:
            is_positive = np.asarray(labels)[idx] == POSITIVE
            positive = int(is_positive.sum())
            row.update(labelled_parasitized=positive, labelled_fraction=positive / n, infected=positive > 0,
                       false_positive_cells=int(np.sum(called[idx] & ~is_positive)))
        rows.append(row)
    return rows


def _patient_order(patient: str) -> tuple[int, str]:
    digits = patient[1:] if patient[:1] == "C" else ""
    return (int(digits), patient) if digits.isdigit() else (10**9, patient)


# ---------------------------------------------------------------- figures over patients


@dataclass
class Screening:
    """What `malaria screen` reports: the rule, a row per patient, and figures over patients."""

    rule: Rule
    patients: list[dict]
    summary: dict
    notes: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # files that could not be read, left out

    def to_dict(self) -> dict:
        return {"rule": asdict(self.rule), "patients": self.patients, "summary": self.summary, "notes": self.notes,
                "unreadable": self.unreadable}

    def table(self) -> str:
        labelled = all("infected" in r for r in self.patients)
        head = f"{'patient':<8} {'cells':>5} {'called':>6} {'fraction (95% CI)':>22}"
        head += f" {'labelled':>8} {'truth':>8}" if labelled else ""
        lines = [f"Rule: {self.rule.describe()}", head + f" {'verdict':>8}  {self.rule.evidence_heading()}"]
        for r in self.patients:
            lo, hi = r["fraction_ci"]
            line = f"{r['patient']:<8} {r['cells']:>5} {r['called_parasitized']:>6} {r['fraction']:>7.3f} ({lo:.3f}-{hi:.3f})"
            if labelled:
                line += f" {r['labelled_fraction']:>8.3f} {'infected' if r['infected'] else 'healthy':>8}"
            evidence = self.rule.evidence(r["called_parasitized"], r["cells"])
            lines.append(line + f" {'infected' if r['verdict'] else 'healthy':>8}  {evidence}")
        s = self.summary
        if labelled:
            def fmt(name: str) -> str:
                value, ci = s[name], s["intervals"].get(name)
                if value is None:
                    return f"{name} n/a"
                return f"{name} {value:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
            lines.append(f"{s['patients']} patients ({s['infected']} infected, {s['healthy']} healthy): "
                         + ", ".join(fmt(m) for m in ("sensitivity", "specificity", "auc", "fraction_mae")))
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def screening_figures(rows: list[dict], rule: Rule, reps: int = 1000, seed: int = config.SEED) -> tuple[dict, list[str]]:
    """Verdicts (added to rows) and sensitivity, specificity, ROC AUC and fraction error over patients.

    A figure that the patients present cannot support (specificity without a healthy patient, AUC
    without both kinds) is None, with a note saying why, never 0 or 1.
    """
    for r in rows:
        r["verdict"] = rule.infected(r["called_parasitized"], r["cells"])
        if rule.statistic == "binomial":
            r["p_healthy"] = rule.p_healthy(r["called_parasitized"], r["cells"])
        r["why"] = rule.explain(r["called_parasitized"], r["cells"])
    return summarise_patients(rows, rule.statistic, reps, seed)


def summarise_patients(rows: list[dict], statistic: str = "fraction", reps: int = 1000,
                       seed: int = config.SEED) -> tuple[dict, list[str]]:
    """Figures over patients whose rows already carry a verdict (e.g. pooled out-of-fold rows, each
    judged by its own fold's rule); `statistic` orders the patients for the ROC."""
    summary: dict = {"patients": len(rows), "called_infected": sum(r["verdict"] for r in rows)}
    notes: list[str] = []
    if len(rows) == 1:
        notes.append(f"Only one patient ({rows[0]['patient']}) is present: its verdict is given, but figures over "
                     "patients need several; score a folder with more patients.")
    if not rows or any("infected" not in r for r in rows):
        notes.append("The cells carry no labels (no Parasitized/Uninfected folders), so only verdicts are given.")
        return summary, notes
    infected = [r for r in rows if r["infected"]]
    healthy = [r for r in rows if not r["infected"]]
    tp = sum(r["verdict"] for r in infected)
    tn = sum(not r["verdict"] for r in healthy)
    summary.update(infected=len(infected), healthy=len(healthy),
                   confusion={"tp": tp, "fn": len(infected) - tp, "fp": len(healthy) - tn, "tn": tn})
    intervals: dict[str, list[float] | None] = {}
    summary["sensitivity"] = tp / len(infected) if infected else None
    intervals["sensitivity"] = proportion_interval(tp, len(infected)) if infected else None
    summary["specificity"] = tn / len(healthy) if healthy else None
    intervals["specificity"] = proportion_interval(tn, len(healthy)) if healthy else None
    if not healthy:
        notes.append("No healthy patient is present, so specificity and the ROC AUC over patients cannot be computed; they are n/a.")
    if not infected:
        notes.append("No infected patient is present, so sensitivity and the ROC AUC over patients cannot be computed; they are n/a.")

    def auc(sample: list[dict]) -> float:
        return float(skm.roc_auc_score([r["infected"] for r in sample], [statistic_of(r, statistic) for r in sample]))

    def mae(sample: list[dict]) -> float:
        return float(np.mean([abs(r["fraction"] - r["labelled_fraction"]) for r in sample]))

    def auc_of(drawn: np.ndarray) -> dict[str, float | None]:
        sample = [rows[i] for i in drawn]
        return {"auc": auc(sample) if len({r["infected"] for r in sample}) == 2 else None}

    both = bool(infected and healthy)
    summary["auc"] = auc(rows) if both else None
    intervals["auc"] = bootstrap_over_patients(len(rows), auc_of, reps, seed)["auc"] if both else None
    summary["fraction_mae"] = mae(rows)
    intervals["fraction_mae"] = (bootstrap_over_patients(len(rows), lambda drawn: {"mae": mae([rows[i] for i in drawn])},
                                                         reps, seed)["mae"] if len(rows) > 1 else None)
    summary["intervals"] = intervals
    return summary, notes


def screen_scores(scores: np.ndarray, patients: list[str], rule: Rule, labels: np.ndarray | None = None,
                  reps: int = 1000, seed: int = config.SEED) -> Screening:
    """Screen every patient from its cells' P(Parasitized) with a given rule."""
    if len(scores) == 0:
        raise MalariaError("There are no cells to screen; check the folder.")
    rows = patient_table(scores, patients, rule.cell_threshold, labels)
    summary, notes = screening_figures(rows, rule, reps, seed)
    return Screening(rule, rows, summary, notes)


def rule_roc(rows: list[dict], statistic: str = "fraction") -> tuple[np.ndarray, np.ndarray] | None:
    """(truth, statistic) over patients for an ROC plot, or None when one kind of patient is missing."""
    truth = np.array([r["infected"] for r in rows], dtype=int)
    if len(np.unique(truth)) < 2:
        return None
    return truth, np.array([statistic_of(r, statistic) for r in rows])


def any_cell_rule(cell_threshold: float) -> Rule:
    """The naive rule "infected if any cell is called parasitized", to compare against."""
    return Rule("count", 0.0, float(cell_threshold), "nothing: the naive any-positive-cell rule")


# ---------------------------------------------------------------- from a model


def rule_from_card(card: dict) -> Rule | None:
    try:
        return Rule.from_dict(card["screening"])
    except (KeyError, TypeError, ValueError):
        return None
