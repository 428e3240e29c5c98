"""benchmarks/full_size_folder.py and benchmarks/epochs.py on tiny synthetic folders: the sizes, the renamed
patients, and whole epochs timed from inside train and from outside."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from malaria_lib.inventory import list_cells
from malaria_lib.synth import make_synthetic_cells

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_full_size_folder_repeats_cells_under_new_patients(tmp_path):
    folder = _load("full_size_folder")
    make_synthetic_cells(tmp_path / "small", n=60, seed=2, n_patients=6)
    small, _ = list_cells(tmp_path / "small")
    counts = folder.build(tmp_path / "small", tmp_path / "big", cells=157)
    big, _ = list_cells(tmp_path / "big")
    assert len(big) == sum(counts.values()) == 157
    assert len({c.patient for c in big}) > len({c.patient for c in small})  # copies belong to new patients
    assert folder.renamed("C33P1thinF_IMG_1_cell_2.png", 2) == "C2033P1thinF_IMG_1_cell_2.png"
    share = sum(c.label == "Parasitized" for c in small) / len(small)
    assert abs(counts["Parasitized"] / 157 - share) < 0.02  # class balance kept
    (tmp_path / "small" / "cell_images" / "Parasitized").rename(tmp_path / "moved")  # the source is not changed
    assert len(list((tmp_path / "big" / "cell_images" / "Parasitized").iterdir())) == counts["Parasitized"]


def test_epochs_times_real_training_epochs_at_both_sizes(tmp_path):
    make_synthetic_cells(tmp_path / "dev", n=60, seed=3, n_patients=6)
    _load("full_size_folder").build(tmp_path / "dev", tmp_path / "full", cells=120)
    out = tmp_path / "epochs.json"
    results = _load("epochs").main(["--dev", str(tmp_path / "dev"), "--full", str(tmp_path / "full"),
                                    "--models", "tutorial_b", "--epochs", "2", "--profile", "smoke",
                                    "--work", str(tmp_path / "w"), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    for size in ("dev", "full"):
        entry = results["sizes"][size]["models"]["tutorial_b"]
        assert [row["epoch"] for row in entry["epochs"]] == [1, 2]
        for row in entry["epochs"]:
            assert 0 < row["train_seconds"] < row["seconds"] and row["val_seconds"] > 0
            # the outside clock times the same epoch as train's own history.csv, plus the checkpoints after it
            assert row["logged_seconds"] <= row["seconds"] < row["logged_seconds"] + 3
            assert abs(row["checkpoint_seconds"] - (row["seconds"] - row["logged_seconds"])) < 1e-9
        assert entry["train_cells"] > 0 and entry["steady_train_cells_per_s"] > 0
    assert results["sizes"]["full"]["models"]["tutorial_b"]["train_cells"] > \
        results["sizes"]["dev"]["models"]["tutorial_b"]["train_cells"]
    assert set(results["full_over_dev"]["tutorial_b"]) == {"steady_train_cells_per_s", "steady_cells_per_s"}


def test_autotune_times_both_settings_and_finds_the_same_weights(tmp_path):
    from malaria_lib import pipeline

    make_synthetic_cells(tmp_path / "cells", n=60, seed=4, n_patients=6)
    out = tmp_path / "autotune.json"
    results = _load("autotune").main(["--data", str(tmp_path / "cells"), "--models", "malarianet", "--epochs", "2",
                                      "--profile", "smoke", "--work", str(tmp_path / "w"), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    entry = results["models"]["malarianet"]
    for setting in ("autotune_on", "autotune_off"):
        assert [row["epoch"] for row in entry[setting]["epochs"]] == [1, 2]
        assert len(entry[setting]["best_weights_sha256"]) == 64
    # the autotuner may change the speed, never the result: same weights to the last bit, same validation accuracy
    assert entry["same_weights"] and entry["same_val_accuracy"]
    assert entry["steady_speedup"] > 0
    assert pipeline.AUTOTUNE_WHILE_TRAINING_ON_CPU is False  # the benchmark puts the library's setting back


def test_training_on_a_cpu_runs_without_the_autotuner_and_says_so_in_the_dataset(synthetic_root, tmp_path):
    import tensorflow as tf

    from malaria_lib import pipeline
    from malaria_lib.split import make_split

    split = make_split(synthetic_root, tmp_path / "split", "patient", (0.7, 0.15, 0.15), seed=1)
    part = pipeline.read_part(split.out, "train")
    assert not tf.config.list_physical_devices("GPU")
    assert pipeline.make_dataset(part, 32, 8, training=True).options().autotune.enabled is False
    assert pipeline.make_dataset(part, 32, 8).options().autotune.enabled is not False  # scoring: left to tf.data


def test_step_times_each_setting_in_its_own_process_as_asked(tmp_path):
    out = tmp_path / "step.json"
    results = _load("step").main(["--models", "malarianet", "--profile", "smoke", "--steps", "2", "--epochs", "1",
                                  "--batch-sizes", "8", "--out", str(out)])
    assert json.loads(out.read_text()) == results
    runs = {r["setting"]: r for r in results["runs"]}
    assert set(runs) == {"graph, deterministic", "graph", "xla", "batch 8"}
    # Keras compiled with XLA only where asked: the deterministic graph is what train runs on a CPU
    assert [runs[name]["jit_compile"] for name in ("graph, deterministic", "graph", "xla")] == [False, False, True]
    assert [r["batch_size"] for r in runs.values()] == [32, 32, 32, 8]  # the recipe's, then the one asked for
    assert all(r["cells"] == 2 * r["batch_size"] and r["cells_per_s"] > 0 and len(r["loss"]) == 1 for r in runs.values())
    assert results["xla_speedup"]["malarianet"] == round(
        runs["xla"]["cells_per_s"] / runs["graph, deterministic"]["cells_per_s"], 3)  # against train's own step
    assert results["batch_speedup"]["malarianet"]["8"] == round(
        runs["batch 8"]["cells_per_s"] / runs["graph, deterministic"]["cells_per_s"], 3)
