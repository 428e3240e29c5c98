"""TensorFlow's oneDNN kernels on and off: whole `malaria train` epochs of each network, each setting in its own process.

On Linux, TensorFlow turns its oneDNN CPU kernels on by itself only where the processor has AVX-512 VNNI or BF16,
AVX-VNNI or AMX; on an x86 CPU with AVX2 alone (the 2-core AMD EPYC here; AMD Zen 2 and 3, Intel cores before Ice
Lake and Alder Lake) they stay off unless `TF_ENABLE_ONEDNN_OPTS=1`, which `malaria_lib` now sets before TensorFlow
loads. This script measures what that buys and what it changes: for each network, `benchmarks/epochs.py`'s
measurement (train's own `cpu` recipe on a patient split, seed 1337, epochs timed from inside and outside) runs once
with `TF_ENABLE_ONEDNN_OPTS=0` and once with `1`, each in a fresh process (the setting is read once, when TensorFlow
is imported). Recorded per run: whether TensorFlow reports oneDNN on, the
steady training speed (epochs after the first), the first epoch, the validation accuracy reached, and a digest of
the trained weights (the same digest twice in a row shows the runs repeat to the last bit).

    python benchmarks/onednn.py --data-dir data --models tutorial_a tutorial_b malarianet --max-train-images 2000
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "onednn.json"
SETTINGS = {"off": "0", "on": "1"}


def child(model: str, split: Path, out: Path, epochs: int, profile: str, max_train_images: int | None,
          weights: str | None) -> dict:
    """One run in this process, with whatever TF_ENABLE_ONEDNN_OPTS the parent gave it."""
    import malaria_lib  # noqa: F401  (first: TensorFlow must not load before the setting is read)
    # isort: split
    from epochs import measure

    from malaria_lib.artifacts import load_model
    from malaria_lib.runtime import onednn_enabled

    overrides = {"max_train_images": max_train_images} if max_train_images else {}
    if weights is not None:
        overrides["weights"] = None if weights == "none" else weights
    entry = measure(model, split, out, epochs, profile, **overrides)
    digest = hashlib.sha256()
    for array in load_model(out / "last.keras").get_weights():
        digest.update(array.tobytes())
    history = json.loads((out / "history.json").read_text())
    return {"onednn": onednn_enabled(), "weights_sha256": digest.hexdigest(),
            "val_accuracy": history["val_accuracy"], **entry}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the fetched cells (holds cell_images/)")
    parser.add_argument("--models", nargs="+", default=["tutorial_a", "tutorial_b", "malarianet"])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (the first is reported apart)")
    parser.add_argument("--max-train-images", type=int, help="a stratified sample of the training cells (quicker)")
    parser.add_argument("--weights", help="for a pretrained backbone: 'none' (offline) or a weights file")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting (2 shows whether runs repeat)")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--work", type=Path, help="split and runs (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "RUN_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="malaria-onednn-"))
    split = work / "split_patient"
    if args.child:
        model, out = args.child
        print(json.dumps(child(model, split, Path(out), args.epochs, args.profile, args.max_train_images,
                               args.weights)))
        return {}

    import malaria_lib  # noqa: F401

    # isort: split
    from _harness import load_average, machine_facts

    from malaria_lib.split import make_split

    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    if not (args.data_dir / "cell_images").is_dir():
        parser.error(f"--data-dir {args.data_dir} holds no cell_images/ folder; fetch the cells first "
                     "(malaria fetch --subset dev)")
    make_split(args.data_dir, split, "patient", (0.7, 0.15, 0.15), seed=1337)
    results: dict = {"benchmark": "onednn", "machine": machine_facts(), "load_before": load_average(),
                     "settings": {"epochs": args.epochs, "profile": args.profile, "data": str(args.data_dir),
                                  "max_train_images": args.max_train_images, "weights": args.weights,
                                  "split": "patient 0.7/0.15/0.15, seed 1337"}, "runs": []}
    del results["machine"]["onednn"]  # each run records its own
    for model in args.models:
        for name, value in SETTINGS.items():
            for repeat in range(args.repeat):
                out = work / f"{model}_{name}_{repeat}"
                command = [sys.executable, __file__, "--child", model, str(out), "--data-dir", str(args.data_dir),
                           "--work", str(work), "--epochs", str(args.epochs), "--profile", args.profile]
                command += ["--max-train-images", str(args.max_train_images)] if args.max_train_images else []
                command += ["--weights", args.weights] if args.weights else []
                done = subprocess.run(command, capture_output=True, text=True,
                                      env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": value})
                if done.returncode != 0:
                    raise SystemExit(f"{model} (oneDNN {name}) failed:\n{done.stderr[-2000:]}")
                run = {"model": model, "setting": name, "repeat": repeat,
                       **json.loads(done.stdout.strip().splitlines()[-1])}
                results["runs"].append(run)
                say(f"{model:<18} oneDNN {name:<3} (TensorFlow says {run['onednn']}): first epoch "
                    f"{run['first_epoch_seconds']:.0f} s, then {run['steady_train_cells_per_s']:.1f} cells/s "
                    f"training; val accuracy {run['val_accuracy'][-1]:.4f}")
        runs = {r["setting"]: r for r in results["runs"] if r["model"] == model and r["repeat"] == 0}
        results.setdefault("speedup", {})[model] = round(
            runs["on"]["steady_train_cells_per_s"] / runs["off"]["steady_train_cells_per_s"], 3)
        results.setdefault("repeats_exactly", {})[model] = {
            name: len({r["weights_sha256"] for r in results["runs"] if r["model"] == model and r["setting"] == name})
            == 1 for name in SETTINGS} if args.repeat > 1 else None
    results["load_after"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    for model, ratio in results["speedup"].items():
        say(f"{model:<18} training speed with oneDNN over without: {ratio:.2f}")
    return results


if __name__ == "__main__":
    main()
