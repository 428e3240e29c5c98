"""What each choice of our recipe buys: train variants of `malarianet` on one patient split and score them.

Each variant is the `cpu` recipe with some settings changed (see VARIANTS). Every variant is
trained on the same patient split (70/15/15, seed 1337) and scored on its test patients; the JSON
(default benchmarks/results/ablation.json) gets one row per variant, appended to what is there.
With about 9 test patients on the dev subset, differences below about a point are noise; the
cross-validation benchmark (accuracy.py) is the judge of the final recipe.

    python benchmarks/ablation.py --source ../shared/data/malaria_cells_dev.zip --variants baseline geometric
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from malaria_lib.evaluate import evaluate_model  # noqa: E402
from malaria_lib.fetch import fetch  # noqa: E402
from malaria_lib.split import make_split  # noqa: E402
from malaria_lib.train import train  # noqa: E402

# The stored results (results/ablation.json) predate cell standardization, so the variants leave it out; the
# cross-validation (accuracy.py, accuracy_unstandardized.json) measured what standardizing bought.
_UNSTANDARDIZED = {"standardize": False}
VARIANTS: dict[str, dict] = {
    "baseline": _UNSTANDARDIZED,  # the cpu recipe: 96 px, augmentation with colour jitter, label smoothing 0.05
    "geometric": {**_UNSTANDARDIZED, "augment": "geometric", "label_smoothing": 0.0},  # no jitter, no smoothing
    "geometric_128px": {**_UNSTANDARDIZED, "augment": "geometric", "label_smoothing": 0.0, "input_size": 128},
    "no_augmentation": {**_UNSTANDARDIZED, "augment": None},
    "constant_lr": {**_UNSTANDARDIZED, "schedule": "constant", "learning_rate": 1e-3},
    "20_epochs": {**_UNSTANDARDIZED, "epochs": 20},
    "standardized": {},  # the cpu recipe as shipped
}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="zip, folder or URL to fetch first")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--work", default="build/ablation", help="folder for the split and the runs")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--epochs", type=int, help="override every variant's epochs (quick checks)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--out", default="benchmarks/results/ablation.json")
    args = parser.parse_args(argv)
    if args.source:
        fetch(args.source, args.data_dir, progress=False)
    split = Path(args.work) / "split_patient"
    make_split(args.data_dir, split, "patient", (0.7, 0.15, 0.15), args.seed)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    for name in args.variants:
        overrides = dict(VARIANTS[name], **({"epochs": args.epochs} if args.epochs else {}))
        run = train("malarianet", split, Path(args.work) / name, args.profile, seed=args.seed, force=True,
                    verbose=2, **overrides)
        evaluation = evaluate_model(run.best_model, split, reps=200)
        row = {"name": name, "overrides": overrides, "best_val": run.best_val_accuracy, "best_epoch": run.best_epoch,
               "seconds": run.seconds, "train_accuracy_last": run.history["accuracy"][-1],
               "test": evaluation.metrics, "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d")}
        results["runs"] = [r for r in results["runs"] if r["name"] != name] + [row]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        print(f"{name:<18} val {row['best_val']:.4f} test {evaluation.metrics['accuracy']:.4f} "
              f"AUC {evaluation.metrics['auc']:.4f} {run.seconds / 60:.1f} min")
    return results["runs"]


if __name__ == "__main__":
    main()
