"""Training a model on a split: the tutorials' recipes and ours, reproducible and resumable.

A run lives in one folder: `settings.json` (what was asked), `history.csv` / `history.json`
(per-epoch metrics and seconds), `best.keras` (best validation accuracy), `last.keras` (the
end of the latest epoch, optimizer state included, so an interrupted run resumes there) and
`result.json` once finished.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import shutil
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras.src.random import seed_generator as keras_seed_generator

from . import config
from .artifacts import load_model, write_card
from .augment import build_augmentation
from .calibration import decisions_from_validation
from .download import sha256_of
from .errors import InTheWay, MalariaError
from .files import move_aside, remove_partials, save_model_atomic, write_text_atomic
from .inference import predict_proba
from .models import MODELS, build_model
from .pipeline import SplitPart, make_dataset, read_part
from .pretrained import resolve_weights, set_stage, stage_of
from .recipes import Recipe, for_training_set, get_recipe
from .runtime import machine, versions

# Keras' fit makes two iterators over the training data per epoch (one at the start, a spare at the end) and each
# draws a new shuffle order: a run resumed at epoch K skips 2K orders. tests/test_kill.py fails if this changes.
KERAS_ITERATORS_PER_EPOCH = 2
RUN_FILES = ("settings.json", "history.csv", "history.json", "best.keras", "best.json", "last.keras", "random_state.json",
             "result.json")


@dataclass
class TrainResult:
    """Where a run's files are and what it reached."""

    out_dir: Path
    settings: dict
    history: dict[str, list[float]]
    best_epoch: int
    best_val_accuracy: float
    seconds: float
    reused: bool = False
    moved_aside: Path | None = None  # an older run with other settings that this one replaced, kept there

    @property
    def best_model(self) -> Path:
        return self.out_dir / "best.keras"


def set_seed(seed: int = config.SEED, deterministic: bool | None = None) -> None:
    """One seed for Python, NumPy and TensorFlow; deterministic ops on a CPU so runs repeat exactly.

    Keras draws the seed of every generator it is not given one for (weight initializers, dropout) from Python's
    global `random`, which every thread of the process shares: a Dask worker's own threads draw from it while a
    fold trains, so the same fold came out with other weights on a cluster. Keras gets a private stream instead,
    the same numbers the global one gives right after seeding (so runs on one thread are unchanged), which no
    other thread can advance. Why patch a private name: Keras offers no public way to seed that stream alone.
    """
    keras.utils.set_random_seed(seed)
    keras_seed_generator.python_random = random.Random(seed)
    if deterministic is None:
        deterministic = not tf.config.list_physical_devices("GPU")
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def strategy_for_hardware() -> tf.distribute.Strategy:
    """Several GPUs (a Kaggle 2xT4, a workstation): MirroredStrategy over all of them; otherwise the default."""
    gpus = tf.config.list_physical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def precision_for(profile: str) -> str:
    """mixed_float16 for the full profile on a GPU (float16 math, float32 weights: about twice as fast on a T4);
    float32 everywhere else, so CPU results repeat exactly."""
    return "mixed_float16" if profile == "full" and tf.config.list_physical_devices("GPU") else "float32"


@contextlib.contextmanager
def _dtype_policy(name: str):
    """Build models under the policy NAME, then restore the previous one: layers keep the policy they were built
    with, and nothing else in the process (augmentation, evaluation, export) silently turns float16."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _optimizer(recipe: Recipe, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate: float | keras.optimizers.schedules.LearningRateSchedule = recipe.learning_rate
    if recipe.schedule == "cosine":
        total = max(1, recipe.epochs * steps_per_epoch)
        warmup = min(steps_per_epoch, total // 4)
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.learning_rate / 10, decay_steps=max(1, total - warmup), alpha=0.01,
            warmup_target=recipe.learning_rate, warmup_steps=warmup)
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    if recipe.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=recipe.weight_decay)
    raise MalariaError(f"Unknown optimizer '{recipe.optimizer}'; use adam, rmsprop or adamw.")


def compile_model(model: keras.Model, recipe: Recipe, steps_per_epoch: int) -> keras.Model:
    """Apply a recipe's optimizer and loss; accuracy is the metric every tutorial reports."""
    model.compile(
        optimizer=_optimizer(recipe, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
    )
    return model


@dataclass(frozen=True)
class Stage:
    """Epochs [first, last) of a run trained with one set of trainable layers and one optimizer."""

    name: str  # "whole" (any network of ours), "all" (a backbone from scratch), "head", "fine_tune"
    first: int
    last: int
    learning_rate: float


def training_stages(recipe: Recipe) -> list[Stage]:
    """Our networks and a backbone from random weights train in one stage; a backbone with weights in two, as
    Keras' transfer-learning guide teaches: the new head on the frozen backbone, then the top blocks too at a
    lower learning rate."""
    if not MODELS[recipe.model].pretrained:
        return [Stage("whole", 0, recipe.epochs, recipe.learning_rate)]
    if recipe.weights is None or recipe.frozen_epochs <= 0:
        return [Stage("all", 0, recipe.epochs, recipe.learning_rate)]
    head = min(recipe.frozen_epochs, recipe.epochs)
    stages = [Stage("head", 0, head, recipe.learning_rate)]
    if recipe.epochs > head:
        stages.append(Stage("fine_tune", head, recipe.epochs, recipe.fine_tune_learning_rate or recipe.learning_rate))
    return stages


def _enter_stage(model: keras.Model, recipe: Recipe, stage: Stage, steps: int) -> None:
    """Set which layers train and compile with the stage's optimizer (a schedule spans the stage's epochs)."""
    if stage.name != "whole":
        set_stage(model, stage.name, recipe.fine_tune_from)
    compile_model(model, replace(recipe, epochs=stage.last - stage.first, learning_rate=stage.learning_rate), steps)


def _checkpoint_stage(checkpoint: Path, stages: list[Stage]) -> Stage:
    """The stage a checkpoint was saved in: from its layers' trainable flags for a two-stage run."""
    if len(stages) == 1:
        return stages[0]
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            name = stage_of(json.loads(archive.read("config.json")))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        raise MalariaError(f"The checkpoint {checkpoint} cannot be resumed (its configuration is unreadable); delete "
                           "it, or retrain with --force.") from None
    return next((stage for stage in stages if stage.name == name), stages[0])


def _sample(part: SplitPart, limit: int | None, seed: int) -> SplitPart:
    """At most `limit` cells, drawn per class in proportion, so quick profiles keep the balance."""
    if limit is None or len(part) <= limit:
        return part
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in np.unique(part.labels):
        members = np.flatnonzero(part.labels == label)
        keep.extend(rng.choice(members, size=round(limit * len(members) / len(part)), replace=False))
    keep.sort()
    return SplitPart([part.paths[i] for i in keep], part.labels[keep], [part.patients[i] for i in keep])


class _EpochTimer(keras.callbacks.Callback):
    """Adds each epoch's wall-clock seconds to the logs (and so to history.csv)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start


def read_history(out_dir: str | Path) -> dict[str, list[float]]:
    """history.csv as {column: values}; empty when no epoch has finished."""
    path = Path(out_dir) / "history.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(r[key]) for r in rows] for key in (rows[0] if rows else {})}


def augment_in_train_step(model: keras.Model, augment: keras.Layer) -> None:
    """Augment each batch inside MODEL's training step, on the device that trains, as the TensorFlow tutorials
    do with augmentation layers in the model.

    Why not layers in the model itself: the saved model, its card, Grad-CAM and the exports would all carry them.
    Overriding `train_step` on this one instance leaves the network and its checkpoints exactly as on a CPU; Keras
    calls `self.train_step`, so the override applies, and it is not saved. Colab gives a T4 only two CPU cores,
    which the colour jitter on 32 cells at a time would keep the GPU waiting for.
    """
    step = model.train_step

    def train_step(data):
        images, labels = data[0], data[1]
        return step((keras.ops.clip(augment(images, training=True), 0.0, 1.0), labels))

    model.train_step = train_step


def _restore(model: keras.Model, checkpoint: Path) -> None:
    """Load a checkpoint's weights and optimizer state into a freshly built and compiled model.

    Why not `keras.saving.load_model`: a model saved under mixed precision comes back with a plain optimizer
    where it had a LossScaleOptimizer, and Keras then skips the optimizer's saved state ("Skipping variable
    loading for optimizer"): a resumed GPU run would restart AdamW's moments from zero. Building the model
    under the run's own policy first gives the optimizer the shape the checkpoint has.
    """
    model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(checkpoint)
    except Exception as exc:  # Keras raises many types for a damaged zip or a mismatched architecture
        raise MalariaError(f"The checkpoint {checkpoint} cannot be resumed ({type(exc).__name__}); it is damaged or "
                           "belongs to another network: delete it, or retrain with --force.") from None


def _result(out_dir: Path, settings: dict, seconds: float, reused: bool) -> TrainResult:
    history = read_history(out_dir)
    accuracy = history.get("val_accuracy", [])
    best = int(np.argmax(accuracy)) if accuracy else -1
    return TrainResult(out_dir, settings, history, best + 1, float(accuracy[best]) if accuracy else float("nan"),
                       seconds, reused)


def train(
    model_name: str,
    split_dir: str | Path,
    out_dir: str | Path,
    profile: str = "cpu",
    *,
    seed: int = config.SEED,
    force: bool = False,
    replace_stale: bool = False,
    resume: str | Path | None = None,
    verbose: int | str = "auto",
    strategy: tf.distribute.Strategy | None = None,
    augment_on_device: bool | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    **overrides,
) -> TrainResult:
    """Train `model_name` on the train part of a split, keeping the best model by val_accuracy.

    The same arguments again return the finished run instead of training twice; a run that
    was interrupted continues from its `last.keras`; different settings in the same folder
    are refused unless `force` (which deletes the old run) or `replace_stale` (which moves it
    aside to OUT_DIR.stale-TIMESTAMP and says so in `TrainResult.moved_aside`).

    `strategy` defaults to `strategy_for_hardware()`. Under a MirroredStrategy the recipe's batch size
    is the global batch, split evenly over the replicas, and the learning rate is the recipe's: the
    same optimisation as on one device, only spread out (each replica sees batch / replicas cells).
    `augment_on_device` (default: when a GPU is present) moves the augmentation from the tf.data
    pipeline on the CPU into the training step, where it runs on the accelerator.
    `callbacks` are added to the run's own (timing, history, checkpoints), e.g. TensorBoard or a benchmark's clock.
    """
    recipe = get_recipe(model_name, profile, **overrides)
    weights_file = resolve_weights(model_name, recipe.weights) if recipe.weights not in (None, "imagenet") else None
    split_dir, out_dir = Path(split_dir), Path(out_dir)
    all_train = read_part(split_dir, "train")
    # a budget of cells seen becomes whole epochs of this split, or one epoch of a sample when it is smaller
    recipe = for_training_set(recipe, min(len(all_train), recipe.max_train_images or len(all_train)))
    train_part = _sample(all_train, recipe.max_train_images, seed)
    val_part = read_part(split_dir, "val")
    settings = {"model": model_name, "profile": profile, "seed": seed, "split": str(split_dir.resolve()),
                "recipe": recipe.to_dict(), "train_images": len(train_part), "val_images": len(val_part)}
    if weights_file is not None:  # a local weights file: which one, by content
        settings["weights_sha256"] = sha256_of(weights_file)
    strategy = strategy or strategy_for_hardware()
    precision = precision_for(profile)
    if precision != "float32":  # recorded only when it differs, so runs made before this key existed stay valid
        settings["precision"] = precision
    if strategy.num_replicas_in_sync > 1:  # the recipe's batch is the global batch, split over the replicas
        settings["replicas"] = strategy.num_replicas_in_sync
    on_device = bool(tf.config.list_physical_devices("GPU")) if augment_on_device is None else augment_on_device
    if on_device and recipe.augment is not None:  # other random draws than in tf.data: say so in the settings
        settings["augment_on"] = "device"

    if resume is not None:
        load_model(resume)  # a damaged checkpoint is reported before anything else happens
    moved_aside = _move_aside_if_stale(out_dir, settings) if replace_stale and not force else None
    initial_epoch, start_from = _prepare_folder(out_dir, settings, force, resume)
    if resume is None and (out_dir / "result.json").is_file():
        return _result(out_dir, settings, json.loads((out_dir / "result.json").read_text())["seconds"], True)

    set_seed(seed)
    with strategy.scope():  # the augmentation's random state must live where the replicas can update it
        augment = build_augmentation(recipe.augment, seed)
    steps = math.ceil(len(train_part) / recipe.batch_size)
    stages = training_stages(recipe)
    stage = _checkpoint_stage(start_from, stages) if start_from is not None else stages[0]
    with strategy.scope(), _dtype_policy(precision):
        # a resumed backbone gets its weights from the checkpoint: nothing to download
        weights = {"weights": None if start_from is not None else recipe.weights} if recipe.weights else {}
        model = build_model(model_name, recipe.input_size, recipe.standardize, **weights)
        _enter_stage(model, recipe, stage, steps)
        if start_from is not None:
            _restore(model, start_from)
            # the checkpoint knows how far it got: a kill between the history row and the checkpoint leaves one
            # row too many, which is dropped and its epoch trained again
            initial_epoch = stage.first + int(model.optimizer.iterations.numpy()) // steps
            _keep_history_rows(out_dir, initial_epoch)
            if resume is None:
                _restore_random_state(out_dir, initial_epoch, _random_generators(model, augment))
    train_data = make_dataset(train_part, recipe.input_size, recipe.batch_size, training=True,
                              augment=None if on_device else augment, resize=recipe.resize, seed=seed,
                              skip_orders=KERAS_ITERATORS_PER_EPOCH * initial_epoch)
    val_data = make_dataset(val_part, recipe.input_size, recipe.batch_size, resize=recipe.resize)
    if initial_epoch >= recipe.epochs:  # killed after the last epoch, before the card or result.json: finish
        return _finish(out_dir, settings, recipe, val_part, sum(read_history(out_dir).get("seconds", [])), moved_aside)
    if on_device and augment is not None:
        augment_in_train_step(model, augment)
    history = read_history(out_dir)
    started = time.perf_counter()
    for next_stage in stages[stages.index(stage):]:
        if next_stage.last <= initial_epoch:
            continue
        if next_stage is not stage:  # the head has trained: unfreeze the top blocks, a new optimizer
            with strategy.scope():
                _enter_stage(model, recipe, next_stage, steps)
        so_far = read_history(out_dir).get("val_accuracy", [])
        own: list[keras.callbacks.Callback] = [  # in this order: the history row first, then the checkpoints
            _EpochTimer(),
            keras.callbacks.CSVLogger(out_dir / "history.csv", append=True),
            _Checkpoints(out_dir, max(so_far, default=float("-inf")), _random_generators(model, augment)),
        ]
        if recipe.early_stopping:
            own.append(_EarlyStopping(so_far, patience=recipe.early_stopping))
        model.fit(train_data, validation_data=val_data, epochs=next_stage.last,
                  initial_epoch=max(initial_epoch, next_stage.first), callbacks=own + list(callbacks or ()),
                  verbose=verbose,
                  shuffle=False)  # tf.data shuffles
        if model.stop_training:  # early stopping ends the run, not just the stage
            break
    seconds = time.perf_counter() - started + sum(history.get("seconds", []))
    return _finish(out_dir, settings, recipe, val_part, seconds, moved_aside)


def _finish(out_dir: Path, settings: dict, recipe: Recipe, val_part: SplitPart, seconds: float,
            moved_aside: Path | None) -> TrainResult:
    """After the last epoch: the card, history.json, then result.json, which marks the run finished. Each is
    written atomically and result.json last, so a run killed here finishes on the next call."""
    result = _result(out_dir, settings, seconds, False)
    result.moved_aside = moved_aside
    write_model_card(out_dir / "best.keras", recipe, val_part)
    write_text_atomic(out_dir / "history.json", json.dumps(result.history, indent=1))
    write_text_atomic(out_dir / "result.json", json.dumps({
        "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
        "epochs_run": len(result.history.get("epoch", [])), "seconds": seconds, "versions": versions(),
        "machine": machine(),
    }, indent=1))
    return result


class _Checkpoints(keras.callbacks.Callback):
    """best.keras when val_accuracy beats the best so far, then last.keras (optimizer state included), each
    written to a temporary file and renamed into place.

    Why not keras.callbacks.ModelCheckpoint: it writes the `.keras` file where it stands, so a kill during the
    save leaves a truncated checkpoint that the next run cannot resume from.
    """

    def __init__(self, out_dir: Path, best_so_far: float, generators: list):
        super().__init__()
        self.out_dir, self.best, self.generators = out_dir, best_so_far, generators

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_accuracy")
        if value is not None and value > self.best:
            self.best = float(value)
            save_model_atomic(self.model, self.out_dir / "best.keras")
        _save_random_state(self.out_dir, epoch + 1, self.generators)  # before last.keras, which it belongs to
        save_model_atomic(self.model, self.out_dir / "last.keras")


def _random_generators(model: keras.Model, augment: keras.Layer | None) -> list:
    """The state variables of the Keras random generators a training run draws from: the augmentation's and the
    model's own (dropout).

    Why by name: Keras keeps a generator's state in a variable called `seed_generator_state` and offers no public
    list of a model's generators. Neither is in last.keras: Keras saves the weights, not these states.
    """
    layers = [model] + ([augment] if augment is not None else [])
    return [v for layer in layers for v in layer.variables if v.path.endswith("seed_generator_state")]


def _save_random_state(out_dir: Path, epochs_done: int, generators: list) -> None:
    """Record the random generators after EPOCHS_DONE epochs (random_state.json, one entry per epoch), so a
    resumed run draws the same augmentations and dropout masks as an uninterrupted one."""
    path = out_dir / "random_state.json"
    try:
        states = json.loads(path.read_text())
    except (OSError, ValueError):
        states = {}
    states[str(epochs_done)] = [variable.numpy().tolist() for variable in generators]
    write_text_atomic(path, json.dumps(states))


def _restore_random_state(out_dir: Path, epochs_done: int, generators: list) -> None:
    """Put the random generators where they were after EPOCHS_DONE epochs; runs made before random_state.json
    existed continue with fresh generators (as they always did)."""
    try:
        state = json.loads((out_dir / "random_state.json").read_text())[str(epochs_done)]
    except (OSError, ValueError, KeyError):
        return
    if len(state) == len(generators):
        for variable, value in zip(generators, state, strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))


class _EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping on val_accuracy that remembers the epochs trained before a resume: without this its
    patience would start again from zero after every interruption."""

    def __init__(self, val_accuracy_so_far: list[float], patience: int):
        super().__init__("val_accuracy", patience=patience, mode="max")
        self.so_far = list(val_accuracy_so_far)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.so_far:
            best_epoch = int(np.argmax(self.so_far))
            self.best, self.wait = self.so_far[best_epoch], len(self.so_far) - 1 - best_epoch


def _keep_history_rows(out_dir: Path, epochs: int) -> None:
    """Trim history.csv to its first EPOCHS rows (the epochs the resumed checkpoint holds)."""
    path = out_dir / "history.csv"
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) - 1 > epochs:
        write_text_atomic(path, "".join(lines[: epochs + 1]))


def write_model_card(model_path: Path, recipe: Recipe, val_part: SplitPart) -> dict:
    """Store beside the model how to feed it, its decision threshold (chosen on validation cells) and its patient
    screening rule (chosen on validation patients)."""
    card = {"model": recipe.model, "input_size": recipe.input_size, "resize": recipe.resize,
            "classes": list(config.CLASSES), "positive_class": config.POSITIVE_CLASS}
    card.update(decisions_from_validation(predict_proba(load_model(model_path), val_part, card), val_part))
    write_card(model_path, card)
    return card


def _move_aside_if_stale(out_dir: Path, settings: dict) -> Path | None:
    """Rename a run folder made with other settings to NAME.stale-TIMESTAMP, so a new run starts clean and the old
    one (perhaps hours of GPU time) is kept; return where it went, or None when nothing was stale."""
    try:
        stored = json.loads((out_dir / "settings.json").read_text())
    except (OSError, ValueError):
        return None
    if stored == settings:
        return None
    return move_aside(out_dir)


def _prepare_folder(out_dir: Path, settings: dict, force: bool,
                    resume: str | Path | None) -> tuple[int, Path | None]:
    """Decide between a fresh start, a resume and a finished run; return (first epoch, model to resume)."""
    try:
        stored = json.loads((out_dir / "settings.json").read_text())
    except (OSError, ValueError):
        stored = None
    if stored is not None and stored != settings and not force:
        raise InTheWay(
            f"{out_dir} holds another run ({stored.get('model')}, profile {stored.get('profile')}, seed "
            f"{stored.get('seed')}); pass --force to replace it or choose another --out."
        )
    if stored is None and out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise InTheWay(f"{out_dir} is not empty and holds no training run; choose an empty or new --out folder.")
    if force:
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_partials(out_dir)
        write_text_atomic(out_dir / "settings.json", json.dumps(settings, indent=1))
    except OSError as exc:
        raise MalariaError(f"Cannot write to {out_dir} ({exc.strerror}); choose a writable --out.") from None
    done = len(read_history(out_dir).get("epoch", []))
    if resume is not None:
        return done, Path(resume)
    if (out_dir / "result.json").is_file():
        return settings["recipe"]["epochs"], None  # finished (early stopping counts as finished)
    if done and (out_dir / "last.keras").is_file():
        return done, out_dir / "last.keras"
    if done:  # epochs logged but no checkpoint to continue from: start over cleanly
        (out_dir / "history.csv").unlink()
    return 0, None


def copy_best(result: TrainResult, target: str | Path) -> Path:
    """Copy a run's best model elsewhere (e.g. into the series' models folder)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.best_model, target)
    return target
