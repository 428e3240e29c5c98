"""benchmarks/throughput.py on a tiny synthetic set: it runs end to end and writes every figure it promises."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from malaria_lib.synth import make_synthetic_cells

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
KINDS = ("old_loader", "pipeline", "bound_no_augment", "bound_with_augment")
MODELS = ("tutorial_a", "tutorial_b", "malarianet")


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("benchmarks_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_throughput_writes_all_figures(tmp_path, throughput, capsys):
    make_synthetic_cells(tmp_path / "data", n=80, seed=1, n_patients=8)
    out = tmp_path / "results" / "throughput.json"
    returned = throughput.main(["--data-dir", str(tmp_path / "data"), "--split-dir", str(tmp_path / "split"),
                                "--out", str(out), "--steps", "2", "--warmup", "1", "--rounds", "2", "--quiet",
                                "--time-to-95", "--t95-epochs", "1"])
    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned, default=float))

    machine = results["machine"]
    assert machine["cpu_count"] >= 1 and machine["tensorflow"] and machine["platform"] and machine["date"]
    assert results["data"]["images"] == 80 and results["data"]["split"]["seed"] == 1337
    used = results["data"]["train_images_used"]
    assert 0 < used == results["data"]["train_images_in_split"] < 80
    assert len(results["load"]["before"]) == 3 and positive(results["total_seconds"])

    assert set(results["models"]) == set(MODELS)
    for name, m in results["models"].items():
        for kind in KINDS:
            figures = m[kind]
            for key in ("images_per_s", "images_per_s_best", "median_step_s", "peak_rss_mb", "setup_seconds"):
                assert positive(figures[key]), (name, kind, key, figures[key])
            assert figures["timed_steps"] == 2 and figures["rounds"] == 2
            assert len(figures["round_images_per_s"]) == 2 and all(positive(x) for x in figures["round_images_per_s"])
            assert figures["images_per_s"] == pytest.approx(float(np.median(figures["round_images_per_s"])))
        assert positive(m["pipeline"]["first_epoch_seconds"]) and positive(m["pipeline"]["first_epoch_images_per_s"])
        assert m["pipeline"]["first_epoch_images"] == used
        for key in ("pipeline_over_bound", "pipeline_over_bound_no_augment", "pipeline_over_old_loader"):
            assert positive(m["ratios"][key]), (name, key)
        assert m["ratios"]["pipeline_over_bound"] == pytest.approx(
            m["pipeline"]["images_per_s"] / m["bound_with_augment"]["images_per_s"])
        assert isinstance(m["within_10pct_of_bound"], bool)
        epochs = m["epoch_seconds"]
        assert all(positive(epochs["estimated"][k]) for k in KINDS)
        assert epochs["estimated"]["pipeline"] == pytest.approx(used / m["pipeline"]["images_per_s"])
        assert positive(epochs["pipeline_first_epoch_measured"])
        assert m["batch_size"] == m["recipe"]["batch_size"] and m["input_size"] == m["recipe"]["input_size"]
    assert results["models"]["tutorial_b"]["bound_with_augment"]["same_as"] == "bound_no_augment"

    t95 = results["time_to_95"]
    assert len(t95["epochs"]) == 1 and positive(t95["epochs"][0]["seconds"])
    assert 0.0 <= t95["epochs"][0]["val_accuracy"] <= 1.0
    assert t95["reached"] == (t95["seconds"] is not None)

    table = capsys.readouterr().out
    assert all(name in table for name in MODELS) and "b/c" in table


def test_speed_counts_only_the_timed_steps(throughput):
    ends = [5.0, 6.0, 7.0, 8.0, 10.0, 11.0, 12.0]  # step 0 (warm-up) ended at 5 s; step 4 took 2 s
    figures = throughput.speed(ends, [99, 10, 10, 10, 10, 10, 4], 1, 5)
    assert figures["images_per_s"] == pytest.approx(50 / 6)
    assert figures["median_step_s"] == pytest.approx(1.0) and figures["images_per_s_from_median_step"] == 10.0
    assert figures["timed_images"] == 50
    with pytest.raises(ValueError):
        throughput.speed(ends, [10] * 7, 0, 6)
    with pytest.raises(ValueError):
        throughput.speed(ends, [10] * 7, 2, 6)


def test_old_loader_batches_are_rescaled_augmented_and_wrap(tmp_path, throughput):
    from malaria_lib.pipeline import SplitPart

    make_synthetic_cells(tmp_path, n=10, seed=2, n_patients=2)
    paths = sorted(str(p) for p in (tmp_path / "cell_images").rglob("*.png"))
    part = SplitPart(paths, np.array([0] * 5 + [1] * 5, dtype=np.int32), ["p"] * 10)
    loader = throughput.OldStyleLoader(part, 32, 4, "tutorial_a", seed=1, length=7)
    assert len(loader) == 7 and [loader.batch_len(i) for i in range(4)] == [4, 4, 2, 4]
    x, y = loader[2]
    assert x.shape == (2, 32, 32, 3) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert y.shape == (2, 2) and np.all(y.sum(axis=1) == 1)
    x_ours, _ = throughput.OldStyleLoader(part, 32, 4, "ours", seed=1)[0]
    assert x_ours.shape == (4, 32, 32, 3) and 0.0 <= x_ours.min() and x_ours.max() <= 1.0
    plain, _ = throughput.OldStyleLoader(part, 32, 4, None, seed=1)[0]
    assert not np.allclose(plain, throughput.OldStyleLoader(part, 32, 4, "tutorial_a", seed=1)[0][0])
