"""The `malaria` command: the same steps the notebooks take, from a shell.

Every problem the user can fix ends in one sentence on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from . import config
from .errors import MalariaError


def _quiet_tensorflow() -> None:
    """Hide TensorFlow's start-up chatter (CUDA probing, oneDNN notes) before it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=1, default=str))


def cmd_fetch(args: argparse.Namespace) -> None:
    from .fetch import fetch

    report = fetch(args.source, args.data_dir, sha256=args.sha256, force=args.force, skip_bad=args.skip_bad,
                   progress=not args.quiet)
    where = report.cell_dir
    if report.reused:
        print(f"The cells from {report.source} are already in {where}; nothing to do (--force fetches again).")
    else:
        counts = ", ".join(f"{n:,} {label}" for label, n in report.classes.items())
        print(f"Fetched {counts} images into {where}.")
        print(f"Skipped {len(report.skipped)} files that are not usable images"
              + (f" ({', '.join(sorted({s['reason'] for s in report.skipped}))})." if report.skipped else "."))
        if report.converted:
            print(f"Converted {report.converted} images to 8-bit RGB.")
        if report.nested_duplicates_ignored:
            print(f"Ignored {report.nested_duplicates_ignored:,} images of a nested duplicate folder (Kaggle's cell_images/cell_images).")
        if report.patient_csvs:
            print(f"Patient mapping files: {', '.join(report.patient_csvs)}.")
    for note in report.notes:
        print(note)


def cmd_inventory(args: argparse.Namespace) -> None:
    from .inventory import take_inventory

    inventory = take_inventory(args.data_dir)
    print(inventory.to_json() if args.json else inventory.summary())


def cmd_split(args: argparse.Namespace) -> None:
    from .split import make_split

    result = make_split(args.data_dir, args.out, args.strategy, tuple(args.ratios), args.seed,
                        "copy" if args.copy else "symlink", args.force)
    if args.json:
        _print_json({"out": str(result.out), "reused": result.reused, "counts": result.counts,
                     "patients": result.patients, "settings": result.settings})
    else:
        print(result.summary())


def cmd_synth(args: argparse.Namespace) -> None:
    from .synth import make_synthetic_cells

    summary = make_synthetic_cells(args.out, n=args.n, seed=args.seed, n_patients=args.patients,
                                   progress=not args.quiet)
    counts = ", ".join(f"{n:,} {label}" for label, n in summary["classes"].items())
    print(f"Wrote {counts} synthetic cells from {summary['patients']} patients into {summary['out']}.")


def cmd_models(args: argparse.Namespace) -> None:
    _quiet_tensorflow()
    from .models import DEFAULT_MODEL, describe_models

    rows = describe_models()
    if args.json:
        _print_json(rows)
        return
    for row in rows:
        mark = " (default)" if row["name"] == DEFAULT_MODEL else ""
        print(f"{row['name']:<11} {row['input_size']:>3}x{row['input_size']:<3} {row['params']:>10,} params  "
              f"{row['description']}{mark}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="malaria", description="Malaria cell classification: data, models, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    data_dir = {"default": None, "help": f"data folder (default: ${config.DATA_DIR_ENV} or ./data)"}

    p = add("fetch", cmd_fetch, "Download or copy the NIH cell images and check every one.")
    p.add_argument("--source", help="URL, zip file or folder in the NIH or Kaggle layout (default: the NIH URL)")
    p.add_argument("--data-dir", **data_dir)
    p.add_argument("--sha256", help="expected sha256 of the source archive (the NIH one is built in)")
    p.add_argument("--force", action="store_true", help="replace cells fetched before from another source")
    p.add_argument("--skip-bad", action="store_true", help="leave out images that do not decode instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = add("inventory", cmd_inventory, "Count images, patients and image sizes of a data folder.")
    p.add_argument("--data-dir", **data_dir)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("split", cmd_split, "Split the cells into train/val/test by patient or at random (tutorial A).")
    p.add_argument("--data-dir", **data_dir)
    p.add_argument("--strategy", default="patient", help="patient (honest, default) or random (tutorial A's)")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.7, 0.15, 0.15], help="train val [test], summing to 1")
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("--out", required=True, help="folder for the split (manifest.csv and one tree per split)")
    p.add_argument("--copy", action="store_true", help="copy the images instead of linking them")
    p.add_argument("--force", action="store_true", help="replace a different split already in --out")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("synth", cmd_synth, "Draw synthetic cells in the NIH layout (offline stand-in for tests and smoke runs).")
    p.add_argument("--out", required=True, help="folder to hold cell_images/")
    p.add_argument("--n", type=int, default=400, help="number of images (default 400)")
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("--patients", type=int, default=20, help="number of synthetic patients (default 20)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("models", cmd_models, "List the model architectures with their input size and parameter count.")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "data_dir", "unset") is None:
        args.data_dir = config.default_data_dir()
    try:
        args.func(args)
    except MalariaError as exc:
        print(f"malaria {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"malaria {args.command}: interrupted; run it again to continue.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
