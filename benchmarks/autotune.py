"""Whole training epochs on a CPU with tf.data's autotuner on (as before) and off (as `train` runs now).

Our network's later epochs on the dev subset ran about 40% slower than its first, which also decodes every PNG
(issue 19). The suspect was the autotuner: it sizes tf.data's thread pools as if the cores were the pipeline's
alone, while on a CPU the training step needs the same cores. This script trains each model with its `cpu` recipe
for a few epochs on a patient split (seed 1337) of one folder, once with the autotuner on and once off
(`malaria_lib.pipeline.AUTOTUNE_WHILE_TRAINING_ON_CPU`), times every epoch as `epochs.py` does (training steps and
validation apart; the first epoch, which fills the cache, reported apart), and checks that both runs end with the
same weights to the last bit: the setting may change the speed, never the result.

    python benchmarks/autotune.py --data data/dev --models malarianet tutorial_a --epochs 3
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from malaria_lib import pipeline  # noqa: E402
from malaria_lib.artifacts import load_model  # noqa: E402
from malaria_lib.split import make_split  # noqa: E402
from malaria_lib.train import read_history  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import load_average, machine_facts  # noqa: E402
from epochs import measure  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "autotune.json"
SETTINGS = {"autotune_on": True, "autotune_off": False}  # on: the pipeline before; off: as train runs it now


def weights_sha256(model_path: Path) -> str:
    """One hash over every weight of a saved model, in order."""
    digest = hashlib.sha256()
    for variable in load_model(model_path).weights:
        digest.update(variable.numpy().tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a fetched folder (holds cell_images/), e.g. data/dev")
    parser.add_argument("--models", nargs="+", default=["malarianet", "tutorial_a"])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is reported apart)")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--work", type=Path, help="split and runs (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    work = args.work or Path(tempfile.mkdtemp(prefix="malaria-autotune-"))
    split = make_split(args.data, work / "split", "patient", (0.7, 0.15, 0.15), seed=1337)
    results: dict = {"benchmark": "autotune", "machine": machine_facts(), "settings": {
        "data": str(args.data), "epochs": args.epochs, "profile": args.profile, "models": args.models,
        "split": "patient 0.7/0.15/0.15, seed 1337"}, "load_before": load_average(), "models": {}}
    default = pipeline.AUTOTUNE_WHILE_TRAINING_ON_CPU
    try:
        for model in args.models:
            entry: dict = {}
            for name, autotune in SETTINGS.items():
                say(f"{model}: {args.epochs} epochs, {name}")
                pipeline.AUTOTUNE_WHILE_TRAINING_ON_CPU = autotune
                out = work / f"{model}_{name}"
                entry[name] = measure(model, split.out, out, args.epochs, args.profile)
                entry[name]["best_weights_sha256"] = weights_sha256(out / "best.keras")
                seconds = ", ".join(f"{row['train_seconds']:.0f}" for row in entry[name]["epochs"])
                say(f"  training steps per epoch: {seconds} s")
            on, off = entry["autotune_on"], entry["autotune_off"]
            entry["same_weights"] = on["best_weights_sha256"] == off["best_weights_sha256"]
            entry["same_val_accuracy"] = (read_history(work / f"{model}_autotune_on")["val_accuracy"]
                                          == read_history(work / f"{model}_autotune_off")["val_accuracy"])
            entry["steady_speedup"] = off["steady_train_cells_per_s"] / on["steady_train_cells_per_s"]
            results["models"][model] = entry
            say(f"  steady training speed, off over on: {entry['steady_speedup']:.2f}; same weights: "
                f"{entry['same_weights']}")
    finally:
        pipeline.AUTOTUNE_WHILE_TRAINING_ON_CPU = default
    results["load_after"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
