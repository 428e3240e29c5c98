"""Condense benchmarks/results/ into malaria_lib/results/reference_results.json, the figures the chapters quote.

A learner who opens chapter 5 or 9 on Colab has the installed package, not this folder, so the
cross-validation and ablation figures those chapters print travel inside the package. This script is
the only writer of that file; tests/test_reference.py fails when it no longer matches the results here.

    python benchmarks/reference.py            # rewrite the file
    python benchmarks/reference.py --check    # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET = ROOT / "malaria_lib" / "results" / "reference_results.json"
SUMMARY_KEYS = ("accuracy", "sensitivity", "specificity", "auc", "accuracy_at_hindsight_threshold",
                "accuracy_threshold_medians", "accuracy_threshold_youden", "accuracy_threshold_fixed", "train_seconds")
# (label in chapter 5, results file, key inside models.malarianet or None for the entry itself)
VARIANTS = (
    ("our recipe", "accuracy.json", None),
    ("  with TTA", "accuracy.json", "tta"),
    ("  another seed", "accuracy.json", "seed1338"),
    ("  both seeds, averaged", "accuracy.json", "ensemble"),
    ("without standardizing", "accuracy_unstandardized.json", None),
    ("  with TTA ", "accuracy_unstandardized.json", "tta"),
    ("  another seed ", "accuracy_unstandardized.json", "seed1338"),
    ("  both seeds, averaged ", "accuracy_unstandardized.json", "ensemble"),
    ("constant learning rate", "accuracy_constant_lr.json", None),
    ("no augmentation", "accuracy_no_augmentation.json", None),
)


def condense(results: Path = RESULTS) -> dict:
    """The chapters' figures from the benchmark results in RESULTS."""
    def load(name: str) -> dict | None:
        path = results / name
        return json.loads(path.read_text()) if path.is_file() else None

    accuracy = load("accuracy.json") or {}
    variants = []
    for label, name, key in VARIANTS:
        entry = ((load(name) or {}).get("models") or {}).get("malarianet")
        part = entry if key is None or entry is None else entry.get(key)
        if part is None:
            continue
        summary = {k: part["summary"][k] for k in SUMMARY_KEYS if k in part["summary"]}
        variants.append({"name": label, "file": f"benchmarks/results/{name}", "folds": len(entry["per_fold"]),
                         "summary": summary})
    ours = (accuracy.get("models") or {}).get("malarianet") or {}
    rules = load("screening_rules.json")
    return {
        "about": "Figures quoted by chapters 5 and 9, condensed from benchmarks/results/ by benchmarks/reference.py; "
                 "5-fold cross-validation by patient on the 60-patient dev subset, cpu profile.",
        "machine": accuracy.get("machine"),
        "data": accuracy.get("data"),
        "ablation": (load("ablation.json") or {}).get("runs", []),
        "cross_validation": variants,
        # the default rule's out-of-fold screening when the rules were compared, else the cross-validation's own
        "patients_out_of_fold": (_screening(rules["rules"][rules["default"]]) if rules else ours.get("patients")),
        "screening_rules": None if rules is None else {
            "default": rules["default"], "choosers": rules["choosers"], "machine": rules["machine"],
            "data": rules["data"], "hindsight_ceiling": rules["hindsight_ceiling"],
            "rules": {name: {k: entry[k] for k in ("found", "cleared", "missed", "false_alarms")}
                      | {"summary": {k: entry["summary"][k] for k in ("sensitivity", "specificity", "intervals")}}
                      for name, entry in rules["rules"].items()},
            "default_false_alarm_sweep": {alpha: {k: entry[k] for k in ("found", "cleared", "missed", "false_alarms")}
                                          for alpha, entry in rules["default_false_alarm_sweep"].items()}},
    }


def _screening(entry: dict) -> dict:
    """A rule's pooled out-of-fold screening in the shape chapter 9 reads: summary, notes, a row per patient."""
    return {"summary": entry["summary"], "notes": entry["notes"], "rows": entry["rows"],
            "rule_per_fold": [fold["description"] for fold in entry["per_fold"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = json.dumps(condense(), indent=1, sort_keys=True) + "\n"
    if args.check:
        stale = not TARGET.is_file() or TARGET.read_text() != text
        print(f"{TARGET} is {'stale: run python benchmarks/reference.py' if stale else 'up to date'}")
        return int(stale)
    TARGET.write_text(text)
    print(f"Wrote {TARGET} ({len(text) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
