"""Code that only a GPU runs, exercised on the CPU: mixed precision and two replicas.

On a GPU the `full` profile trains under `mixed_float16`, and with several GPUs under a
MirroredStrategy. Neither can run here as it would there, so: mixed precision is forced on the CPU
(slow, but the same arithmetic), and the CPU is split into two logical devices so that
MirroredStrategy has two replicas. What stays for a real GPU: speed, cuDNN's kernels and their
non-determinism, and memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from malaria_lib import train as training
from malaria_lib.evaluate import evaluate_model
from malaria_lib.explain import grad_cam
from malaria_lib.export import compare_exports, export_tflite
from malaria_lib.models import CellStandardization, float32_copy
from malaria_lib.pipeline import load_images, read_part
from malaria_lib.split import make_split

# float16 keeps 11 significant bits: the same weights' scores under float16 and float32 arithmetic agree to about
# 1e-3 on these cells; 0.02 leaves room for a cell near a ReLU's kink while still catching a broken cast.
FLOAT16_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory, synthetic_root):
    out = tmp_path_factory.mktemp("gpu") / "split"
    make_split(synthetic_root, out, strategy="patient", ratios=(0.6, 0.2, 0.2), seed=5)
    return out


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, split_dir):
    """One short training of our network with mixed_float16 forced, as the full profile does on a GPU."""
    patch = pytest.MonkeyPatch()
    patch.setattr(training, "precision_for", lambda profile: "mixed_float16")
    try:
        result = training.train("malarianet", split_dir, tmp_path_factory.mktemp("mixed") / "run", "smoke",
                                epochs=2, verbose=0)
    finally:
        patch.undo()
    return result


def test_mixed_precision_trains_with_finite_losses_and_leaves_the_global_policy_alone(mixed_run):
    assert mixed_run.settings["precision"] == "mixed_float16"
    assert all(np.isfinite(mixed_run.history[key]).all() for key in ("loss", "val_loss"))
    assert keras.mixed_precision.global_policy().name == "float32", "later work in the process stays float32"
    model = training.load_model(mixed_run.best_model)
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert any(name == "mixed_float16" for name in policies.values())
    standardize = next(layer for layer in model.layers if isinstance(layer, CellStandardization))
    assert policies[standardize.name] == "float32", "per-cell statistics are computed in float32"
    assert policies[model.layers[-1].name] == "float32", "the softmax is computed in float32"
    assert model.output.dtype == "float32"


def test_the_same_weights_score_alike_in_float16_and_float32(mixed_run, split_dir):
    mixed = training.load_model(mixed_run.best_model)
    plain = float32_copy(mixed)
    assert all(layer.dtype_policy.name == "float32" for layer in plain.layers)
    assert float32_copy(plain) is plain
    images = load_images(read_part(split_dir, "test").paths, 96, "area").astype(np.float32) / 255
    a, b = mixed.predict(images, verbose=0)[:, 0], plain.predict(images, verbose=0)[:, 0]
    assert np.abs(a - b).max() < FLOAT16_TOLERANCE
    assert np.abs(a - b).max() > 0, "the mixed model really computed in float16"


def test_a_mixed_precision_model_evaluates_explains_and_exports(mixed_run, split_dir, tmp_path):
    evaluation = evaluate_model(mixed_run.best_model, split_dir)
    assert evaluation.n_images > 0 and 0 <= evaluation.metrics["accuracy"] <= 1
    model = training.load_model(mixed_run.best_model)
    images = load_images(read_part(split_dir, "test").paths[:4], 96, "area").astype(np.float32) / 255
    maps = grad_cam(model, images)
    assert maps.shape == (4, 96, 96) and np.isfinite(maps).all() and maps.max() <= 1
    representative = load_images(read_part(split_dir, "train").paths[:16], 96, "area").astype(np.float32) / 255
    paths = export_tflite(mixed_run.best_model, tmp_path / "export", representative)
    assert set(paths) == {"float16", "int8"} and all(p.stat().st_size > 0 for p in paths.values())
    rows = {row["format"]: row for row in compare_exports(mixed_run.best_model, paths, split_dir)}
    assert rows["tflite float16"]["max_score_change"] < FLOAT16_TOLERANCE
    assert rows["tflite int8"]["accuracy"] is not None


TWO_REPLICAS = textwrap.dedent("""
    import json, sys
    import keras
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from malaria_lib.train import train
    from malaria_lib.pipeline import make_dataset, read_part
    split, out = sys.argv[1], sys.argv[2]
    steps = lambda path: int(keras.saving.load_model(path).optimizer.iterations)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored = train("malarianet", split, out + "/mirrored", "smoke", epochs=1, verbose=0, strategy=strategy)
    single = train("malarianet", split, out + "/single", "smoke", epochs=1, verbose=0)
    on_device = train("malarianet", split, out + "/on_device", "smoke", epochs=1, verbose=0, strategy=strategy,
                      augment_on_device=True)
    part = read_part(split, "train")
    batch = next(iter(strategy.experimental_distribute_dataset(make_dataset(part, 96, 32))))[0]
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "settings": mirrored.settings.get("replicas"),
                      "per_replica": [int(t.shape[0]) for t in batch.values],
                      "mirrored": mirrored.history, "single": single.history, "on_device": on_device.history,
                      "steps": [steps(out + "/mirrored/last.keras")], "single_steps": steps(out + "/single/last.keras")}))
""")


def test_two_replicas_train_the_same_global_batch_as_one_device(split_dir, tmp_path):
    result = subprocess.run([sys.executable, "-c", TWO_REPLICAS, str(split_dir), str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["replicas"] == 2 and found["settings"] == 2
    assert found["per_replica"] == [16, 16], "the recipe's batch of 32 is split over the two replicas"
    mirrored, single = found["mirrored"], found["single"]
    assert np.isfinite(mirrored["loss"]).all() and np.isfinite(mirrored["val_loss"]).all()
    assert np.isfinite(found["on_device"]["loss"]).all(), "augmentation in each replica's step works too"
    assert found["steps"] == [found["single_steps"]], "as many optimizer steps as on one device: same schedule"
    # Same global batches and learning rate; BatchNorm statistics and dropout masks are per replica, so the
    # losses are close, not equal.
    assert mirrored["loss"][0] == pytest.approx(single["loss"][0], rel=0.15)


def test_an_interrupted_mixed_precision_run_resumes_with_its_optimizer_state(split_dir, tmp_path, monkeypatch):
    import warnings

    monkeypatch.setattr(training, "precision_for", lambda profile: "mixed_float16")
    out = tmp_path / "run"
    training.train("malarianet", split_dir, out, "smoke", epochs=1, verbose=0)
    (out / "result.json").unlink()  # as if killed after the first epoch's checkpoint
    settings = json.loads((out / "settings.json").read_text())
    settings["recipe"]["epochs"] = 2
    (out / "settings.json").write_text(json.dumps(settings))
    seen: list[int] = []

    class Steps(training._EpochTimer):
        def on_train_begin(self, logs=None):
            seen.append(int(self.model.optimizer.iterations.numpy()))

    monkeypatch.setattr(training, "_EpochTimer", Steps)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "Skipping variable loading for optimizer" fails the test
        result = training.train("malarianet", split_dir, out, "smoke", epochs=2, verbose=0)
    assert len(result.history["epoch"]) == 2 and seen and seen[0] > 0, "the optimizer resumed where it stopped"


def test_with_a_gpu_augmentation_runs_in_the_training_step_and_the_saved_network_is_unchanged(split_dir, tmp_path,
                                                                                               monkeypatch):
    given_to_data, traced = [], []
    make_dataset, build_augmentation = training.make_dataset, training.build_augmentation

    def spy_dataset(part, *args, augment=None, **kwargs):
        given_to_data.append(augment)
        return make_dataset(part, *args, augment=augment, **kwargs)

    def spy_augmentation(name, seed):
        layers = build_augmentation(name, seed)

        class Traced(keras.layers.Layer):
            def call(self, images, training=False):
                traced.append(training)  # runs while Keras traces the training step
                return layers(images, training=training)

        return Traced()

    monkeypatch.setattr(training, "make_dataset", spy_dataset)
    monkeypatch.setattr(training, "build_augmentation", spy_augmentation)
    result = training.train("malarianet", split_dir, tmp_path / "run", "smoke", epochs=1, verbose=0,
                            augment_on_device=True)
    assert given_to_data == [None, None], "the tf.data pipeline no longer augments"
    assert traced and all(traced), "the training step augments"
    assert result.settings["augment_on"] == "device" and np.isfinite(result.history["loss"]).all()
    plain = training.train("malarianet", split_dir, tmp_path / "cpu", "smoke", epochs=1, verbose=0)
    assert "augment_on" not in plain.settings and given_to_data[2] is not None, "the CPU path is as before"
    on_device, on_cpu = training.load_model(result.best_model), training.load_model(plain.best_model)
    assert [type(layer) for layer in on_device.layers] == [type(layer) for layer in on_cpu.layers]


def test_a_pretrained_backbone_fine_tunes_in_mixed_precision_and_exports(split_dir, tmp_path, monkeypatch):
    """The full profile's transfer learning on a GPU: both stages under mixed_float16 (weights from a file, as behind
    a firewall) with finite losses, and the model exports to TF Lite from its float32 copy."""
    import zipfile

    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from malaria_lib.pretrained import stage_of

    app = keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), include_top=False, weights=None,
                                              include_preprocessing=False)
    with h5py.File(tmp_path / "w.h5", "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, app)
    monkeypatch.setattr(training, "precision_for", lambda profile: "mixed_float16")
    run = training.train("mobilenet_v3_small", split_dir, tmp_path / "run", "smoke", weights=str(tmp_path / "w.h5"),
                         max_train_images=64, verbose=0)
    assert run.settings["precision"] == "mixed_float16" and len(run.history["loss"]) == 2
    assert all(np.isfinite(run.history[key]).all() for key in ("loss", "val_loss"))
    with zipfile.ZipFile(run.out_dir / "last.keras") as archive:  # saved in the fine-tuning stage
        assert stage_of(json.loads(archive.read("config.json"))) == "fine_tune"
    monkeypatch.undo()
    paths = export_tflite(run.best_model, tmp_path / "tflite", load_images(read_part(split_dir, "train").paths[:8], 96,
                                                                          "area").astype(np.float32) / 255)
    rows = compare_exports(run.best_model, paths, split_dir)
    assert {row["format"] for row in rows} == {"keras", "tflite float16", "tflite int8"}
