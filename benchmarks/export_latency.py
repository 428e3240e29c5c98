"""What exporting to TensorFlow Lite buys on a CPU: file size, test accuracy and latency per image.

For a trained `.keras` model and a split, this exports float16 and int8 `.tflite` files (int8
calibrated on --representative train cells, evenly spaced), scores the Keras model and both files
on the split's test part at the threshold of the model card beside the model, and times one
cell at batch 1 (--runs timed calls after --warmup untimed ones; the median is the figure to
quote): Keras through `predict_on_batch`, the files through LiteRT's interpreter. It writes JSON
with the machine's facts and the load average before and after, since other processes on a
shared machine slow every figure.

    python benchmarks/export_latency.py --model build/cpu/runs/malarianet_patient/best.keras \\
        --split build/cpu/split_patient
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from malaria_lib.artifacts import read_card  # noqa: E402
from malaria_lib.export import compare_exports, export_tflite, latency_table  # noqa: E402
from malaria_lib.pipeline import load_images, read_part  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import load_average, machine_facts  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "export_latency.json"


def representative_cells(split_dir: Path, card: dict, count: int) -> np.ndarray:
    """`count` train cells spread evenly over the train part, as floats in [0, 1]: int8 calibration data."""
    train = read_part(split_dir, "train")
    sample = train.paths[:: max(1, len(train) // count)][:count]
    return load_images(sample, int(card["input_size"]), card.get("resize", "bilinear")).astype(np.float32) / 255


def run(args: argparse.Namespace, say) -> dict:
    started = time.perf_counter()
    load_before = load_average()
    model_path, split_dir = Path(args.model), Path(args.split)
    card = read_card(model_path)
    scratch = None if args.export_dir else tempfile.mkdtemp(prefix="export-latency-")
    export_dir = Path(args.export_dir or scratch)
    try:
        say(f"exporting {model_path} to float16 and int8 ({args.representative} calibration cells)")
        t = time.perf_counter()
        paths = export_tflite(model_path, export_dir, representative_cells(split_dir, card, args.representative))
        export_seconds = time.perf_counter() - t
        say("scoring the test part with each format")
        scored = compare_exports(model_path, paths, split_dir)
        test = read_part(split_dir, "test")
        cell = load_images(test.paths[:1], int(card["input_size"]), card.get("resize", "bilinear"))[0] / 255
        say(f"timing {args.runs} single-cell predictions per format after {args.warmup} warm-up calls")
        timed = latency_table(model_path, paths, cell, runs=args.runs, warmup=args.warmup, threads=args.threads)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    formats = {}
    for row, latency in zip(scored, timed, strict=True):
        formats[row["format"]] = {"file": Path(row["path"]).name, "bytes": row["bytes"], "kib": row["bytes"] / 1024,
                                  "test_accuracy": row["accuracy"], "max_score_change": row["max_score_change"],
                                  "latency": latency}
    keras_row = formats["keras"]
    for entry in formats.values():
        entry["size_vs_keras"] = entry["bytes"] / keras_row["bytes"]
        entry["speedup_vs_keras"] = keras_row["latency"]["median_ms"] / entry["latency"]["median_ms"]
    return {
        "benchmark": "export_latency",
        "settings": {"model": str(model_path), "split": str(split_dir), "runs": args.runs, "warmup": args.warmup,
                     "representative": args.representative, "threads": args.threads, "batch_size": 1},
        "machine": machine_facts(),
        "model": {"input_size": int(card["input_size"]), "resize": card.get("resize", "bilinear"),
                  "threshold": float(card.get("threshold", 0.5)), "test_images": len(test)},
        "export_seconds": export_seconds,
        "formats": formats,
        "load": {"before": load_before, "after": load_average()},
        "total_seconds": time.perf_counter() - started,
    }


def format_table(results: dict) -> str:
    lines = [f"{'format':<15} {'KiB':>8} {'test acc':>9} {'max dP':>8} {'median ms':>10} {'p90 ms':>8} {'speed-up':>8}"]
    for name, f in results["formats"].items():
        lat = f["latency"]
        lines.append(f"{name:<15} {f['kib']:8.0f} {f['test_accuracy']:9.4f} {f['max_score_change']:8.4f} "
                     f"{lat['median_ms']:10.2f} {lat['p90_ms']:8.2f} {f['speedup_vs_keras']:7.1f}x")
    machine = results["machine"]
    lines.append(f"batch 1, {results['settings']['runs']} runs; {results['model']['test_images']} test cells; "
                 f"{machine['cpu_count']} CPUs, TF {machine['tensorflow']}, load {results['load']['before']} -> "
                 f"{results['load']['after']}; total {results['total_seconds']:.0f} s")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a trained .keras file (its model card .json beside it)")
    parser.add_argument("--split", required=True, help="a split folder: train cells calibrate int8, test cells score")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON file to write (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=100, help="timed single-cell predictions per format")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls before them")
    parser.add_argument("--representative", type=int, default=200, help="train cells that calibrate int8")
    parser.add_argument("--threads", type=int, help="LiteRT interpreter threads (default: LiteRT's own)")
    parser.add_argument("--export-dir", help="keep the .tflite files here (default: a temporary folder)")
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.representative < 1:
        parser.error("--runs and --representative must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    say = (lambda m: None) if args.quiet else (lambda m: print(f"[export_latency] {m}", file=sys.stderr, flush=True))
    results = run(args, say)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(format_table(results))
    say(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
