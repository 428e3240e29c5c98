"""The `malaria` command: the same steps the notebooks take, from a shell.

Every problem the user can fix ends in one sentence on stderr and an exit status that names its kind
(malaria_lib.errors.EXIT_STATUSES), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from . import config
from .errors import INTERRUPTED, PARTIAL, MalariaError


def _quiet_tensorflow() -> None:
    """Hide TensorFlow's start-up chatter (CUDA probing, oneDNN notes) before it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=1, default=str))


def cmd_fetch(args: argparse.Namespace) -> None:
    from .fetch import fetch

    report = fetch(args.source, args.data_dir, sha256=args.sha256, force=args.force, skip_bad=args.skip_bad,
                   subset=args.subset, progress=not args.quiet)
    where = report.cell_dir
    if report.reused:
        print(f"The cells from {report.source} are already in {where}; nothing to do (--force fetches again).")
    else:
        counts = ", ".join(f"{n:,} {label}" for label, n in report.classes.items())
        print(f"Fetched {counts} images into {where}" + (f" (the {report.subset} subset, checked against its "
                                                           "manifest)." if report.subset else "."))
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
                        "copy" if args.copy else "auto", args.force)
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
        print(f"{row['name']:<18} {row['input_size']:>3}x{row['input_size']:<3} {row['params']:>10,} params  "
              f"{row['description']}{mark}")


def cmd_train(args: argparse.Namespace) -> None:
    _quiet_tensorflow()
    from .train import train

    overrides = {"epochs": args.epochs, "budget_cells": args.budget, "batch_size": args.batch_size,
                 "max_train_images": args.max_train_images, "standardize": args.standardize}
    overrides = {name: value for name, value in overrides.items() if value is not None}  # unset: the recipe's
    if args.weights is not None:  # "none" means random weights (recorded as None in the recipe)
        overrides["weights"] = None if args.weights == "none" else args.weights
    result = train(args.model, args.split, args.out, args.profile, seed=args.seed, force=args.force,
                   resume=args.resume, verbose=2 if args.quiet else "auto", **overrides)
    state = "already trained; reused" if result.reused else f"trained in {result.seconds:.0f} s"
    print(f"{args.model} ({args.profile}): {state}; best val_accuracy {result.best_val_accuracy:.4f} at epoch "
          f"{result.best_epoch}; best model {result.best_model}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from .evaluate import evaluate_model

    evaluation = evaluate_model(args.model, args.split, args.data, tta=args.tta, reps=args.bootstrap)
    print(json.dumps(evaluation.to_dict(), indent=1) if args.json else evaluation.summary())
    return PARTIAL if evaluation.unreadable else 0


def cmd_screen(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from .screen import screen_model

    screening = screen_model(args.model, args.data, args.split, args.patients, tta=args.tta, reps=args.bootstrap,
                             store_rule=args.store_rule)
    if args.json:
        _print_json(screening.to_dict())
    else:
        print(screening.table())
    return PARTIAL if screening.unreadable else 0


def cmd_predict(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from .artifacts import load_model, read_card
    from .predict import predict_files

    if read_card(args.model).get("threshold_from") == "default":
        print(f"malaria predict: note: no model card beside {args.model}; using threshold 0.5", file=sys.stderr)
    results = predict_files(load_model(args.model), args.model, args.images)
    if args.json:
        _print_json([r.__dict__ for r in results])
    for r in results:
        if r.error:
            print(f"malaria predict: {r.path}: cannot be scored: {r.error}", file=sys.stderr)
        elif not args.json:
            print(f"{r.path}\t{r.label}\tP(Parasitized)={r.probability:.4f}")
    if all(r.error for r in results):
        raise MalariaError(f"None of the {len(results)} file(s) could be scored; give PNG images of single cells.")
    return PARTIAL if any(r.error for r in results) else 0


def cmd_export(args: argparse.Namespace) -> None:
    _quiet_tensorflow()
    import numpy as np

    from .artifacts import read_card
    from .export import compare_exports, export_tflite
    from .pipeline import load_images, read_part

    card = read_card(args.model)
    sample = read_part(args.split, "train").paths[:: max(1, len(read_part(args.split, "train")) // 200)][:200]
    representative = load_images(sample, int(card["input_size"]), card.get("resize", "bilinear")).astype(np.float32) / 255
    paths = export_tflite(args.model, args.out, representative)
    rows = compare_exports(args.model, paths, args.split)
    if args.json:
        _print_json(rows)
        return
    for row in rows:
        print(f"{row['format']:<15} {row['bytes'] / 1024:>8.0f} KiB  test accuracy {row['accuracy']:.4f}  {row['path']}")


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
    p.add_argument("--subset", help="keep only a named subset's patients, checked against its manifest: 'dev' is "
                                    "the 60-patient subset of the reference figures (or give a subset JSON file)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = add("inventory", cmd_inventory, "Count images, patients and image sizes of a data folder.")
    p.add_argument("--data-dir", **data_dir)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("split", cmd_split, "Split the cells into train/val/test by patient or at random (tutorial A).")
    p.add_argument("--data-dir", **data_dir)
    p.add_argument("--strategy", default="patient", help="patient (honest, default), random (tutorial A's) or ordered (tutorial B's)")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.7, 0.15, 0.15], help="train val [test], summing to 1")
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("--out", required=True, help="folder for the split (manifest.csv and one tree per split)")
    p.add_argument("--copy", action="store_true", help="copy the images instead of linking them (without it: symlinks, or only the manifest where symlinks cannot be made)")
    p.add_argument("--force", action="store_true", help="replace a different split already in --out")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("synth", cmd_synth, "Draw synthetic cells in the NIH layout (offline stand-in for tests and smoke runs).")
    p.add_argument("--out", required=True, help="folder to hold cell_images/")
    p.add_argument("--n", type=int, default=400, help="number of images (default 400)")
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("--patients", type=int, default=20, help="number of synthetic patients (default 20)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("train", cmd_train, "Train a model on a split with its recipe (tutorial A's, tutorial B's, ours, or a "
                                "pretrained backbone's).")
    p.add_argument("--model", default=None, help="tutorial_a, tutorial_b, malarianet (the default), or a pretrained "
                                                 "backbone: mobilenet_v3_small, resnet50 (full profile only)")
    p.add_argument("--weights", help="pretrained backbones: imagenet (the recipe's default; downloaded once into "
                                     "~/.keras/models, hash-checked), PATH (a local weights file), or none (from "
                                     "scratch)")
    p.add_argument("--profile", default="cpu", help="full (tutorials' settings, GPU), cpu (default) or smoke")
    p.add_argument("--split", required=True, help="a split folder made by `malaria split`")
    p.add_argument("--out", required=True, help="folder for the run (best.keras, history, settings)")
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("--epochs", type=int, help="override the profile's number of epochs (or the cpu profile's budget)")
    p.add_argument("--budget", type=int, metavar="CELLS",
                   help="train for about this many training cells seen: whole epochs, or one epoch of a sample "
                        "of that many cells when the split holds more (the cpu profile's way)")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--max-train-images", type=int, help="train on a class-balanced sample of at most N cells")
    p.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None,
                   help="malarianet: standardize each cell's colours inside the model (its recipe's default; "
                        "--no-standardize turns it off, chapter 5); the tutorials' networks cannot")
    p.add_argument("--resume", help="continue from this .keras checkpoint (a run resumes its own last.keras by itself)")
    p.add_argument("--force", action="store_true", help="replace another run in --out and start over")
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")

    p = add("evaluate", cmd_evaluate, "Score a model on a split's test part or on a data folder, with intervals.")
    p.add_argument("--model", required=True, help="a .keras file (its threshold is read from the .json beside it)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--split", help="a split folder: its test part is scored")
    where.add_argument("--data", help="any folder in the NIH layout, e.g. cells of new patients")
    p.add_argument("--tta", action="store_true", help="average over the 8 flips and right-angle rotations")
    p.add_argument("--bootstrap", type=int, default=1000, help="patient bootstrap resamples for the intervals")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("screen", cmd_screen, "Screen patients: each one's fraction of cells called parasitized, with its interval, and a verdict.")
    p.add_argument("--model", required=True, help="a .keras file; its card (.json beside it) holds the screening rule")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", help="a folder of cells: NIH layout (labelled) or any folder of PNGs")
    where.add_argument("--split", help="a split folder: its test patients are screened")
    p.add_argument("--patients", nargs="+", metavar="CSV",
                   help="NIH's patientid_cellmapping CSV(s) (default: the C-number in each file name)")
    p.add_argument("--tta", action="store_true", help="average over the 8 flips and right-angle rotations")
    p.add_argument("--bootstrap", type=int, default=1000, help="patient bootstrap resamples for the AUC and MAE intervals")
    p.add_argument("--store-rule", action="store_true",
                   help="with --split, store the rule chosen on its validation patients in a card that has none")
    p.add_argument("--json", action="store_true", help="print one JSON object with a `patients` list and a `summary`")

    p = add("predict", cmd_predict, "Label image files (any size or mode) as Parasitized or Uninfected.")
    p.add_argument("images", nargs="+", help="image files or folders of PNGs")
    p.add_argument("--model", required=True, help="a .keras file")
    p.add_argument("--json", action="store_true", help="print one JSON list")

    p = add("export", cmd_export, "Export a model to TensorFlow Lite (float16, int8) and compare their accuracy.")
    p.add_argument("--model", required=True, help="a .keras file")
    p.add_argument("--split", required=True, help="split whose train part calibrates int8 and whose test part scores")
    p.add_argument("--out", required=True, help="folder for the .tflite files")
    p.add_argument("--json", action="store_true", help="print one JSON list")

    p = add("models", cmd_models, "List the model architectures with their input size and parameter count.")
    p.add_argument("--json", action="store_true", help="print one JSON list")

    register_series_commands(sub)  # run, html, badges: the notebook series
    return parser


# ---------------------------------------------------------------- the notebook series: run, html, badges


def cmd_run(args: argparse.Namespace) -> None:
    from .series import run_series

    run_series(args.profile, source=args.source, build=args.build, data_dir=args.series_data_dir,
               log=lambda line: print(line, flush=True))


def cmd_html(args: argparse.Namespace) -> None:
    from .render import render_html

    print(f"Wrote {render_html(args.build)}")


def cmd_edition(args: argparse.Namespace) -> None:
    from .edition import make_edition, stale_chapters
    from .series import find_root, notebook_paths

    if args.check:
        stale = stale_chapters(args.out, notebook_paths(find_root()))
        if stale:
            raise MalariaError(f"The edition in {args.out} was made with other code in {', '.join(stale)}; make it "
                               "again with `make edition`.")
        print(f"The edition in {args.out} matches every chapter's code.")
        return
    manifest = make_edition(args.build, args.out)
    print(f"Wrote the {manifest['profile']} run in {args.build} to {args.out}/index.html "
          f"({len(manifest['chapters'])} chapters, {manifest['bytes'] / 2**20:.1f} MB; data: {manifest['data']['text']}).")


def cmd_badges(args: argparse.Namespace) -> None:
    import nbformat

    from .colab import settings, sync_badges
    from .series import all_notebooks, find_root, strip_outputs

    root = find_root()
    notebooks = all_notebooks(root)
    stale = sync_badges(root, notebooks, check=args.check)
    dirty = [p for p in notebooks if strip_outputs(nbformat.read(p, as_version=4))]
    names = ", ".join(p.relative_to(root).as_posix() for p in stale)
    if args.check:
        problems = ([f"stale badges or install line in {names}"] if stale else []) + (
            [f"outputs stored in {', '.join(p.name for p in dirty)}"] if dirty else [])
        if problems:
            raise MalariaError("; ".join(problems) + ": run `malaria badges` to fix them.")
        print(f"All {len(notebooks)} notebooks point at {'@'.join(settings(root))} and are stored clean.")
        return
    for path in dirty:
        nb = nbformat.read(path, as_version=4)
        strip_outputs(nb)
        nbformat.write(nb, path)
    print(f"Updated {len(stale)} and cleaned {len(dirty)} of {len(notebooks)} notebooks "
          f"({'@'.join(settings(root))}).")


def register_series_commands(sub) -> None:
    """Add `run`, `html`, `edition` and `badges` to the `malaria` command's subparsers."""
    p = sub.add_parser("run", help="Execute the notebook series with papermill, then write report.json and HTML.",
                       description="Execute notebooks/NN_*.ipynb in order with configs/PROFILE.yaml.")
    p.add_argument("--profile", choices=("full", "cpu", "smoke"), default="cpu", help="parameter set (default: cpu)")
    p.add_argument("--source", help="override the profile's data source (URL, zip, folder or 'synthetic')")
    p.add_argument("--data-dir", dest="series_data_dir", help="override the profile's data folder")
    p.add_argument("--build", default="build", help="output folder (default: build)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("html", help="Render the executed notebooks in BUILD/notebooks as HTML with an index.")
    p.add_argument("--build", default="build", help="folder holding notebooks/ from `malaria run` (default: build)")
    p.set_defaults(func=cmd_html)

    p = sub.add_parser("edition", help="Render a finished run of the series as the reader's edition (docs/).",
                       description="Render BUILD (from `malaria run`) as static HTML in OUT with the run's data, date, "
                                   "machine and versions, and each chapter's code hash (edition.json).")
    p.add_argument("--build", default="build/reference",
                   help="folder of a finished `malaria run` (default: build/reference, where `make edition` runs it)")
    p.add_argument("--out", default="docs", help="where the edition goes (default: docs)")
    p.add_argument("--check", action="store_true", help="change nothing; fail if a chapter's code changed since")
    p.set_defaults(func=cmd_edition)

    p = sub.add_parser("badges", help="Update every notebook's Colab badge row and install line from pyproject.toml.")
    p.add_argument("--check", action="store_true", help="change nothing; fail if any notebook is stale or has outputs")
    p.set_defaults(func=cmd_badges)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "data_dir", "unset") is None:
        args.data_dir = config.default_data_dir()
    if args.command == "train" and args.model is None:
        from .models import DEFAULT_MODEL

        args.model = DEFAULT_MODEL
    try:
        status = args.func(args)
    except MalariaError as exc:  # the one place an expected failure becomes its sentence and exit status
        print(f"malaria {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"malaria {args.command}: interrupted; run it again to continue.", file=sys.stderr)
        return INTERRUPTED
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
