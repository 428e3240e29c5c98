"""benchmarks/accuracy.py on a tiny synthetic set: every patient scored once, by a model that never saw it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from malaria_lib.synth import make_synthetic_cells

ROOT = Path(__file__).resolve().parent.parent


def _load(script: str = "accuracy"):
    spec = importlib.util.spec_from_file_location(f"{script}_benchmark", ROOT / "benchmarks" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_folds_keep_patients_whole_and_spread_healthy_ones(tmp_path):
    bench = _load()
    make_synthetic_cells(tmp_path / "d", n=200, seed=2, n_patients=15)
    from malaria_lib.inventory import list_cells

    cells, _ = list_cells(tmp_path / "d")
    folds = bench.patient_folds(cells, 3, seed=1)
    assert set(folds.values()) == {0, 1, 2} and len(folds) == 15
    healthy = {c.patient for c in cells} - {c.patient for c in cells if c.label == "Parasitized"}
    assert sorted(sum(folds[p] == k for p in healthy) for k in range(3))[0] >= 1


def test_cross_validation_scores_every_cell_once(tmp_path):
    bench = _load()
    make_synthetic_cells(tmp_path / "d", n=80, seed=3, n_patients=8)
    out, oof = tmp_path / "acc.json", tmp_path / "oof.json"
    results = bench.main(["--data-dir", str(tmp_path / "d"), "--models", "malarianet", "--folds", "2",
                          "--profile", "smoke", "--epochs", "1", "--bootstrap", "20", "--work", str(tmp_path / "w"),
                          "--out", str(out), "--oof", str(oof), "--tta"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    from malaria_lib.runtime import machine
    assert results["machine"]["cpu"] == machine()["cpu"]  # a fold's time means little without its processor
    entry = results["models"]["malarianet"]
    assert len(entry["per_fold"]) == 2 and sum(f["cells"] for f in entry["per_fold"]) == 80
    assert 0.0 <= entry["summary"]["accuracy"]["mean"] <= 1.0
    # no threshold does better than the one picked in hindsight on the test cells
    assert all(f["accuracy"] <= f["accuracy_at_hindsight_threshold"] + 1e-9 for f in entry["per_fold"])
    # the card's rule (class medians) is the one reported, beside the other rules on the same scores
    assert all(f["accuracy"] == f["accuracy_threshold_medians"] for f in entry["per_fold"])
    assert all(f["accuracy_threshold_youden"] <= f["accuracy_at_hindsight_threshold"] + 1e-9
               for f in entry["per_fold"])
    assert len(entry["tta"]["per_fold"]) == 2 and 0.0 <= entry["tta"]["summary"]["auc"]["mean"] <= 1.0
    scored = json.loads(oof.read_text())["malarianet"]
    assert len(scored["cells"]) == 80 and len({r["file"] for r in scored["cells"]}) == 80
    assert all(0.0 <= r["score_tta"] <= 1.0 for r in scored["cells"])
    wrong = entry["confident_contradictions"]["margin 0.5"]
    assert wrong["parasitized_scored_below"] + wrong["uninfected_scored_above"] == sum(
        (r["score"] < 0.5) == (r["label"] == "Parasitized") for r in scored["cells"])
    # every patient screened once, by its own fold's rule, and the pooled figures count all of them
    patients = entry["patients"]
    assert len(patients["rows"]) == 8 == patients["summary"]["patients"]
    assert sorted(r["patient"] for r in patients["rows"]) == sorted({r["patient"] for r in scored["cells"]})
    assert {r["fold"] for r in patients["rows"]} == {0, 1}
    s = patients["summary"]
    assert s["infected"] + s["healthy"] == 8 and s["healthy"] >= 1
    assert s["sensitivity"] == s["confusion"]["tp"] / s["infected"]

    # the screening rules compared on the same folds and networks
    compared = _load("screening_rules").main(["--work", str(tmp_path / "w"), "--folds", "2", "--bootstrap", "20",
                                              "--out", str(tmp_path / "rules.json")])
    assert json.loads((tmp_path / "rules.json").read_text()) == json.loads(json.dumps(compared))
    default = compared["rules"][compared["default"]]
    # the default chooser is the one model cards store, so accuracy.py's verdicts are the default rule's
    assert {r["patient"]: r["verdict"] for r in default["rows"]} == {r["patient"]: r["verdict"] for r in patients["rows"]}
    for name, entry in compared["rules"].items():
        assert sorted(r["patient"] for r in entry["rows"]) == sorted(r["patient"] for r in patients["rows"]), name
        assert [f["fold"] for f in entry["per_fold"]] == [0, 1]
        c = entry["summary"]["confusion"]
        assert entry["missed"] == [r["patient"] for r in entry["rows"] if r["infected"] and not r["verdict"]]
        assert c["fn"] == len(entry["missed"]) and c["fp"] == len(entry["false_alarms"])
    assert set(compared["default_false_alarm_sweep"]) == {"0.01", "0.02", "0.05", "0.1"}


def test_seeds_are_scored_alone_and_as_an_ensemble_and_reused(tmp_path):
    bench = _load()
    make_synthetic_cells(tmp_path / "d", n=64, seed=4, n_patients=8)
    argv = ["--data-dir", str(tmp_path / "d"), "--models", "malarianet", "--folds", "2", "--profile", "smoke",
            "--epochs", "1", "--bootstrap", "10", "--work", str(tmp_path / "w"), "--seeds", "5", "6", "--seed", "5",
            "--out", str(tmp_path / "acc.json"), "--oof", str(tmp_path / "oof.json"), "--reuse"]
    results = bench.main(argv)
    entry = results["models"]["malarianet"]
    assert entry["seeds"] == [5, 6]
    assert len(entry["seed6"]["per_fold"]) == len(entry["ensemble"]["per_fold"]) == 2
    cells = json.loads((tmp_path / "oof.json").read_text())["malarianet"]["cells"]
    assert len(cells) == 64
    mean = np.array([(c["score"] + c["score_seed6"]) / 2 for c in cells])
    assert np.allclose([c["score_ensemble"] for c in cells], mean, atol=1e-6)
    assert not np.allclose([c["score"] for c in cells], [c["score_seed6"] for c in cells])  # two different models
    # the ensemble's training time is its members' together
    for f, s5, s6 in zip(entry["ensemble"]["per_fold"], entry["per_fold"], entry["seed6"]["per_fold"], strict=True):
        assert abs(f["train_seconds"] - (s5["train_seconds"] + s6["train_seconds"])) < 0.5
    models = sorted((tmp_path / "w").glob("malarianet_fold*/best.keras"))
    assert len(models) == 4
    stamps = [m.stat().st_mtime_ns for m in models]
    again = bench.main(argv)  # --reuse: nothing is retrained, the figures repeat
    assert [m.stat().st_mtime_ns for m in models] == stamps
    repeated = again["models"]["malarianet"]["ensemble"]["summary"]
    for metric in ("accuracy", "auc", "sensitivity", "specificity", "train_seconds"):
        assert repeated[metric] == entry["ensemble"]["summary"][metric]


def test_hindsight_accuracy_is_the_best_any_threshold_reaches():
    bench = _load()
    from malaria_lib.config import POSITIVE

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.clip(rng.normal(0.5, 0.3, 300) + 0.2 * (labels == POSITIVE), 0, 1)
    brute = max(((scores >= t) == (labels == POSITIVE)).mean() for t in np.concatenate([scores, [2.0]]))
    assert bench._hindsight_accuracy(labels, scores) == brute
    assert bench._hindsight_accuracy(labels, (labels == POSITIVE).astype(float)) == 1.0


def test_recipe_overrides_are_typed_and_unknown_ones_refused(capsys):
    import argparse

    import pytest

    bench = _load()
    parser = argparse.ArgumentParser()
    assert bench._recipe_overrides(["standardize=true", "learning_rate=0.001", "epochs=24", "augment=None"],
                                   parser) == {"standardize": True, "learning_rate": 0.001, "epochs": 24,
                                               "augment": None}
    for bad in (["colour=1"], ["epochs=many"], ["standardize=yes"], ["epochs"]):
        with pytest.raises(SystemExit):
            bench._recipe_overrides(bad, parser)
        assert "--recipe" in capsys.readouterr().err


def test_hindsight_cutoff_counts_patients_above_each_healthy_one():
    bench = _load("screening_rules")
    fractions = {"H1": (0.0, False), "H2": (0.05, False), "I1": (0.03, True), "I2": (0.06, True), "I3": (0.5, True)}
    rows = [{"patient": p, "fraction": f, "infected": i} for p, (f, i) in fractions.items()]
    assert bench.hindsight([{"test": rows}]) == {"0 of 2 cleared": "3 of 3 found", "1 of 2 cleared": "3 of 3 found",
                                                 "2 of 2 cleared": "2 of 3 found"}
