"""Screening rules compared out of fold: each rule's settings chosen on each fold's validation patients only.

Reads the folds and networks that `benchmarks/accuracy.py --work DIR` trained (DIR/fold{k}/ and
DIR/MODEL_fold{k}/best.keras), scores each fold's validation and test cells once, and for every chooser in
`malaria_lib.rules.CHOOSERS` chooses the rule on that fold's validation patients (cells of its healthy patients
for the false-positive rate) and judges that fold's test patients with it. Pooled over the folds every patient
is screened once by a network and a rule that never saw it. Writes per rule the sensitivity and specificity
over patients with exact (Clopper-Pearson) intervals, the patients it misses and the healthy ones it flags, each
fold's rule, and, apart from the candidates, the default rule at other false-alarm rates and the best any
single cutoff on the pooled fractions could have done in hindsight (not a rule: it looks at the scored patients).

    python benchmarks/accuracy.py --data-dir data --models malarianet --work build/cv
    python benchmarks/screening_rules.py --work build/cv
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from malaria_lib.artifacts import load_model, read_card  # noqa: E402
from malaria_lib.calibration import decisions_from_validation  # noqa: E402
from malaria_lib.inference import predict_proba  # noqa: E402
from malaria_lib.pipeline import read_part  # noqa: E402
from malaria_lib.rules import ABOUT, CHOOSERS, DEFAULT_CHOOSER, choose_default_rule  # noqa: E402
from malaria_lib.screening import patient_table, summarise_patients  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine_facts  # noqa: E402

SWEEP = (0.01, 0.02, 0.05, 0.1)  # false-alarm rates for the default rule, reported apart from the candidates
KEPT = ("patient", "fold", "cells", "called_parasitized", "fraction", "fraction_ci", "labelled_fraction", "infected", "verdict",
        "p_healthy", "why")


def score_folds(work: Path, model: str, folds: int) -> list[dict]:
    """Per fold: the cell threshold and the validation and test patients' rows (cells, called, labels)."""
    scored = []
    for k in range(folds):
        split, network_path = work / f"fold{k}", work / f"{model}_fold{k}" / "best.keras"
        if not network_path.is_file():
            sys.exit(f"{network_path} does not exist; train the folds first: python benchmarks/accuracy.py "
                     f"--data-dir DATA --models {model} --work {work}")
        network = load_model(network_path)
        card = read_card(network_path, network)
        val, test = read_part(split, "val"), read_part(split, "test")
        val_scores, test_scores = predict_proba(network, val, card), predict_proba(network, test, card)
        threshold = decisions_from_validation(val_scores, val)["threshold"]
        scored.append({"fold": k, "threshold": threshold,
                       "val": patient_table(val_scores, val.patients, threshold, val.labels),
                       "test": patient_table(test_scores, test.patients, threshold, test.labels),
                       "recipe": json.loads((network_path.parent / "settings.json").read_text()).get("recipe")})
        print(f"fold {k}: {len(val)} validation and {len(test)} test cells scored", file=sys.stderr)
    return scored


def judge(scored: list[dict], chooser, reps: int) -> dict:
    """Pooled out-of-fold screening with the rule `chooser` makes on each fold's validation patients."""
    rows, per_fold = [], []
    for fold in scored:
        rule = chooser(fold["val"], fold["threshold"])
        per_fold.append({"fold": fold["fold"], "rule": asdict(rule), "description": rule.describe()})
        for row in fold["test"]:
            called, cells = row["called_parasitized"], row["cells"]
            row = {**row, "fold": fold["fold"], "verdict": rule.infected(called, cells),
                   "why": rule.explain(called, cells),
                   "p_healthy": rule.p_healthy(called, cells)}
            rows.append({k: row[k] for k in KEPT})
    summary, notes = summarise_patients(rows, "fraction", reps=reps)
    return {"summary": summary, "notes": notes,
            "found": f"{summary['confusion']['tp']} of {summary['infected']}",
            "cleared": f"{summary['confusion']['tn']} of {summary['healthy']}",
            "missed": [r["patient"] for r in rows if r["infected"] and not r["verdict"]],
            "false_alarms": [r["patient"] for r in rows if not r["infected"] and r["verdict"]],
            "per_fold": per_fold, "rows": rows}


def hindsight(scored: list[dict]) -> dict:
    """The most infected patients any single cutoff on the pooled fractions finds while clearing at least as many
    healthy ones as each count: a ceiling chosen by looking at the scored patients, so not a result."""
    rows = [r for fold in scored for r in fold["test"]]
    healthy = sorted((r["fraction"] for r in rows if not r["infected"]), reverse=True)
    infected = np.array([r["fraction"] for r in rows if r["infected"]])
    ceiling = {}
    for flagged in range(len(healthy) + 1):  # healthy patients allowed above the cutoff
        cutoff = healthy[flagged] if flagged < len(healthy) else -1.0
        ceiling[f"{len(healthy) - flagged} of {len(healthy)} cleared"] = f"{int((infected > cutoff).sum())} of {len(infected)} found"
    return ceiling


def run(args: argparse.Namespace) -> dict:
    scored = score_folds(Path(args.work), args.model, args.folds)
    rules = {name: judge(scored, chooser, args.bootstrap) for name, chooser in CHOOSERS.items()}
    sweep = {str(alpha): judge(scored, lambda rows, t, a=alpha: choose_default_rule(rows, t, false_alarm_rate=a),
                               args.bootstrap) for alpha in SWEEP}
    for entry in sweep.values():
        del entry["rows"], entry["per_fold"]
    cells = sum(r["cells"] for fold in scored for r in fold["test"])
    return {"about": __doc__.split("\n\n")[0], "model": args.model, "folds": args.folds, "work": str(args.work),
            "default": DEFAULT_CHOOSER,
            "choosers": ABOUT,
            "rules": rules, "default_false_alarm_sweep": sweep, "hindsight_ceiling": hindsight(scored),
            "recipe": scored[0]["recipe"],
            "data": {"patients": sum(len(f["test"]) for f in scored), "cells": cells},
            "machine": machine_facts()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="the --work folder of benchmarks/accuracy.py")
    parser.add_argument("--model", default="malarianet")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples for the AUC over patients")
    parser.add_argument("--out", default="benchmarks/results/screening_rules.json")
    args = parser.parse_args(argv)
    results = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"{'rule':<20} {'found':>9} {'cleared':>9}  sensitivity (95% CI)   specificity (95% CI)   missed; false alarms")
    for name, entry in results["rules"].items():
        s, ci = entry["summary"], entry["summary"]["intervals"]
        print(f"{name + (' *' if name == results['default'] else ''):<20} {entry['found']:>9} {entry['cleared']:>9}  "
              f"{s['sensitivity']:.3f} ({ci['sensitivity'][0]:.3f}-{ci['sensitivity'][1]:.3f})  "
              f"{s['specificity']:.3f} ({ci['specificity'][0]:.3f}-{ci['specificity'][1]:.3f})  "
              f"{', '.join(entry['missed']) or 'none'}; {', '.join(entry['false_alarms']) or 'none'}")
    print("the default at other false-alarm rates: " + "; ".join(
        f"{a}: {e['found']} found, {e['cleared']} cleared" for a, e in results["default_false_alarm_sweep"].items()))
    print("hindsight ceiling (not a rule): " + "; ".join(f"{k}: {v}" for k, v in results["hindsight_ceiling"].items()))
    return results


if __name__ == "__main__":
    main()
