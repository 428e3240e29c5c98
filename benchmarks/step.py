"""The training step's speed on a CPU: XLA (`jit_compile=True`) and larger batches against what `train` runs.

Issue 19 asks `make run` on the NIH archive's size to finish within 30 minutes on a 2-core CPU; the budgets cannot
shrink without losing accuracy, so a faster step was the remaining lever. Keras turns XLA off while TensorFlow's op
determinism is on (which `train` sets on a CPU, so that runs repeat exactly), so XLA would cost that promise: this
script measures whether it would buy anything. Each setting runs in its own process (determinism is global):

- `graph, deterministic`: as `train` runs on a CPU;
- `graph`: determinism off, the fair baseline for XLA;
- `xla`: determinism off, `jit_compile=True`;
- `batch N` for each of `--batch-sizes`: as `train` runs, with batches of N cells instead of the recipe's (a
  change of recipe: the learning rate would have to follow, so only the speed is measured here).

Every model is built and compiled with its recipe (`models.build_model`, `train.compile_model`) and fitted on random
cells of its input size from a cached dataset, so only the step is timed (no decoding, no augmentation): after a
warm-up that compiles it, `--epochs` passes over `--steps` batches.

    python benchmarks/step.py --models tutorial_a malarianet --batch-sizes 64
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import load_average, machine_facts  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "step.json"
SETTINGS = {"graph, deterministic": (False, True), "graph": (False, False), "xla": (True, False)}


def time_steps(model_name: str, profile: str, jit: bool, deterministic: bool, steps: int, epochs: int,
               batch_size: int | None = None) -> dict:
    """Fit one model on random cells in this process and time it; what a child process prints."""
    import malaria_lib  # noqa: F401  (first: it sets TensorFlow's CPU options before TensorFlow loads)
    # isort: split
    import keras
    import numpy as np
    import tensorflow as tf

    from malaria_lib.models import build_model
    from malaria_lib.recipes import get_recipe
    from malaria_lib.train import compile_model, set_seed

    set_seed(1, deterministic=deterministic)  # as train seeds, with op determinism only where asked
    recipe = get_recipe(model_name, profile, **({"batch_size": batch_size} if batch_size else {}))
    model = build_model(model_name, recipe.input_size, standardize=recipe.standardize)
    compile_model(model, recipe, steps)
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], jit_compile=jit)
    cells = recipe.batch_size * steps
    images = np.random.default_rng(0).random((cells, recipe.input_size, recipe.input_size, 3), dtype=np.float32)
    labels = keras.utils.to_categorical(np.arange(cells) % 2, 2)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(recipe.batch_size).cache()
    model.fit(data.take(3), epochs=1, verbose=0)  # compiles the step (and with XLA, the cluster)
    started = time.perf_counter()
    history = model.fit(data, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - started
    return {"model": model_name, "jit_compile": bool(model.jit_compile), "deterministic": deterministic,
            "batch_size": recipe.batch_size, "input_size": recipe.input_size, "cells": cells * epochs,
            "seconds": round(seconds, 2), "cells_per_s": round(cells * epochs / seconds, 1),
            "loss": [round(float(v), 5) for v in history.history["loss"]]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tutorial_a", "malarianet"])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=60, help="batches per pass")
    parser.add_argument("--epochs", type=int, default=2, help="timed passes over them")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[],
                        help="also time train's step with batches of these sizes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "JIT", "DETERMINISTIC", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        model, jit, deterministic, batch = args.child
        print(json.dumps(time_steps(model, args.profile, jit == "1", deterministic == "1", args.steps, args.epochs,
                                    int(batch) or None)))
        return {}
    if any(size < 1 for size in args.batch_sizes):
        parser.error("--batch-sizes takes positive numbers of cells")
    settings = {**{name: (*flags, 0) for name, flags in SETTINGS.items()},
                **{f"batch {size}": (False, True, size) for size in args.batch_sizes}}
    results: dict = {"benchmark": "step", "machine": machine_facts(), "load_before": load_average(),
                     "profile": args.profile, "steps": args.steps, "epochs": args.epochs, "runs": []}
    for model in args.models:
        for name, (jit, deterministic, batch) in settings.items():
            command = [sys.executable, __file__, "--child", model, str(int(jit)), str(int(deterministic)), str(batch),
                       "--profile", args.profile, "--steps", str(args.steps), "--epochs", str(args.epochs)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{model} ({name}) failed:\n{done.stderr[-2000:]}")
            run = {"setting": name, **json.loads(done.stdout.strip().splitlines()[-1])}
            print(f"{model:<12} {name:<21} {run['cells_per_s']:>7} cells/s (XLA {run['jit_compile']})",
                  file=sys.stderr, flush=True)
            results["runs"].append(run)
        runs = {r["setting"]: r for r in results["runs"] if r["model"] == model}
        train_step = runs["graph, deterministic"]["cells_per_s"]  # what a change would have to beat
        results.setdefault("xla_speedup", {})[model] = round(runs["xla"]["cells_per_s"] / train_step, 3)
        results.setdefault("xla_over_graph_without_determinism", {})[model] = round(
            runs["xla"]["cells_per_s"] / runs["graph"]["cells_per_s"], 3)
        for size in args.batch_sizes:  # cells per second against train's own step
            results.setdefault("batch_speedup", {}).setdefault(model, {})[str(size)] = round(
                runs[f"batch {size}"]["cells_per_s"] / train_step, 3)
    results["load_after"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
