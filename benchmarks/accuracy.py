"""Patient-level k-fold cross-validation: how well each model does on patients it never saw.

Every patient is scored exactly once, by a model trained without it. Folds hold whole patients
(both classes of a patient in one fold), with infected and healthy patients dealt evenly over the
folds. Inside each fold's training patients, 15% of patients are kept apart for validation (best
epoch, threshold), so the test fold influences nothing.

Writes JSON: per fold and model the metrics and training time, their mean and standard deviation,
the same with test-time augmentation (--tta), the AUC of the pooled out-of-fold scores, and the
patient screening figures over all patients: each fold's test patients judged by the rule that
fold's model chose on its own validation patients (stored in its model card), then pooled, so
every healthy patient counts. With --oof, every cell's out-of-fold score and every patient's row
are written too (the screening chapter reads them).

    python benchmarks/accuracy.py --source ../shared/data/malaria_cells_dev.zip --models malarianet
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from malaria_lib import config  # noqa: E402
from malaria_lib.evaluate import METRICS, POSITIVE, evaluate_scores, predict_proba, read_card  # noqa: E402
from malaria_lib.fetch import fetch  # noqa: E402
from malaria_lib.inventory import CellRecord, list_cells  # noqa: E402
from malaria_lib.pipeline import read_part  # noqa: E402
from malaria_lib.screen import patient_table, rule_from_card, summarise_patients  # noqa: E402
from malaria_lib.split import _assign_by_patient, write_split  # noqa: E402
from malaria_lib.train import load_model, train, versions  # noqa: E402


def patient_folds(cells: list[CellRecord], k: int, seed: int) -> dict[str, int]:
    """Fold of each patient: infected and healthy patients each shuffled and dealt out in turn, largest first."""
    counts: dict[str, int] = {}
    infected: set[str] = set()
    for cell in cells:
        counts[cell.patient] = counts.get(cell.patient, 0) + 1
        if cell.label == config.POSITIVE_CLASS:
            infected.add(cell.patient)
    rng = np.random.default_rng(seed)
    fold: dict[str, int] = {}
    turn = 0
    for group in (sorted(infected), sorted(set(counts) - infected)):
        shuffled = [group[i] for i in rng.permutation(len(group))]
        for patient in sorted(shuffled, key=lambda p: -counts[p]):  # stable: ties keep the seeded order
            fold[patient] = turn % k
            turn += 1
    return fold


def run(args: argparse.Namespace) -> dict:
    if args.source:
        fetch(args.source, args.data_dir, progress=False)
    cells, _ = list_cells(args.data_dir)
    folds = patient_folds(cells, args.folds, args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="malaria-cv-"))
    results: dict = {"folds": args.folds, "profile": args.profile, "seed": args.seed, "models": {}}
    oof: dict[str, dict] = {}
    for model in args.models:
        per_fold, per_fold_tta, rows_all, tta_rows_all = [], [], [], []
        scores_all, tta_all, labels_all, patients_all, paths_all = [], [], [], [], []
        for k in range(args.folds):
            test_cells = [c for c in cells if folds[c.patient] == k]
            rest = [c for c in cells if folds[c.patient] != k]
            rest_parts = _assign_by_patient(rest, (0.85, 0.15, 0.0), args.seed + k)
            split = work / f"fold{k}"
            write_split(rest + test_cells, rest_parts + ["test"] * len(test_cells), split,
                        {"strategy": "cv", "fold": k, "folds": args.folds, "seed": args.seed})
            started = time.perf_counter()
            trained = train(model, split, work / f"{model}_fold{k}", args.profile, seed=args.seed, force=True,
                            verbose=2 if args.verbose else 0, **({"epochs": args.epochs} if args.epochs else {}))
            seconds = time.perf_counter() - started
            test = read_part(split, "test")
            network = load_model(trained.best_model)
            card = read_card(trained.best_model, network)
            rule = rule_from_card(card)
            variants = [("plain", False, per_fold, rows_all, scores_all)]
            if args.tta:
                variants.append(("tta", True, per_fold_tta, tta_rows_all, tta_all))
            for _, tta, fold_rows, patient_rows, kept in variants:
                started_predict = time.perf_counter()
                scores = predict_proba(network, test, card, tta=tta)
                predict_seconds = time.perf_counter() - started_predict
                evaluation = evaluate_scores(test.labels, scores, test.patients, card["threshold"], reps=args.bootstrap)
                fold_rows.append({"fold": k, "patients": evaluation.n_patients, "cells": evaluation.n_images,
                                  "train_seconds": round(seconds, 1), "epochs": len(trained.history.get("epoch", [])),
                                  "predict_ms_per_cell": round(1000 * predict_seconds / len(test), 3),
                                  "threshold": card["threshold"], **evaluation.metrics})
                kept.append(scores)
                if rule is not None:
                    table = patient_table(scores, test.patients, rule.cell_threshold, test.labels)
                    for row in table:
                        row.update(fold=k, verdict=rule.infected(row["called_parasitized"], row["cells"]),
                                   cutoff=rule.cutoff)
                    patient_rows.extend(table)
            labels_all.append(test.labels)
            patients_all += test.patients
            paths_all += [Path(p).name for p in test.paths]
            m = per_fold[-1]
            print(f"{model} fold {k}: accuracy {m['accuracy']:.4f} auc {m['auc']} in {seconds:.0f} s"
                  + (f"; with TTA {per_fold_tta[-1]['accuracy']:.4f}" if args.tta else ""), file=sys.stderr)
        pooled_labels = np.concatenate(labels_all)
        positive = (pooled_labels == POSITIVE).astype(int)
        entry: dict = {}
        for name, fold_rows, patient_rows, kept in (("plain", per_fold, rows_all, scores_all),
                                                    ("tta", per_fold_tta, tta_rows_all, tta_all)):
            if not fold_rows:
                continue
            summary = {}
            for metric in (*METRICS, "train_seconds", "predict_ms_per_cell"):
                values = [f[metric] for f in fold_rows if f[metric] is not None]
                summary[metric] = {"mean": float(np.mean(values)),
                                   "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
            pooled = np.concatenate(kept)
            part = {"per_fold": fold_rows, "summary": summary, "pooled_auc": float(roc_auc_score(positive, pooled))}
            if patient_rows:
                figures, notes = summarise_patients(patient_rows, "fraction", reps=args.bootstrap, seed=args.seed)
                part["patients"] = {"summary": figures, "notes": notes, "rows": patient_rows}
            entry[name] = part
        results["models"][model] = {**entry["plain"], **({"tta": entry["tta"]} if "tta" in entry else {})}
        oof[model] = {"cells": [{"file": f, "patient": p, "label": config.CLASSES[int(y)], "fold": folds[p],
                                 "score": float(s), **({"score_tta": float(t)} if args.tta else {})}
                                for f, p, y, s, t in zip(paths_all, patients_all, pooled_labels,
                                                         np.concatenate(scores_all),
                                                         np.concatenate(tta_all) if args.tta else
                                                         np.zeros(len(pooled_labels)), strict=True)],
                      "patients": rows_all}
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), **versions(),
                          "date": time.strftime("%Y-%m-%d")}
    results["data"] = {"source": args.source or str(args.data_dir), "cells": len(cells), "patients": len(folds)}
    if args.oof:
        Path(args.oof).parent.mkdir(parents=True, exist_ok=True)
        Path(args.oof).write_text(json.dumps(oof))
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="zip, folder or URL to fetch first (e.g. the dev zip)")
    parser.add_argument("--data-dir", default="data", help="folder holding cell_images/")
    parser.add_argument("--models", nargs="+", default=["malarianet", "tutorial_a", "tutorial_b"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--epochs", type=int, help="override the profile's epochs (for quick checks)")
    parser.add_argument("--seed", type=int, default=config.SEED)
    parser.add_argument("--tta", action="store_true", help="also score with the 8 flips and rotations (reported under 'tta')")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples for each fold's intervals")
    parser.add_argument("--work", help="folder for the folds' splits and runs (default: a temporary folder)")
    parser.add_argument("--oof", help="also write every cell's out-of-fold score to this JSON file")
    parser.add_argument("--out", default="benchmarks/results/accuracy.json")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    results = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    for model, entry in results["models"].items():
        for name, part in (("", entry), (" +TTA", entry.get("tta"))):
            if part is None:
                continue
            s = part["summary"]
            print(f"{model + name:<16} " + "  ".join(f"{m} {s[m]['mean']:.4f}±{s[m]['std']:.4f}" for m in
                                                     ("accuracy", "sensitivity", "specificity", "auc"))
                  + f"  train {s['train_seconds']['mean']:.0f}±{s['train_seconds']['std']:.0f} s")
            if "patients" in part:
                p = part["patients"]["summary"]
                print(f"{'':<16} patients {p['patients']}: " + "  ".join(
                    f"{m} {'n/a' if p.get(m) is None else format(p[m], '.3f')}"
                    for m in ("sensitivity", "specificity", "auc", "fraction_mae")))
    return results


if __name__ == "__main__":
    main()
