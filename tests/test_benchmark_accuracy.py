"""benchmarks/accuracy.py on a tiny synthetic set: every patient scored once, by a model that never saw it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from malaria_lib.synth import make_synthetic_cells

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", ROOT / "benchmarks" / "accuracy.py")
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
    entry = results["models"]["malarianet"]
    assert len(entry["per_fold"]) == 2 and sum(f["cells"] for f in entry["per_fold"]) == 80
    assert 0.0 <= entry["summary"]["accuracy"]["mean"] <= 1.0
    assert len(entry["tta"]["per_fold"]) == 2 and 0.0 <= entry["tta"]["summary"]["auc"]["mean"] <= 1.0
    scored = json.loads(oof.read_text())["malarianet"]
    assert len(scored["cells"]) == 80 and len({r["file"] for r in scored["cells"]}) == 80
    assert all(0.0 <= r["score_tta"] <= 1.0 for r in scored["cells"])
    # every patient screened once, by its own fold's rule, and the pooled figures count all of them
    patients = entry["patients"]
    assert len(patients["rows"]) == 8 == patients["summary"]["patients"]
    assert sorted(r["patient"] for r in patients["rows"]) == sorted({r["patient"] for r in scored["cells"]})
    assert {r["fold"] for r in patients["rows"]} == {0, 1}
    s = patients["summary"]
    assert s["infected"] + s["healthy"] == 8 and s["healthy"] >= 1
    assert s["sensitivity"] == s["confusion"]["tp"] / s["infected"]
