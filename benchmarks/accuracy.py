"""Patient-level k-fold cross-validation: how well each model does on patients it never saw.

Every patient is scored exactly once, by a model trained without it. Folds hold whole patients
(both classes of a patient in one fold), with infected and healthy patients dealt evenly over the
folds. Inside each fold's training patients, 15% of patients are kept apart for validation (best
epoch, threshold), so the test fold influences nothing.

Writes JSON: per fold and model the metrics and training time, their mean and standard deviation,
the same with test-time augmentation (--tta), the AUC of the pooled out-of-fold scores, and the
patient screening figures over all patients: each fold's test patients judged by the rule that
fold's model chose on its own validation patients (stored in its model card), then pooled, so
every healthy patient counts. With --oof, every cell's out-of-fold score and every patient's row
are written too (the screening chapter reads them).

Each fold of each model is one task (`run_fold`), kept in --work/folds/ as it finishes; `merge` makes the summary
from any set of them. `--fold K` runs one fold, `--merge FILES` merges, and `--workers N` / `--scheduler ADDRESS`
run the folds on a Dask cluster (benchmarks/_cluster.py).

    python benchmarks/accuracy.py --source ../shared/data/malaria_cells_dev.zip --models malarianet
    python benchmarks/accuracy.py --data-dir data --models malarianet --fold 2 --out fold2.json
    python benchmarks/accuracy.py --models malarianet --merge fold0.json fold1.json ... --out accuracy.json
    python benchmarks/accuracy.py --data-dir data --models malarianet --scheduler tcp://HOST:8786 --reuse
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from malaria_lib import config  # noqa: E402
from malaria_lib.artifacts import load_model, read_card  # noqa: E402
from malaria_lib.calibration import decisions_from_validation  # noqa: E402
from malaria_lib.config import POSITIVE  # noqa: E402
from malaria_lib.evaluate import evaluate_scores  # noqa: E402
from malaria_lib.fetch import fetch  # noqa: E402
from malaria_lib.inference import predict_proba  # noqa: E402
from malaria_lib.inventory import CellRecord, list_cells  # noqa: E402
from malaria_lib.metrics import METRICS, THRESHOLD_RULES, choose_threshold  # noqa: E402
from malaria_lib.pipeline import read_part  # noqa: E402
from malaria_lib.runtime import machine, versions  # noqa: E402
from malaria_lib.screening import patient_table, rule_from_card, summarise_patients  # noqa: E402
from malaria_lib.split import assign_by_patient, write_split  # noqa: E402
from malaria_lib.train import train  # noqa: E402


def patient_folds(cells: list[CellRecord], k: int, seed: int) -> dict[str, int]:
    """Fold of each patient: infected and healthy patients each shuffled and dealt out in turn, largest first."""
    counts: dict[str, int] = {}
    infected: set[str] = set()
    for cell in cells:
        counts[cell.patient] = counts.get(cell.patient, 0) + 1
        if cell.label == config.POSITIVE_CLASS:
            infected.add(cell.patient)
    rng = np.random.default_rng(seed)
    fold: dict[str, int] = {}
    turn = 0
    for group in (sorted(infected), sorted(set(counts) - infected)):
        shuffled = [group[i] for i in rng.permutation(len(group))]
        for patient in sorted(shuffled, key=lambda p: -counts[p]):  # stable: ties keep the seeded order
            fold[patient] = turn % k
            turn += 1
    return fold


def _hindsight_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """The accuracy had the threshold been chosen on the test cells themselves: not a result (it peeks), but the
    ceiling of what a better threshold could buy, so a gap in accuracy can be told apart from a gap in ranking."""
    positive = np.asarray(labels) == POSITIVE
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    # calling the top i cells parasitized: true positives cumsum(hits)[i-1], true negatives (#neg - false positives)
    correct = np.concatenate([[0], np.cumsum(hits)]) + (~positive).sum() - np.concatenate([[0], np.cumsum(~hits)])
    return float(correct.max() / len(scores))


def _contradictions(positive: np.ndarray, scores: np.ndarray) -> dict:
    """How many cells the out-of-fold model contradicts with confidence: candidates for label errors (an
    expert would have to look), and a floor under what any model can score against these labels."""
    return {f"margin {margin}": {"parasitized_scored_below": int(((scores < margin) & (positive == 1)).sum()),
                                 "uninfected_scored_above": int(((scores > 1 - margin) & (positive == 0)).sum()),
                                 "cells": int(len(scores))}
            for margin in (0.5, 0.2, 0.1, 0.05)}


def _recipe_overrides(pairs: list[str], parser: argparse.ArgumentParser) -> dict:
    """'name=value' pairs as Recipe settings of the right type; an unknown name or bad value stops with one sentence."""
    from dataclasses import fields

    from malaria_lib.recipes import Recipe

    types = {f.name: f.type for f in fields(Recipe)}
    overrides = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in types or not value:
            parser.error(f"--recipe takes SETTING=VALUE with a setting of malaria_lib.recipes.Recipe, not {pair!r}")
        kind = str(types[name])
        try:
            if "bool" in kind:
                if value.lower() not in ("true", "false"):
                    raise ValueError
                overrides[name] = value.lower() == "true"
            elif "int" in kind and "None" not in value:
                overrides[name] = int(value)
            elif "float" in kind:
                overrides[name] = float(value)
            else:
                overrides[name] = None if value == "None" else value
        except ValueError:
            parser.error(f"--recipe {pair!r}: {value!r} is not a valid {kind}")
    return overrides


def _empty() -> dict:
    return {"per_fold": [], "patients": [], "scores": []}


def _score_variant(variant: dict, fold: int, test, scores: np.ndarray, val, val_scores: np.ndarray,
                   train_seconds: float, predict_seconds: float, trained, args: argparse.Namespace) -> None:
    """Add one fold's test scores of one variant (a model, TTA, another seed, the ensemble) to its tallies.

    The threshold and screening rule are chosen here from the variant's own validation scores with the library's
    current rule (what its model card would say), so runs reused from an older version are judged the same way."""
    decisions = decisions_from_validation(val_scores, val)
    threshold = decisions["threshold"]
    evaluation = evaluate_scores(test.labels, scores, test.patients, threshold, reps=args.bootstrap)
    val_positive = val.labels == POSITIVE
    by_rule = {rule: float(np.mean((scores >= choose_threshold(val_positive, val_scores, rule)) == (test.labels == POSITIVE)))
               for rule in THRESHOLD_RULES}
    variant["per_fold"].append({
        "fold": fold, "patients": evaluation.n_patients, "cells": evaluation.n_images,
        "train_seconds": round(train_seconds, 1),
        "epochs": len(trained.history.get("epoch", [])) if trained is not None else None,
        "predict_ms_per_cell": round(1000 * predict_seconds / len(test), 3), "threshold": threshold,
        **evaluation.metrics, "accuracy_at_hindsight_threshold": _hindsight_accuracy(test.labels, scores),
        **{f"accuracy_threshold_{rule}": value for rule, value in by_rule.items()}})
    variant["scores"].append(scores)
    rule = rule_from_card(decisions)
    if rule is not None:
        table = patient_table(scores, test.patients, rule.cell_threshold, test.labels)
        for row in table:
            row.update(fold=fold, verdict=rule.infected(row["called_parasitized"], row["cells"]), cutoff=rule.cutoff)
        variant["patients"].extend(table)


def fold_settings(args: argparse.Namespace, model: str) -> dict:
    """What decides one fold's result besides the data: a fold file made with other settings is not reused."""
    return {"model": model, "folds": args.folds, "profile": args.profile, "seed": args.seed,
            "seeds": args.seeds or [args.seed], "epochs": args.epochs, "recipe": args.recipe, "tta": args.tta,
            "bootstrap": args.bootstrap}


def run_fold(args: argparse.Namespace, model: str, k: int) -> dict:
    """Train and score fold K of MODEL: one task of the cross-validation, on this machine or on a cluster's worker.

    Everything it needs comes from ARGS (the cells are fetched from --source first when given, so a worker on
    another machine gets its own copy); what it returns is plain JSON, every score and patient row of the fold,
    so that `merge` makes the summary from any set of folds, wherever they ran.
    """
    import keras

    keras.backend.clear_session()  # a fold's weights must not depend on what this process trained before
    if args.source:
        fetch(args.source, args.data_dir, progress=False)
    cells, _ = list_cells(args.data_dir)
    folds = patient_folds(cells, args.folds, args.seed)
    work = Path(args.work)
    test_cells = [c for c in cells if folds[c.patient] == k]
    rest = [c for c in cells if folds[c.patient] != k]
    rest_parts = assign_by_patient(rest, (0.85, 0.15, 0.0), args.seed + k)
    split = work / f"fold{k}"
    write_split(rest + test_cells, rest_parts + ["test"] * len(test_cells), split,
                {"strategy": "cv", "fold": k, "folds": args.folds, "seed": args.seed})
    test, val = read_part(split, "test"), read_part(split, "val")
    seeds = args.seeds or [args.seed]
    variants: dict[str, dict] = {}  # variant name -> this fold's metrics, patient rows and test scores
    members: list[tuple[np.ndarray, np.ndarray, float]] = []  # (val scores, test scores, predict seconds)
    fold_seconds = []
    for i, seed in enumerate(seeds):
        run_dir = work / (f"{model}_fold{k}" + (f"_seed{seed}" if seed != args.seed else ""))
        trained = train(model, split, run_dir, args.profile, seed=seed, force=not args.reuse,
                        replace_stale=True, verbose=2 if args.verbose else 0,
                        **{**({"epochs": args.epochs} if args.epochs else {}), **args.recipe})
        seconds = trained.seconds  # fitting only, as the run recorded it (also when reused)
        fold_seconds.append(seconds)
        network = load_model(trained.best_model)
        card = read_card(trained.best_model, network)
        for tta in (False, True) if (args.tta and i == 0) else (False,):
            started_predict = time.perf_counter()
            scores = predict_proba(network, test, card, tta=tta)
            predict_seconds = time.perf_counter() - started_predict
            val_scores = predict_proba(network, val, card, tta=tta)
            name = ("tta" if tta else "plain") if i == 0 else f"seed{seed}"
            _score_variant(variants.setdefault(name, _empty()), k, test, scores, val, val_scores, seconds,
                           predict_seconds, trained, args)
            if not tta:
                members.append((val_scores, scores, predict_seconds))
    if len(members) > 1:
        _score_variant(variants.setdefault("ensemble", _empty()), k, test,
                       np.mean([m[1] for m in members], axis=0), val, np.mean([m[0] for m in members], axis=0),
                       sum(fold_seconds), sum(m[2] for m in members), None, args)
    print(f"{model} fold {k}: " + "; ".join(f"{name} accuracy {v['per_fold'][-1]['accuracy']:.4f} "
                                             f"auc {v['per_fold'][-1]['auc']:.4f}" for name, v in variants.items())
          + f" (trained in {', '.join(f'{s:.0f}' for s in fold_seconds)} s)", file=sys.stderr)
    return {"kind": FOLD_KIND, "model": model, "fold": k, "settings": fold_settings(args, model),
            "variants": {name: {"per_fold": v["per_fold"][0], "patients": v["patients"],
                                "scores": [float(x) for x in v["scores"][0]]} for name, v in variants.items()},
            "labels": [int(y) for y in test.labels], "patients": list(test.patients),
            "files": [Path(p).name for p in test.paths],
            "data": {"source": args.source or str(args.data_dir), "cells": len(cells), "patients": len(folds)},
            "machine": {"host": platform.node(), "process": os.getpid(),  # where it ran: a cluster's worker
                        "cpus": os.cpu_count(), "cpu": machine()["cpu"], "platform": platform.platform(),
                        **versions(), "date": time.strftime("%Y-%m-%d")}}


FOLD_KIND = "malaria-cv-fold"


def merge(records: list[dict], models: list[str] | None = None) -> tuple[dict, dict]:
    """The cross-validation's summary (and every cell's out-of-fold score) from fold records, in any order.

    Each model needs each of its folds exactly once, all made with the same settings and data; otherwise one
    sentence says which fold is missing, repeated or different.
    """
    by_model: dict[str, dict[int, dict]] = {}
    for record in records:
        if record.get("kind") != FOLD_KIND:
            raise SystemExit("A fold file holds no fold of benchmarks/accuracy.py; pass the files that "
                             "`accuracy.py --fold K` or a cluster run wrote.")
        folds = by_model.setdefault(record["model"], {})
        if record["fold"] in folds:
            raise SystemExit(f"Fold {record['fold']} of {record['model']} is given twice; pass each fold once.")
        folds[record["fold"]] = record
    order = [m for m in (models or []) if m in by_model] + [m for m in by_model if m not in (models or [])]
    if not order:
        raise SystemExit("No fold results to merge; run the folds first (`accuracy.py --fold K`).")
    first = by_model[order[0]][min(by_model[order[0]])]
    settings = first["settings"]
    results: dict = {"folds": settings["folds"], "profile": settings["profile"], "seed": settings["seed"],
                     "models": {}, **({"recipe_overrides": settings["recipe"]} if settings["recipe"] else {})}
    oof: dict[str, dict] = {}
    for model in order:
        folds = by_model[model]
        missing = sorted(set(range(settings["folds"])) - set(folds))
        if missing:
            raise SystemExit(f"{model} lacks fold(s) {', '.join(map(str, missing))} of {settings['folds']}; run them "
                             "(`accuracy.py --fold K`) and merge again.")
        for k, record in folds.items():
            different = {key for key in settings if key != "model" and record["settings"].get(key) != settings[key]}
            if different or record["data"] != first["data"]:
                raise SystemExit(f"Fold {k} of {model} was made with other settings or data "
                                 f"({', '.join(sorted(different)) or 'data'}); rerun it with the same options.")
        ordered = [folds[k] for k in range(settings["folds"])]
        variants = {name: {"per_fold": [r["variants"][name]["per_fold"] for r in ordered],
                           "scores": [np.asarray(r["variants"][name]["scores"]) for r in ordered],
                           "patients": [row for r in ordered for row in r["variants"][name]["patients"]]}
                    for name in ordered[0]["variants"]}
        pooled_labels = np.concatenate([np.asarray(r["labels"]) for r in ordered])
        positive = (pooled_labels == POSITIVE).astype(int)
        entry: dict = {}
        for name, variant in variants.items():
            summary = {}
            for metric in (*METRICS, "accuracy_at_hindsight_threshold",
                           *(f"accuracy_threshold_{rule}" for rule in THRESHOLD_RULES), "train_seconds",
                           "predict_ms_per_cell"):
                values = [f[metric] for f in variant["per_fold"] if f[metric] is not None]
                summary[metric] = {"mean": float(np.mean(values)),
                                   "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
            pooled = np.concatenate(variant["scores"])
            part = {"per_fold": variant["per_fold"], "summary": summary,
                    "pooled_auc": float(roc_auc_score(positive, pooled)),
                    "confident_contradictions": _contradictions(positive, pooled)}
            if variant["patients"]:
                figures, notes = summarise_patients(variant["patients"], "fraction", reps=settings["bootstrap"],
                                                    seed=settings["seed"])
                part["patients"] = {"summary": figures, "notes": notes, "rows": variant["patients"]}
            entry[name] = part
        results["models"][model] = {**entry.pop("plain"), **entry}
        if len(settings["seeds"]) > 1:
            results["models"][model]["seeds"] = settings["seeds"]
        scores = {name: np.concatenate(v["scores"]) for name, v in variants.items()}
        cells = [(f, p, y, r["fold"]) for r in ordered for f, p, y in zip(r["files"], r["patients"], r["labels"],
                                                                          strict=True)]
        oof[model] = {"cells": [{"file": f, "patient": p, "label": config.CLASSES[int(y)], "fold": k,
                                 **{("score" if name == "plain" else f"score_{name}"): float(v[i])
                                    for name, v in scores.items()}}
                                for i, (f, p, y, k) in enumerate(cells)],
                      "patients": variants["plain"]["patients"]}
    hosts = sorted({r["machine"]["host"] for folds in by_model.values() for r in folds.values()})
    results["machine"] = {key: value for key, value in first["machine"].items() if key not in ("host", "process")}
    if len(hosts) > 1:  # folds trained on several machines: say which (their speeds differ)
        results["machine"]["hosts"] = hosts
    results["data"] = first["data"]
    return results, oof


def fold_file(work: Path, model: str, k: int) -> Path:
    return work / "folds" / f"{model}_fold{k}.json"


def keep_fold(work: Path, record: dict) -> Path:
    """Write a finished fold's record into WORK/folds, atomically, so a later failure or kill never loses it."""
    path = fold_file(work, record["model"], record["fold"])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(record))
    os.replace(partial, path)
    return path


def finished_fold(args: argparse.Namespace, model: str, k: int) -> dict | None:
    """A fold kept in --work with today's settings (only with --reuse): it is not trained again."""
    if not args.reuse:
        return None
    try:
        record = json.loads(fold_file(Path(args.work), model, k).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("settings") == fold_settings(args, model) else None


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    """Every fold of every model, one after another here or as tasks on a Dask cluster; then the merge."""
    args.work = str(Path(args.work or tempfile.mkdtemp(prefix="malaria-cv-")).resolve())
    work = Path(args.work)
    tasks = [(model, k) for model in args.models for k in range(args.folds)]
    records = {task: finished_fold(args, *task) for task in tasks}
    todo = [task for task in tasks if records[task] is None]
    if todo and (args.scheduler or args.workers):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _cluster import run_tasks

        for record in run_tasks(run_fold, args, todo, address=args.scheduler, workers=args.workers or 1,
                                retries=args.retries, connect_timeout=args.connect_timeout):
            keep_fold(work, record)
            records[(record["model"], record["fold"])] = record
    else:
        for task in todo:
            records[task] = run_fold(args, *task)
            keep_fold(work, records[task])
    return merge([records[task] for task in tasks], args.models)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="zip, folder or URL to fetch first (e.g. the dev zip)")
    parser.add_argument("--data-dir", default="data", help="folder holding cell_images/")
    parser.add_argument("--models", nargs="+", default=["malarianet", "tutorial_a", "tutorial_b"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--epochs", type=int, help="override the profile's epochs (for quick checks)")
    parser.add_argument("--recipe", nargs="+", default=[], metavar="SETTING=VALUE",
                        help="override recipe settings, e.g. standardize=true learning_rate=0.001")
    parser.add_argument("--seed", type=int, default=config.SEED)
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="train each fold once per seed and also score their mean (reported under 'ensemble')")
    parser.add_argument("--reuse", action="store_true",
                        help="keep finished runs in --work that have the same settings instead of retraining")
    parser.add_argument("--tta", action="store_true", help="also score with the 8 flips and rotations (reported under 'tta')")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples for each fold's intervals")
    parser.add_argument("--work", help="folder for the folds' splits and runs (default: a temporary folder)")
    parser.add_argument("--oof", help="also write every cell's out-of-fold score to this JSON file")
    parser.add_argument("--out", default="benchmarks/results/accuracy.json")
    parser.add_argument("--verbose", action="store_true")
    spread = parser.add_argument_group("one fold at a time, or spread over machines")
    spread.add_argument("--fold", type=int, metavar="K",
                        help="train and score only fold K (of --folds) of each model; --out gets that fold's results")
    spread.add_argument("--merge", nargs="+", metavar="FOLD_JSON",
                        help="make the summary (and --oof) from fold files of --fold runs or of --work/folds/")
    spread.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the folds as tasks on this Dask scheduler (tcp://HOST:8786); needs '.[cluster]'")
    spread.add_argument("--workers", type=int,
                        help="run the folds as tasks on a Dask cluster of this many local worker processes")
    spread.add_argument("--retries", type=int, default=2, help="times a failed fold task is tried again (Dask)")
    spread.add_argument("--connect-timeout", type=float, default=30, metavar="SECONDS",
                        help="how long to wait for --scheduler to answer (default: 30)")
    args = parser.parse_args(argv)
    args.recipe = _recipe_overrides(args.recipe, parser)
    if args.fold is not None and not 0 <= args.fold < args.folds:
        parser.error(f"--fold {args.fold} is not a fold of --folds {args.folds}; give 0 to {args.folds - 1}")
    if args.merge:
        results, oof = merge(_read_fold_files(args.merge, parser), args.models)
    elif args.fold is not None:
        args.work = str(Path(args.work or tempfile.mkdtemp(prefix="malaria-cv-")).resolve())
        records = [finished_fold(args, model, args.fold) or run_fold(args, model, args.fold) for model in args.models]
        for record in records:
            keep_fold(Path(args.work), record)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(records))
        print(f"fold {args.fold} of {', '.join(args.models)} written to {args.out}; merge the folds with "
              "--merge FILE...", file=sys.stderr)
        return {"records": records}
    else:
        results, oof = run(args)
    if args.oof:
        Path(args.oof).parent.mkdir(parents=True, exist_ok=True)
        Path(args.oof).write_text(json.dumps(oof))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    for model, entry in results["models"].items():
        for name, part in (("", entry), *((f" {n}", entry[n]) for n in entry
                                           if isinstance(entry[n], dict) and "per_fold" in entry[n])):
            if part is None:
                continue
            s = part["summary"]
            print(f"{model + name:<16} " + "  ".join(f"{m} {s[m]['mean']:.4f}±{s[m]['std']:.4f}" for m in
                                                     ("accuracy", "sensitivity", "specificity", "auc"))
                  + f"  train {s['train_seconds']['mean']:.0f}±{s['train_seconds']['std']:.0f} s")
            if "patients" in part:
                p = part["patients"]["summary"]
                print(f"{'':<16} patients {p['patients']}: " + "  ".join(
                    f"{m} {'n/a' if p.get(m) is None else format(p[m], '.3f')}"
                    for m in ("sensitivity", "specificity", "auc", "fraction_mae")))
    return results


def _read_fold_files(paths: list[str], parser: argparse.ArgumentParser) -> list[dict]:
    """The fold records in PATHS: each file holds one record (--work/folds/) or a list of them (--fold K --out)."""
    records = []
    for path in paths:
        try:
            loaded = json.loads(Path(path).read_text())
        except OSError as exc:
            parser.error(f"cannot read the fold file {path} ({exc.strerror})")
        except ValueError:
            parser.error(f"{path} is not JSON; pass the files that --fold K wrote")
        records.extend(loaded if isinstance(loaded, list) else [loaded])
    return records


if __name__ == "__main__":
    main()
