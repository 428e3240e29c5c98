"""Peak memory of scoring a folder of cells: `evaluate` on the dev zip, and on a folder of the NIH set's size.

`evaluate`, `screen` and `predict` stream their images through tf.data in batches, so their memory
should not grow with the number of cells. This measures it: each run is a fresh process (its peak
resident set size, `ru_maxrss`, is the figure) that calls `malaria_lib.evaluate.evaluate_model` on a
folder in the NIH layout. The large folder repeats the dev cells (hard links named `..._repN.png`,
patient keys kept) up to --scale cells. `--compare-eager` also runs the way scoring worked before
streaming (every image decoded into one float32 array, then predicted), for contrast.

    python benchmarks/memory.py --source ../shared/data/malaria_cells_dev.zip --model M.keras --work /tmp/mem
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import load_average, machine_facts  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "memory.json"
CHILD = textwrap.dedent("""
    import json, resource, sys, time
    model, folder, how, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    started = time.perf_counter()
    if how == "streamed":
        from malaria_lib.evaluate import evaluate_model
        evaluation = evaluate_model(model, data_dir=folder, reps=reps)
        cells, accuracy = evaluation.n_images, evaluation.metrics["accuracy"]
    else:  # before streaming: all images in one array
        import numpy as np
        from malaria_lib.artifacts import load_model, read_card
        from malaria_lib.pipeline import load_images, read_folder
        network = load_model(model)
        card = read_card(model, network)
        part = read_folder(folder)
        images = load_images(part.paths, int(network.input_shape[1]), card["resize"]).astype(np.float32) / 255.0
        scores = network.predict(images, batch_size=128, verbose=0)[:, 0]
        cells, accuracy = len(part), float(np.mean((scores >= card["threshold"]) == (part.labels == 0)))
    print(json.dumps({"cells": cells, "accuracy": accuracy, "seconds": round(time.perf_counter() - started, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
""")


def scaled_folder(cell_dir: Path, target: Path, cells: int) -> Path:
    """TARGET/cell_images with the cells of CELL_DIR repeated (hard links, else copies) up to CELLS images."""
    if (target / "cell_images").is_dir():
        return target
    staging = target / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    originals = {label: sorted((cell_dir / label).glob("*.png")) for label in ("Parasitized", "Uninfected")}
    total = sum(len(v) for v in originals.values())
    for label, files in originals.items():
        wanted = round(cells * len(files) / total)
        (staging / label).mkdir(parents=True)
        for i in range(wanted):
            source = files[i % len(files)]
            name = source.name if i < len(files) else f"{source.stem}_rep{i // len(files)}{source.suffix}"
            try:
                os.link(source, staging / label / name)
            except OSError:
                shutil.copyfile(source, staging / label / name)
    (target / "cell_images").parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target / "cell_images")
    return target


def measure(model: Path, folder: Path, how: str, reps: int) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(model), str(folder), how, str(reps)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the {how} run on {folder} failed:\n{result.stderr[-3000:]}")
    return {"how": how, "folder": str(folder), **json.loads(result.stdout.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained .keras file (its card beside it)")
    parser.add_argument("--source", help="zip or folder to fetch into WORK/data (skip if WORK/data holds cells)")
    parser.add_argument("--work", default="build/memory", help="where the data and the scaled folder go")
    parser.add_argument("--scale", type=int, default=27_558, help="cells in the large folder (the NIH set's count)")
    parser.add_argument("--reps", type=int, default=1000, help="bootstrap resamples, as `malaria evaluate`")
    parser.add_argument("--compare-eager", action="store_true", help="also time the load-everything way")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)

    from malaria_lib.fetch import fetch

    work = Path(args.work)
    data = work / "data"
    if args.source:
        fetch(args.source, data, progress=False)
    large = scaled_folder(data / "cell_images", work / f"scaled_{args.scale}", args.scale)
    results = {"machine": machine_facts(), "load_before": load_average(), "model": args.model, "runs": []}
    started = time.perf_counter()
    for folder in (data, large):
        for how in ("streamed", "eager") if args.compare_eager else ("streamed",):
            row = measure(Path(args.model), folder, how, args.reps)
            results["runs"].append(row)
            print(f"{how:<9} {row['cells']:>6,} cells  {row['seconds']:>6.1f} s  peak {row['peak_rss_mb']:>7.0f} MB",
                  flush=True)
    results.update(load_after=load_average(), seconds=round(time.perf_counter() - started, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
