"""Training that survives a kill: a real training process is killed (SIGKILL, no clean-up) and run again.

The child process kills itself at a chosen point: inside an epoch, between two epochs, in the middle of
writing a checkpoint (it writes half a file, then dies), and after the last epoch before the model card.
The checkpoints it leaves must load, and the same call again must finish the run from where it stopped
with the same weights and card as a run that was never interrupted (same seed, CPU).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from malaria_lib.artifacts import card_path, load_model, read_card
from malaria_lib.split import make_split
from malaria_lib.train import read_history, train

EPOCHS = 3
CHILD = textwrap.dedent("""
    import os, signal, sys
    import keras
    from malaria_lib import train as training

    point, split, out, epochs = sys.argv[1:5]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "between":  # after the second epoch's checkpoint, before the third epoch
        class Timer(training._EpochTimer):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 2:
                    die()
                super().on_epoch_begin(epoch, logs)
        training._EpochTimer = Timer
    elif point == "epoch":  # in the second epoch, after its first batch
        class Timer(training._EpochTimer):
            def on_epoch_begin(self, epoch, logs=None):
                super().on_epoch_begin(epoch, logs)
                self.now = epoch

            def on_train_batch_end(self, batch, logs=None):
                if self.now == 1 and batch == 0:
                    die()
        training._EpochTimer = Timer
    elif point == "save":  # the third checkpoint write (epoch 2) stops halfway
        saves = []
        save = keras.Model.save

        def half_save(self, filepath, *args, **kwargs):
            saves.append(filepath)
            if len(saves) == 3:
                with open(filepath, "wb") as handle:
                    handle.write(b"PK\\x03\\x04 half of a zip")
                die()
            return save(self, filepath, *args, **kwargs)
        keras.Model.save = half_save
    elif point == "card":  # after the last epoch, before the card and result.json
        training.write_model_card = lambda *args, **kwargs: die()
    training.train("malarianet", split, out, "smoke", epochs=int(epochs), verbose=0)
""")


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory, synthetic_root):
    out = tmp_path_factory.mktemp("kill") / "split"
    make_split(synthetic_root, out, strategy="patient", ratios=(0.6, 0.2, 0.2), seed=5)
    return out


@pytest.fixture(scope="module")
def uninterrupted(split_dir, tmp_path_factory):
    """The run the killed ones must end up equal to."""
    return train("malarianet", split_dir, tmp_path_factory.mktemp("kill") / "whole", "smoke", epochs=EPOCHS, verbose=0)


def _weights(path: Path) -> list[np.ndarray]:
    return load_model(path).get_weights()


@pytest.mark.parametrize("point", ["epoch", "between", "save", "card"])
def test_a_killed_training_finishes_when_run_again(point, split_dir, tmp_path, uninterrupted):
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", CHILD, point, str(split_dir), str(out), str(EPOCHS)],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "result.json").exists()
    for name in ("best.keras", "last.keras"):  # what a kill leaves behind is whole, whatever moment it came
        if (out / name).exists():
            load_model(out / name)
    done_before = len(read_history(out).get("epoch", []))
    assert done_before == {"epoch": 1, "between": 2, "save": 2, "card": EPOCHS}[point]

    result = train("malarianet", split_dir, out, "smoke", epochs=EPOCHS, verbose=0)
    assert not result.reused and (out / "result.json").is_file() and card_path(out / "best.keras").is_file()
    epochs = result.history["epoch"]
    assert epochs == [float(e) for e in range(EPOCHS)], "every epoch once, in order"
    assert json.loads((out / "result.json").read_text())["epochs_run"] == EPOCHS
    assert not list(Path(out).glob(".*partial*")), "nothing half-written is left"
    assert result.history["loss"] == uninterrupted.history["loss"], "the same shuffles, augmentations and dropout"
    for name in ("last.keras", "best.keras"):
        for resumed, whole in zip(_weights(out / name), _weights(uninterrupted.out_dir / name), strict=True):
            np.testing.assert_array_equal(resumed, whole, err_msg=name)
    assert read_card(out / "best.keras") == read_card(uninterrupted.best_model)
    assert train("malarianet", split_dir, out, "smoke", epochs=EPOCHS, verbose=0).reused


SPLIT_CHILD = textwrap.dedent("""
    import os, signal, sys
    from malaria_lib.split import make_split

    data, out = sys.argv[1:3]
    links = []
    symlink = os.symlink

    def dying_symlink(*args, **kwargs):
        links.append(args)
        if len(links) == 30:  # a third of the way through the new tree
            os.kill(os.getpid(), signal.SIGKILL)
        return symlink(*args, **kwargs)

    os.symlink = dying_symlink
    make_split(data, out, strategy="patient", ratios=(0.6, 0.2, 0.2), seed=4, force=True)
""")


def test_a_split_replaced_with_force_stays_usable_when_killed_midway(synthetic_root, tmp_path):
    from malaria_lib.pipeline import read_part
    from malaria_lib.split import read_manifest, read_settings

    out = tmp_path / "split"
    make_split(synthetic_root, out, strategy="patient", ratios=(0.6, 0.2, 0.2), seed=3)
    before = read_manifest(out)
    killed = subprocess.run([sys.executable, "-c", SPLIT_CHILD, str(synthetic_root), str(out)],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert read_settings(out)["seed"] == 3 and read_manifest(out) == before, "the old split is whole"
    assert all(Path(p).is_file() for p in read_part(out, "train").paths)
    result = make_split(synthetic_root, out, strategy="patient", ratios=(0.6, 0.2, 0.2), seed=4, force=True)
    assert read_settings(out)["seed"] == 4 and not result.reused
    assert all(Path(p).is_file() for p in read_part(out, "val").paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"], "no staging or old copy is left behind"


FETCH_CHILD = textwrap.dedent("""
    import os, signal, sys
    from malaria_lib import fetch as fetching

    source, data = sys.argv[1:3]
    written = []
    write = fetching._write_checked

    def dying_write(*args, **kwargs):
        written.append(1)
        if len(written) == 25:  # a quarter of the way through the extraction
            os.kill(os.getpid(), signal.SIGKILL)
        return write(*args, **kwargs)

    fetching._write_checked = dying_write
    fetching.fetch(source, data, force=True, progress=False)
""")


def test_a_fetch_killed_during_extraction_leaves_the_previous_cells_usable(raw_tree, raw_zip, tmp_path):
    from conftest import tree_digest

    from malaria_lib.fetch import fetch
    from malaria_lib.inventory import list_cells

    data = tmp_path / "data"
    first = fetch(str(raw_tree), data, progress=False)
    before, source_before = tree_digest(data / "cell_images"), tree_digest(raw_zip)
    killed = subprocess.run([sys.executable, "-c", FETCH_CHILD, str(raw_zip), str(data)],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert tree_digest(data / "cell_images") == before, "the cells fetched before are untouched"
    assert len(list_cells(data)[0]) == sum(first.classes.values())
    report = fetch(str(raw_zip), data, force=True, progress=False)  # the same call again completes
    assert report.source == str(raw_zip) and not (data / ".cell_images.staging").exists()
    assert tree_digest(raw_zip) == source_before, "the source is only read"


def test_early_stopping_keeps_counting_across_a_resume():
    import keras

    from malaria_lib.train import _EarlyStopping

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    # best at the second epoch, then two epochs without a gain: with patience 3 the next flat epoch stops
    resumed = _EarlyStopping([0.5, 0.7, 0.6, 0.6], patience=3)
    resumed.set_model(model)
    resumed.on_train_begin()
    resumed.on_epoch_end(4, {"val_accuracy": 0.65})
    assert model.stop_training, "patience counts the epochs trained before the interruption"
    fresh = _EarlyStopping([], patience=3)
    model.stop_training = False
    fresh.set_model(model)
    fresh.on_train_begin()
    fresh.on_epoch_end(0, {"val_accuracy": 0.65})
    assert not model.stop_training
