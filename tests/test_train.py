"""Training: smoke runs of every model, exact reproducibility, resume, and refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from malaria_lib.artifacts import load_model
from malaria_lib.cli import main
from malaria_lib.errors import MalariaError
from malaria_lib.pipeline import decode_image, make_dataset, read_part
from malaria_lib.recipes import get_recipe
from malaria_lib.split import make_split
from malaria_lib.train import read_history, train


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory, synthetic_root):
    out = tmp_path_factory.mktemp("split") / "s"
    make_split(synthetic_root, out, "patient", (0.6, 0.2, 0.2), seed=1)
    return out


def test_pipeline_batches_and_reads_any_png_mode(tmp_path, split_dir):
    from PIL import Image

    part = read_part(split_dir, "train")
    batch_x, batch_y = next(iter(make_dataset(part, 64, 8, training=True)))
    assert batch_x.shape == (8, 64, 64, 3) and batch_y.shape == (8, 2)
    assert 0.0 <= float(batch_x.numpy().min()) and float(batch_x.numpy().max()) <= 1.0
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((30, 50), 120, np.uint8)).save(gray)
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 1] = 250
    rgba[5:15, 5:15, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray((np.ones((20, 20)) * 40000).astype(np.uint16)).save(tmp_path / "d.png")
    assert decode_image(str(gray), 16).numpy()[0, 0].tolist() == [120, 120, 120]
    a = decode_image(str(tmp_path / "a.png"), 20, "nearest").numpy()
    assert a[0, 0].tolist() == [0, 0, 0] and a[10, 10].tolist() == [0, 250, 0]
    assert decode_image(str(tmp_path / "d.png"), 8).numpy().mean() > 100


@pytest.mark.parametrize("model", ["tutorial_a", "tutorial_b", "malarianet"])
def test_smoke_training_of_each_model(tmp_path, split_dir, model):
    result = train(model, split_dir, tmp_path / model, "smoke", epochs=1, verbose=0)
    assert (tmp_path / model / "best.keras").is_file()
    assert len(result.history["val_accuracy"]) == 1 and 0.0 <= result.best_val_accuracy <= 1.0
    settings = json.loads((tmp_path / model / "settings.json").read_text())
    assert settings["recipe"]["model"] == model and settings["recipe"]["input_size"] == get_recipe(model, "smoke").input_size
    assert load_model(result.best_model).output_shape == (None, 2)
    again = train(model, split_dir, tmp_path / model, "smoke", epochs=1, verbose=0)
    assert again.reused and again.history == result.history


def test_same_seed_gives_identical_weights_and_metrics(tmp_path, split_dir):
    runs = [train("malarianet", split_dir, tmp_path / f"run{i}", "smoke", epochs=2, verbose=0) for i in range(2)]
    assert runs[0].history["val_accuracy"] == runs[1].history["val_accuracy"]
    assert runs[0].history["loss"] == runs[1].history["loss"]
    w0 = load_model(tmp_path / "run0" / "last.keras").get_weights()
    w1 = load_model(tmp_path / "run1" / "last.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(w0, w1, strict=True))
    other = train("malarianet", split_dir, tmp_path / "run2", "smoke", epochs=2, seed=99, verbose=0)
    assert other.history["loss"] != runs[0].history["loss"]


def test_another_thread_drawing_random_numbers_does_not_change_the_weights(tmp_path, split_dir):
    """A Dask worker's own threads draw from Python's global `random` while a fold trains; the weights must not
    depend on it (they did: Keras seeds its unseeded generators from that stream)."""
    import random
    import threading

    quiet = train("tutorial_b", split_dir, tmp_path / "quiet", "smoke", epochs=1, verbose=0)
    stop = threading.Event()

    def draw():
        while not stop.is_set():
            random.random()

    noise = threading.Thread(target=draw, daemon=True)
    noise.start()
    try:
        busy = train("tutorial_b", split_dir, tmp_path / "busy", "smoke", epochs=1, verbose=0)
    finally:
        stop.set()
        noise.join()
    assert busy.history["loss"] == quiet.history["loss"]
    for a, b in zip(load_model(tmp_path / "quiet" / "last.keras").get_weights(),
                    load_model(tmp_path / "busy" / "last.keras").get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_interrupted_run_resumes_where_it_stopped(tmp_path, split_dir):
    out = tmp_path / "run"
    train("malarianet", split_dir, out, "smoke", epochs=1, verbose=0)
    # Pretend the run was asked for 3 epochs and stopped after the first: drop the finished marker.
    settings = json.loads((out / "settings.json").read_text())
    settings["recipe"]["epochs"] = 3
    (out / "settings.json").write_text(json.dumps(settings))
    (out / "result.json").unlink()
    result = train("malarianet", split_dir, out, "smoke", epochs=3, verbose=0)
    assert read_history(out)["epoch"] == [0.0, 1.0, 2.0]  # epoch 0 kept, 1 and 2 added
    assert not result.reused and len(result.history["loss"]) == 3


def test_refusals(tmp_path, split_dir, capsys):
    def run(*extra):
        return main(["train", "--split", str(split_dir), "--out", str(tmp_path / "o"), "--profile", "smoke",
                     "--epochs", "1", "--quiet", *extra])

    assert run("--model", "resnet") == 2
    assert "Unknown model 'resnet'" in capsys.readouterr().err
    assert run("--profile", "gpu") == 2
    assert "Unknown profile 'gpu'" in capsys.readouterr().err
    assert main(["train", "--split", str(tmp_path), "--out", str(tmp_path / "o2"), "--profile", "smoke"]) == 3
    assert "no manifest.csv" in capsys.readouterr().err
    assert run("--model", "tutorial_b", "--standardize") == 2
    assert "Only malarianet can standardize" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was written
    assert run("--model", "tutorial_b") == 0
    capsys.readouterr()
    run_files = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    assert run("--model", "tutorial_a") == 5  # another run is there
    assert "--force" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()} == run_files, "the refusal changed nothing"
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is not a model")
    assert run("--model", "tutorial_b", "--resume", str(corrupt)) == 3
    assert "cannot be read" in capsys.readouterr().err


def test_manifest_pointing_at_missing_files(tmp_path, split_dir):
    copy = tmp_path / "split"
    shutil.copytree(split_dir, copy, symlinks=True)
    victim = next((copy / "val" / "Parasitized").iterdir())
    victim.unlink()
    with pytest.raises(MalariaError, match="1 files listed .* are missing"):
        read_part(copy, "val")
    assert split_dir.exists()


def test_series_runs_with_other_settings_are_moved_aside_not_deleted(tmp_path, split_dir):
    out = tmp_path / "run"
    first = train("malarianet", split_dir, out, "smoke", epochs=1, verbose=0)
    old_model = first.best_model.read_bytes()
    with pytest.raises(MalariaError, match="holds another run"):
        train("malarianet", split_dir, out, "smoke", epochs=2, verbose=0)
    assert first.best_model.read_bytes() == old_model  # the refusal left the finished run alone
    result = train("malarianet", split_dir, out, "smoke", epochs=2, replace_stale=True, verbose=0)
    assert len(result.history["epoch"]) == 2 and not result.reused
    aside = result.moved_aside
    assert aside is not None and aside.parent == out.parent and aside.name.startswith("run.stale-")
    assert (aside / "best.keras").read_bytes() == old_model and (aside / "result.json").is_file()
    again = train("malarianet", split_dir, out, "smoke", epochs=2, replace_stale=True, verbose=0)
    assert again.reused and again.moved_aside is None


def test_our_network_standardizes_by_default_and_keeps_the_layer_in_the_saved_model(tmp_path, split_dir, capsys):
    assert main(["train", "--split", str(split_dir), "--out", str(tmp_path / "s"), "--profile", "smoke",
                 "--epochs", "1", "--quiet"]) == 0
    settings = json.loads((tmp_path / "s" / "settings.json").read_text())
    assert settings["recipe"]["standardize"] is True
    model = load_model(tmp_path / "s" / "best.keras")
    assert model.get_layer("cell_standardization") is not None
    assert "midway between the class medians" in json.loads((tmp_path / "s" / "best.json").read_text())[
        "threshold_from"]


def test_no_standardize_trains_without_the_layer(tmp_path, split_dir, capsys):
    assert main(["train", "--split", str(split_dir), "--out", str(tmp_path / "n"), "--profile", "smoke",
                 "--epochs", "1", "--quiet", "--no-standardize"]) == 0
    assert json.loads((tmp_path / "n" / "settings.json").read_text())["recipe"]["standardize"] is False
    names = [layer.name for layer in load_model(tmp_path / "n" / "best.keras").layers]
    assert not any("standardization" in name for name in names)


def test_none_overrides_turn_optional_settings_off_and_are_refused_elsewhere():
    assert get_recipe("malarianet", "cpu").augment == "ours"
    assert get_recipe("malarianet", "cpu", augment=None).augment is None  # no augmentation, not "unchanged"
    with pytest.raises(MalariaError, match="epochs need a value"):
        get_recipe("malarianet", "cpu", epochs=None)


def test_training_without_augmentation_records_it(tmp_path, split_dir):
    result = train("malarianet", split_dir, tmp_path / "plain", "smoke", epochs=1, augment=None, verbose=0)
    settings = json.loads((tmp_path / "plain" / "settings.json").read_text())
    assert settings["recipe"]["augment"] is None and len(result.history["epoch"]) == 1


def test_a_budget_becomes_whole_epochs_of_the_training_set():
    from malaria_lib.recipes import describe_length, for_training_set

    budget = get_recipe("malarianet", "smoke", budget_cells=72_000)
    assert budget.budget_cells == 72_000
    assert [for_training_set(budget, cells).epochs for cells in (6_057, 5_921, 19_290, 200_000)] == [12, 12, 4, 1]
    assert for_training_set(budget, 19_290).max_train_images is None  # whole epochs: every cell
    # less than one pass: one epoch over a sample of the budget's size, never a whole epoch more than asked
    assert for_training_set(budget, 200_000).max_train_images == 72_000
    assert describe_length(budget, 200_000) == "72,000 training cells seen (1 epoch of a sample of 72,000 of the 200,000 cells)"
    assert for_training_set(get_recipe("malarianet", "smoke"), 6_057) == get_recipe("malarianet", "smoke")  # no budget
    assert describe_length(budget, 19_290) == "72,000 training cells seen (4 epochs of 19,290 cells)"
    assert describe_length(get_recipe("tutorial_a", "full")) == "30 epochs"
    # a count of epochs asked for replaces the budget; a budget of nothing is refused
    assert get_recipe("malarianet", "cpu").budget_cells == 54_000
    assert get_recipe("malarianet", "cpu", epochs=2).budget_cells is None
    with pytest.raises(MalariaError, match="trains nothing"):
        get_recipe("malarianet", "smoke", budget_cells=0)
    # a pretrained backbone keeps its head-only stage to a third of the epochs, at least one
    mobile = get_recipe("mobilenet_v3_small", "full", budget_cells=10_000)
    assert (for_training_set(mobile, 1_000).epochs, for_training_set(mobile, 1_000).frozen_epochs) == (10, 3)
    assert (for_training_set(mobile, 5_000).epochs, for_training_set(mobile, 5_000).frozen_epochs) == (2, 1)


def test_training_with_a_budget_trains_its_epochs_and_fits_the_schedule_to_them(tmp_path, split_dir):
    from malaria_lib.pipeline import read_part

    cells = len(read_part(split_dir, "train"))
    result = train("malarianet", split_dir, tmp_path / "b", "smoke", budget_cells=2 * cells, verbose=0)
    settings = json.loads((tmp_path / "b" / "settings.json").read_text())
    assert settings["recipe"]["budget_cells"] == 2 * cells and settings["recipe"]["epochs"] == 2
    assert len(result.history["epoch"]) == 2
    # the cosine schedule spans the two epochs: its last step's rate is the floor, alpha times the peak
    import keras

    schedule = keras.saving.load_model(tmp_path / "b" / "last.keras").optimizer._learning_rate
    steps = -(-cells // settings["recipe"]["batch_size"])
    assert schedule.warmup_steps + schedule.decay_steps == 2 * steps


def test_a_budget_below_one_pass_trains_one_epoch_of_a_seeded_sample_of_that_size(tmp_path, split_dir):
    from malaria_lib.pipeline import read_part

    cells = len(read_part(split_dir, "train"))
    budget = cells // 2
    result = train("malarianet", split_dir, tmp_path / "half", "smoke", budget_cells=budget, verbose=0)
    settings = json.loads((tmp_path / "half" / "settings.json").read_text())
    assert abs(settings["train_images"] - budget) <= 1 and settings["recipe"]["epochs"] == 1
    assert len(result.history["epoch"]) == 1
    import keras

    steps = int(keras.saving.load_model(tmp_path / "half" / "last.keras").optimizer.iterations.numpy())
    assert steps == -(-settings["train_images"] // settings["recipe"]["batch_size"])  # the sample's steps, no more


# Training cells of the dev subset's splits (seed 1337): the five cross-validation folds of benchmarks/accuracy.py,
# the series' patient, random and ordered splits; and of the NIH archive's size (27,558 cells) split the same way.
DEV_TRAIN_CELLS = {"folds": (5747, 5794, 5865, 6103, 6148), "patient": 6057, "random": 6096, "ordered": 6966}
# the epochs the README's and the chapters' cpu figures were measured with on the dev subset
MEASURED_EPOCHS = {"tutorial_a": 3, "tutorial_b": 3, "malarianet": 9, "mobilenet_v3_small": 6}


@pytest.mark.parametrize("model", sorted(MEASURED_EPOCHS))
def test_the_cpu_budgets_train_the_dev_subset_as_measured_and_the_archive_in_few_epochs(model):
    from malaria_lib.recipes import for_training_set

    recipe = get_recipe(model, "cpu")
    splits = {"tutorial_a": ("random", "patient"), "tutorial_b": ("ordered", "patient")}.get(model, ("patient",))
    sizes = [*DEV_TRAIN_CELLS["folds"], *(DEV_TRAIN_CELLS[name] for name in splits)]
    assert {for_training_set(recipe, cells).epochs for cells in sizes} == {MEASURED_EPOCHS[model]}
    assert 1 <= for_training_set(recipe, 19_290).epochs <= 4  # the archive's patient split: a third of the cost
