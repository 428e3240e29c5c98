"""benchmarks/export_latency.py on a smoke-trained model: it runs end to end and writes every figure it promises."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest

from malaria_lib.split import make_split
from malaria_lib.synth import make_synthetic_cells
from malaria_lib.train import train

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "export_latency.py"
FORMATS = ("keras", "tflite float16", "tflite int8")


@pytest.fixture(scope="module")
def export_latency():
    spec = importlib.util.spec_from_file_location("benchmarks_export_latency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_export_latency_writes_sizes_accuracies_and_latencies(tmp_path, export_latency, capsys):
    make_synthetic_cells(tmp_path / "data", n=80, seed=3, n_patients=8)
    make_split(tmp_path / "data", tmp_path / "split", strategy="patient", ratios=(0.7, 0.15, 0.15), seed=1337)
    model = train("malarianet", tmp_path / "split", tmp_path / "run", "smoke", epochs=1, verbose=0).best_model
    out = tmp_path / "results" / "export_latency.json"
    returned = export_latency.main(["--model", str(model), "--split", str(tmp_path / "split"), "--out", str(out),
                                    "--runs", "3", "--warmup", "1", "--representative", "8", "--quiet"])
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))

    machine = results["machine"]
    assert machine["cpu_count"] >= 1 and machine["tensorflow"] and machine["platform"] and machine["date"]
    assert results["settings"]["batch_size"] == 1 and results["settings"]["runs"] == 3
    assert results["model"]["input_size"] == 96 and results["model"]["test_images"] > 0
    assert positive(results["export_seconds"]) and positive(results["total_seconds"])
    assert set(results["formats"]) == set(FORMATS)
    for name, entry in results["formats"].items():
        assert positive(entry["bytes"]) and positive(entry["kib"]), name
        assert 0.0 <= entry["test_accuracy"] <= 1.0 and entry["max_score_change"] >= 0.0
        latency = entry["latency"]
        for key in ("median_ms", "p10_ms", "p90_ms", "mean_ms"):
            assert positive(latency[key]), (name, key)
        assert latency["runs"] == 3 and positive(entry["speedup_vs_keras"])
    assert results["formats"]["keras"]["speedup_vs_keras"] == 1.0
    assert results["formats"]["tflite int8"]["bytes"] < results["formats"]["tflite float16"]["bytes"] \
        < results["formats"]["keras"]["bytes"]
    table = capsys.readouterr().out
    assert all(name in table for name in FORMATS) and "median ms" in table


def test_memory_benchmark_scores_both_folders_and_records_peak_memory(tmp_path, synthetic_root, capsys):
    spec = importlib.util.spec_from_file_location("benchmarks_memory", SCRIPT.with_name("memory.py"))
    memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(memory)
    make_split(synthetic_root, tmp_path / "split", strategy="patient", ratios=(0.7, 0.15, 0.15), seed=1)
    model = train("malarianet", tmp_path / "split", tmp_path / "run", "smoke", epochs=1, verbose=0).best_model
    work = tmp_path / "work"
    shutil.copytree(synthetic_root / "cell_images", work / "data" / "cell_images")
    out = tmp_path / "memory.json"
    results = memory.main(["--model", str(model), "--work", str(work), "--scale", "300", "--reps", "20",
                           "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    small, large = results["runs"]
    assert small["cells"] == 120 and large["cells"] == 300
    assert all(positive(run["peak_rss_mb"]) and positive(run["seconds"]) for run in results["runs"])
    names = sorted(p.name for p in (work / "scaled_300" / "cell_images" / "Parasitized").iterdir())
    assert any("_rep1" in name for name in names), "the large folder repeats the cells under new names"
    assert {"cpu_count", "tensorflow", "date"} <= set(results["machine"])
