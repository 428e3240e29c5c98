"""malaria_lib.export: latency measured at batch 1, for Keras and for exported TensorFlow Lite files."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest

from malaria_lib.errors import MalariaError
from malaria_lib.export import export_tflite, latency_table, measure_latency
from malaria_lib.models import build_model


def test_measure_latency_times_single_image_batches_after_warmup():
    seen = []

    def slow(batch):
        seen.append(batch.shape)
        time.sleep(0.002)

    figures = measure_latency(slow, np.zeros((8, 8, 3)), runs=5, warmup=2)
    assert seen == [(1, 8, 8, 3)] * 7, "warm-up calls are made but not timed; one image becomes a batch of one"
    assert figures["runs"] == 5 and figures["warmup"] == 2
    assert 2.0 <= figures["p10_ms"] <= figures["median_ms"] <= figures["p90_ms"] < 1000
    assert figures["mean_ms"] >= 2.0
    with pytest.raises(MalariaError, match="at least one timed run"):
        measure_latency(slow, np.zeros((8, 8, 3)), runs=0)


def test_latency_table_keras_then_each_tflite_file(tmp_path):
    keras.utils.set_random_seed(0)
    model_path = tmp_path / "tiny.keras"
    build_model("malarianet", 32).save(model_path)
    paths = export_tflite(model_path, tmp_path / "export", kinds=("float16",))
    rows = latency_table(model_path, paths, np.random.default_rng(0).random((32, 32, 3)), runs=3, warmup=1)
    assert [r["format"] for r in rows] == ["keras", "tflite float16"]
    assert all(r["median_ms"] > 0 and r["runs"] == 3 for r in rows)


def test_export_is_quiet_and_its_files_run(tmp_path, capfd):
    keras.utils.set_random_seed(0)
    model_path = tmp_path / "tiny.keras"
    build_model("malarianet", 32).save(model_path)
    capfd.readouterr()
    paths = export_tflite(model_path, tmp_path / "export", np.random.default_rng(0).random((4, 32, 32, 3)))
    from malaria_lib.export import TFLiteModel

    scores = TFLiteModel(paths["int8"]).scores(np.zeros((2, 32, 32, 3), np.float32))
    assert scores.shape == (2,) and np.all((0 <= scores) & (scores <= 1))
    captured = capfd.readouterr()
    assert captured.out == "", "the converter's listings and logs are hidden"
    assert "fully_quantize" not in captured.err and "Assets written" not in captured.err
    assert "XNNPACK" not in captured.err
