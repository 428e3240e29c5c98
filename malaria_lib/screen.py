"""`malaria screen`: the patients of a folder or of a split's test part, screened with a saved model.

The statistics (grouping, the rule, figures over patients) live in `screening`; this module reads
the cells and the model, and stores a rule in a card that has none.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import config
from .artifacts import card_path, load_model, read_card, write_card
from .calibration import calibrate_rule
from .errors import MalariaError, UsageError
from .inference import predict_proba
from .inventory import cell_dir_of, list_cells
from .pipeline import SplitPart, drop_unreadable, read_part, unreadable_note
from .predict import expand_paths
from .screening import Screening, group_patients, read_patient_csvs, rule_from_card, screen_scores


def cells_to_screen(data_dir: str | Path, patient_csvs: list[str] | None = None):
    """The cells of a folder with their patients: NIH layout (labelled) or any folder of images (unlabelled)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MalariaError(f"The folder {data_dir} does not exist; give a folder of cell images with --data.")
    try:
        cell_dir_of(data_dir, require_all=False)
        cells, _ = list_cells(data_dir, require_all=False)
        paths = [str(c.path) for c in cells]
        labels: np.ndarray | None = np.array([config.CLASSES.index(c.label) for c in cells], dtype=np.int32)
    except MalariaError:
        paths = [str(p) for p in expand_paths([str(data_dir)])]
        labels = None
        if not paths:
            raise MalariaError(f"{data_dir} holds no PNG cell image; give a folder of cells.") from None
    mapping = read_patient_csvs(patient_csvs) if patient_csvs else None
    patients = group_patients(paths, mapping)
    return SplitPart(paths, labels if labels is not None else np.full(len(paths), -1, np.int32), patients), labels is not None


def screen_model(model_path: str | Path, data_dir: str | Path | None = None, split_dir: str | Path | None = None,
                 patient_csvs: list[str] | None = None, tta: bool = False, reps: int = 1000,
                 store_rule: bool = False) -> Screening:
    """Screen the patients of a folder (or of a split's test part) with a saved model and its stored rule.

    A model card without a rule gets one chosen on the split's validation patients when a split is
    given, stored in the card only with `store_rule`; scoring a bare folder needs a card with a rule.
    """
    if (split_dir is None) == (data_dir is None):
        raise UsageError("Give either --split (its test patients are screened) or --data (a folder of cells).")
    model = load_model(model_path)
    card = read_card(model_path, model)
    rule = rule_from_card(card)
    notes = []
    unreadable: list[str] = []
    if split_dir is not None:
        cells, labelled = read_part(split_dir, "test"), True
        if patient_csvs:
            cells.patients = group_patients(cells.paths, read_patient_csvs(patient_csvs))
        if rule is None:
            rule = calibrate_rule(model, read_part(split_dir, "val"), card)
            if store_rule:
                card["screening"] = asdict(rule)
                write_card(model_path, card)
                notes.append(f"The model card had no screening rule; one was chosen on {split_dir}'s validation "
                             f"patients and stored in {card_path(model_path)} (--store-rule).")
            else:
                notes.append(f"The model card has no screening rule; one was chosen on {split_dir}'s validation "
                             "patients for this run only (--store-rule stores it in the card).")
    else:
        cells, labelled = cells_to_screen(data_dir, patient_csvs)
        cells, unreadable = drop_unreadable(cells)
        if unreadable:
            notes.append(unreadable_note(unreadable))
        if not cells.paths:
            raise MalariaError(f"None of the images in {data_dir} could be read; give a folder of cell images.")
        if rule is None:
            raise MalariaError(
                f"The model card {Path(model_path).with_suffix('.json')} holds no screening rule; train the model with "
                "`malaria train` (it chooses one on validation patients) or store one with --split SPLIT --store-rule.")
    counts = Counter(cells.patients)
    scores = predict_proba(model, cells, card, tta=tta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = screen_scores(scores, cells.patients, rule, cells.labels if labelled else None, reps)
    result.notes[:0] = notes
    result.unreadable = unreadable
    result.summary["cells"] = int(sum(counts.values()))
    return result
