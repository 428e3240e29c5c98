"""Whole training epochs as `malaria train` runs them, at two sizes: the dev subset and the NIH archive's size.

`throughput.py` times training steps in isolation (fixed step counts on a repeated dataset); what a learner
waits for is whole epochs: a new pass over the cached cells, the training steps, the validation pass and the
checkpoints. This script calls `malaria_lib.train.train` itself, with the `cpu` recipe of each model (so the
network, its standardization, the augmentation and the input pipeline are exactly the real ones), on a patient
split (seed 1337) of each folder, for a few epochs, and records per epoch: the seconds `train` wrote to
history.csv, the same epoch timed from outside (a Keras callback after train's own, so it includes writing the
checkpoints) split into training steps and validation, and the cells per second of each. The first epoch (decoding every PNG, tracing the graphs) is reported apart.

The full-size folder is the dev subset repeated under new patient numbers (`full_size_folder.py`): the cost of
every cell is a real cell's. Two figures answer the scaling question: `full_over_dev`, the full size's steady
training speed per cell over the dev subset's (1.0 = no loss at size), and `agreement`, the outside clock over
train's own log (above 1 by the checkpoints' writing).

    python benchmarks/full_size_folder.py --source data/dev --out /tmp/full_size
    python benchmarks/epochs.py --dev data/dev --full /tmp/full_size --models tutorial_a malarianet
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import malaria_lib  # noqa: E402, F401  (first: it sets TensorFlow's CPU options before TensorFlow loads)

# isort: split
import keras  # noqa: E402

from malaria_lib.split import make_split  # noqa: E402
from malaria_lib.train import train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Monitor, load_average, machine_facts, wait_for_idle  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "epochs.json"


class EpochClock(keras.callbacks.Callback):
    """When each epoch began, when its validation began, and when it ended (after train's own callbacks)."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._begin, self._val = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        self._val = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = time.perf_counter()
        val = self._val or end
        self.epochs.append({"epoch": epoch + 1, "train_seconds": val - self._begin, "val_seconds": end - val,
                            "seconds": end - self._begin})


def measure(model: str, split: Path, out: Path, epochs: int, profile: str, **overrides) -> dict:
    """Train MODEL for EPOCHS epochs of its PROFILE recipe (with OVERRIDES) on SPLIT and time each epoch from inside
    and outside."""
    clock, monitor = EpochClock(), Monitor()
    with monitor:
        result = train(model, split, out, profile, epochs=epochs, force=True, verbose=0, callbacks=[clock],
                       **overrides)
    cells, val_cells = result.settings["train_images"], result.settings["val_images"]
    logged = result.history["seconds"]
    rows = [{**row, "logged_seconds": logged[i], "checkpoint_seconds": row["seconds"] - logged[i],
             "train_cells_per_s": cells / row["train_seconds"],
             "cells_per_s": cells / row["seconds"], "val_cells_per_s": val_cells / max(row["val_seconds"], 1e-9)}
            for i, row in enumerate(clock.epochs)]
    steady = rows[1:] or rows
    return {"train_cells": cells, "val_cells": val_cells, "epochs": rows,
            "first_epoch_seconds": rows[0]["seconds"],
            "steady_train_cells_per_s": statistics.median(r["train_cells_per_s"] for r in steady),
            "steady_cells_per_s": statistics.median(r["cells_per_s"] for r in steady),
            "steady_val_seconds": statistics.median(r["val_seconds"] for r in steady),
            "agreement": statistics.median(r["seconds"] / r["logged_seconds"] for r in rows),
            "recipe": result.settings["recipe"], **monitor.report()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", type=Path, required=True, help="the dev subset, fetched (holds cell_images/)")
    parser.add_argument("--full", type=Path, required=True, help="a folder of the archive's size (full_size_folder.py)")
    parser.add_argument("--models", nargs="+", default=["tutorial_a", "tutorial_b", "malarianet"])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is reported apart)")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--work", type=Path, help="splits and runs (default: a temporary folder)")
    parser.add_argument("--wait-for-idle", type=float, default=0, metavar="SECONDS")
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    work = args.work or Path(tempfile.mkdtemp(prefix="malaria-epochs-"))
    results: dict = {"benchmark": "epochs", "machine": machine_facts(), "settings": {
        "epochs": args.epochs, "profile": args.profile, "models": args.models, "split": "patient 0.7/0.15/0.15, seed 1337"},
        "idle_wait": wait_for_idle(args.max_load, args.wait_for_idle, say) if args.wait_for_idle else None,
        "load_before": load_average(), "sizes": {}}
    for size, folder in (("dev", args.dev), ("full", args.full)):
        split = make_split(folder, work / f"split_{size}", "patient", (0.7, 0.15, 0.15), seed=1337)
        results["sizes"][size] = {"data": str(folder), "cells": sum(sum(c.values()) for c in split.counts.values()),
                                  "models": {}}
        for model in args.models:
            say(f"{size}: {model}, {args.epochs} epochs")
            entry = measure(model, split.out, work / f"{model}_{size}", args.epochs, args.profile)
            results["sizes"][size]["models"][model] = entry
            say(f"  first epoch {entry['first_epoch_seconds']:.0f} s; then {entry['steady_train_cells_per_s']:.0f} "
                f"cells/s training, {entry['steady_cells_per_s']:.0f} with validation; agreement {entry['agreement']:.3f}")
    results["full_over_dev"] = {
        model: {kind: results["sizes"]["full"]["models"][model][kind] / results["sizes"]["dev"]["models"][model][kind]
                for kind in ("steady_train_cells_per_s", "steady_cells_per_s")} for model in args.models}
    results["load_after"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    for model, ratio in results["full_over_dev"].items():
        say(f"{model:<12} full size / dev subset, cells per second: training {ratio['steady_train_cells_per_s']:.2f}, "
            f"with validation {ratio['steady_cells_per_s']:.2f}")
    return results


if __name__ == "__main__":
    main()
