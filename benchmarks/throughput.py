"""Training throughput on a 2-core CPU: an old Keras 2 style loader, our tf.data pipeline, and the bound.

For each model (tutorial_a, tutorial_b, malarianet), at the input size and batch size of its
`cpu` recipe and compiled with `malaria_lib.train.compile_model`, on the train part of a patient
split (seed 1337), this measures images per second of `model.fit` fed by:

  old_loader          a `keras.utils.PyDataset` in the manner of Keras 2's `flow_from_directory`:
                      every epoch each PNG is opened and decoded with Pillow, resized (nearest),
                      rescaled by 1/255 and augmented per image in NumPy/Pillow; no cache.
  pipeline            `malaria_lib.pipeline.make_dataset(..., training=True, augment=...)`: its first
                      epoch (decode, resize and fill the cache) is timed whole, then a fixed number of
                      steps from the cache.
  bound_no_augment    the same training step on pre-decoded, pre-resized float32 arrays in memory.
  bound_with_augment  the same, with the recipe's augmentation layers applied to the in-memory
                      batches: the pipeline's own work without the I/O (the bound it is judged by).

Each feed trains its own fresh model: a set-up fit (graph tracing; the pipeline's first epoch) in
which the peak resident set size is sampled by a background thread, then --rounds timed fits of
--warmup + --steps steps that take turns between the feeds, so that load from other processes falls
on all of them alike; a feed's speed is the median over its rounds. With --time-to-95 it also
trains malarianet with its cpu recipe and reports the wall-clock seconds until the validation
accuracy first reaches 0.95. Results go to a JSON file (default benchmarks/results/throughput.json)
and a short table is printed at the end.

    python benchmarks/throughput.py --data-dir /tmp/bench_data --source ../shared/data/malaria_cells_dev.zip
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import malaria_lib  # noqa: E402, F401  (first: it sets TensorFlow's CPU options before TensorFlow loads)

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from malaria_lib import config  # noqa: E402
from malaria_lib.augment import build_augmentation  # noqa: E402
from malaria_lib.fetch import MARKER  # noqa: E402
from malaria_lib.models import build_model  # noqa: E402
from malaria_lib.pipeline import SplitPart, load_images, make_dataset, read_part  # noqa: E402
from malaria_lib.recipes import get_recipe  # noqa: E402
from malaria_lib.split import make_split  # noqa: E402
from malaria_lib.train import compile_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Monitor, load_average, machine_facts, peak_rss_bytes, wait_for_idle  # noqa: E402

MODELS = ("tutorial_a", "tutorial_b", "malarianet")
KINDS = ("old_loader", "pipeline", "bound_no_augment", "bound_with_augment")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "throughput.json"
GOAL = 0.90  # the pipeline should reach at least 90% of the bound


# --------------------------------------------------------------------------- measuring


class StepClock(keras.callbacks.Callback):
    """perf_counter at the start of fit and at the end of every training step."""

    def __init__(self):
        super().__init__()
        self.begin = 0.0
        self.ends: list[float] = []

    def on_train_begin(self, logs=None):
        self.begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def speed(ends: list[float], sizes: list[int], first: int, count: int) -> dict:
    """Images/s over steps first..first+count-1 (step ends are perf_counter stamps), and from the median step."""
    if first < 1 or first + count > len(ends):
        raise ValueError(f"timed steps {first}..{first + count - 1} are outside the {len(ends)} steps run")
    stamps = np.asarray(ends[first - 1:first + count])
    images = np.asarray(sizes[first:first + count], dtype=float)
    durations = np.diff(stamps)
    return {"images_per_s": float(images.sum() / (stamps[-1] - stamps[0])),
            "images_per_s_from_median_step": float(np.median(images) / np.median(durations)),
            "median_step_s": float(np.median(durations)), "timed_steps": count, "timed_images": int(images.sum())}


# --------------------------------------------------------------------------- the old-style loader


def _affine(image: Image.Image, matrix: np.ndarray, size: int) -> Image.Image:
    """Apply a 2x2 output-to-input matrix about the image centre (as ImageDataGenerator did), bilinear."""
    centre = np.array([size / 2, size / 2])
    offset = centre - matrix @ centre
    data = (matrix[0, 0], matrix[0, 1], offset[0], matrix[1, 0], matrix[1, 1], offset[1])
    return image.transform((size, size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)


def augment_tutorial_a(image: Image.Image, rng: np.random.Generator, size: int) -> np.ndarray:
    """ImageDataGenerator(shear_range=0.2, zoom_range=0.2, horizontal_flip=True): shear in degrees, zoom per axis."""
    shear = math.radians(rng.uniform(-0.2, 0.2))
    zx, zy = rng.uniform(0.8, 1.2, 2)
    matrix = np.array([[1.0, -math.sin(shear)], [0.0, math.cos(shear)]]) @ np.diag([zx, zy])
    image = _affine(image, matrix, size)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image, dtype=np.float32) * (1 / 255)


def augment_ours(image: Image.Image, rng: np.random.Generator, size: int) -> np.ndarray:
    """malaria_lib's `our_augmentation` done per image: flips, any rotation, zoom 0.9-1.1, colour jitter."""
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    angle, zoom = rng.uniform(-math.pi, math.pi), rng.uniform(0.9, 1.1)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    image = _affine(image, zoom * rotation, size)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    x = np.asarray(image, dtype=np.float32) * (1 / 255)
    x = x + rng.uniform(-0.1, 0.1)  # brightness
    mean = x.mean(axis=(0, 1), keepdims=True)
    x = (x - mean) * rng.uniform(0.9, 1.1) + mean  # contrast
    hsv = rgb_to_hsv(np.clip(x, 0.0, 1.0))
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-0.05, 0.05)) % 1.0  # hue
    f = rng.uniform(0.4, 0.6)
    hsv[..., 1] = np.clip(hsv[..., 1] * (f / (1 - f)), 0.0, 1.0)  # saturation
    return hsv_to_rgb(hsv).astype(np.float32)


OLD_AUGMENT = {None: None, "tutorial_a": augment_tutorial_a, "ours": augment_ours}


class OldStyleLoader(keras.utils.PyDataset):
    """flow_from_directory's work, every epoch: open, decode, resize (nearest), rescale, augment; no cache.

    With workers=1 Keras runs it in one background thread (tf.data.from_generator + prefetch), as
    Keras 2's fit_generator did with its default single worker. `length` lets a short data set
    serve more steps than one epoch (batches wrap around).
    """

    def __init__(self, part: SplitPart, size: int, batch_size: int, augment: str | None, seed: int,
                 length: int | None = None, workers: int = 1):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=10)
        self.part, self.size, self.batch_size, self.seed = part, size, batch_size, seed
        self.augment = OLD_AUGMENT[augment]
        self.n_batches = math.ceil(len(part) / batch_size)
        self.length = max(length or 0, self.n_batches)
        self.epoch = 0
        self.order = np.random.default_rng((seed, 0)).permutation(len(part))

    def __len__(self) -> int:
        return self.length

    def batch_len(self, index: int) -> int:
        j = index % self.n_batches
        return min(self.batch_size, len(self.part) - j * self.batch_size)

    def __getitem__(self, index: int):
        j = index % self.n_batches
        chosen = self.order[j * self.batch_size:(j + 1) * self.batch_size]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        x = np.empty((len(chosen), self.size, self.size, 3), np.float32)
        for k, i in enumerate(chosen):
            with Image.open(self.part.paths[i]) as opened:
                image = opened.convert("RGB") if opened.mode != "RGB" else opened.copy()
            image = image.resize((self.size, self.size), Image.Resampling.NEAREST)
            if self.augment is None:
                x[k] = np.asarray(image, dtype=np.float32) * (1 / 255)
            else:
                x[k] = self.augment(image, rng, self.size)
        y = np.eye(len(config.CLASSES), dtype=np.float32)[self.part.labels[chosen]]
        return x, y

    def on_epoch_end(self):
        self.epoch += 1
        self.order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.part))


# --------------------------------------------------------------------------- the measurements


def seed_everything(seed: int, deterministic: bool) -> None:
    """keras.utils.set_random_seed, plus op determinism when asked (malaria_lib.train does so on a CPU)."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def subsample(part: SplitPart, limit: int | None, seed: int) -> SplitPart:
    """At most `limit` cells, a seeded sample in the split's order."""
    if limit is None or len(part) <= limit:
        return part
    keep = np.sort(np.random.default_rng(seed).choice(len(part), size=limit, replace=False))
    return SplitPart([part.paths[i] for i in keep], part.labels[keep], [part.patients[i] for i in keep])


def batch_sizes(n_images: int, batch_size: int, steps: int) -> list[int]:
    """Sizes of `steps` batches of a data set of n_images that is batched per epoch and repeated."""
    per_epoch = [batch_size] * (n_images // batch_size) + ([n_images % batch_size] if n_images % batch_size else [])
    return [per_epoch[i % len(per_epoch)] for i in range(steps)]


def fit_steps(model: keras.Model, data, steps: int) -> StepClock:
    """One `fit` of `steps` training steps, timed step by step."""
    clock = StepClock()
    model.fit(data, epochs=1, steps_per_epoch=steps, callbacks=[clock], verbose=0, shuffle=False)
    return clock


def build_feed(kind: str, recipe, part: SplitPart, args, per_fit: int) -> tuple:
    """The data for one kind of feed, the sizes of the batches a fit of n steps gets from it, and notes."""
    if kind == "old_loader":
        loader = OldStyleLoader(part, recipe.input_size, recipe.batch_size, recipe.augment, args.seed,
                                length=max(per_fit, args.warmup), workers=args.loader_workers)
        return loader, lambda n: [loader.batch_len(i) for i in range(n)], {"loader_workers": args.loader_workers}
    if kind == "pipeline":
        augment = build_augmentation(recipe.augment, args.seed)
        data = make_dataset(part, recipe.input_size, recipe.batch_size, training=True, augment=augment,
                            resize=recipe.resize, seed=args.seed).repeat()  # every fit starts at an epoch's start
        return data, lambda n: batch_sizes(len(part), recipe.batch_size, n), {}
    # the bound: arrays already decoded and resized in memory; how many distinct cells matters not without I/O
    count = min(len(part), max(recipe.batch_size, per_fit * recipe.batch_size))
    x = load_images(part.paths[:count], recipe.input_size, recipe.resize).astype(np.float32) / 255.0
    y = np.eye(len(config.CLASSES), dtype=np.float32)[part.labels[:count]]
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(recipe.batch_size)
    layers = build_augmentation(recipe.augment, args.seed) if kind == "bound_with_augment" else None
    if layers is not None:
        data = data.map(lambda a, b: (tf.clip_by_value(layers(a, training=True), 0.0, 1.0), b),
                        num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE), lambda n: [recipe.batch_size] * n, {"distinct_images": count}


def measure_model(name: str, recipe, part: SplitPart, steps_per_epoch: int, args, say) -> dict:
    """Every feed of one model: set each up (memory, the pipeline's first epoch), then timed rounds, interleaved.

    Each feed trains its own freshly built model. The rounds take turns between the feeds (in a
    rotating order), so that load from other processes, if any, falls on all of them alike; a feed's
    speed is the median over its rounds.
    """
    kinds = [k for k in KINDS if not (k == "bound_with_augment" and recipe.augment is None)]
    per_fit = args.warmup + args.steps
    n_batches = math.ceil(len(part) / recipe.batch_size)
    feeds: dict[str, dict] = {}
    entry: dict = {}
    for kind in kinds:
        say(f"{name}: setting up {kind}" + (" (its first epoch fills the cache)" if kind == "pipeline" else ""))
        seed_everything(args.seed, args.deterministic)
        with Monitor() as monitor:
            data, sizes, notes = build_feed(kind, recipe, part, args, per_fit)
            model = compile_model(build_model(name, recipe.input_size, recipe.standardize), recipe, steps_per_epoch)
            lead = n_batches * (2 if args.full_epoch else 1) if kind == "pipeline" else args.warmup
            clock = fit_steps(model, data, lead)  # traces the graph; fills the pipeline's cache
        entry[kind] = {**monitor.report(), "setup_seconds": monitor.wall, **notes}
        if kind == "pipeline":
            first = clock.ends[n_batches - 1] - clock.begin
            entry[kind].update(first_epoch_seconds=first, first_epoch_images=len(part),
                               first_epoch_images_per_s=len(part) / first,
                               steady_epoch_seconds_measured=(clock.ends[2 * n_batches - 1] - clock.ends[n_batches - 1]
                                                              if args.full_epoch else None))
        feeds[kind] = {"model": model, "data": data, "sizes": sizes, "rounds": []}
    for r in range(args.rounds):
        for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            feed = feeds[kind]
            with Monitor() as monitor:
                clock = fit_steps(feed["model"], feed["data"], per_fit)
            feed["rounds"].append({**speed(clock.ends, feed["sizes"](per_fit), args.warmup, args.steps),
                                   "others_cpu_share": monitor.others_cpu_share})
        say(f"{name}: round {r + 1}: " + ", ".join(f"{k} {feeds[k]['rounds'][-1]['images_per_s']:.1f}" for k in kinds)
            + " img/s")
    for kind in kinds:
        rounds = feeds[kind]["rounds"]
        shares = [x["others_cpu_share"] for x in rounds if x["others_cpu_share"] is not None]
        entry[kind].update(
            images_per_s=float(statistics.median(x["images_per_s"] for x in rounds)),
            images_per_s_best=max(x["images_per_s"] for x in rounds),
            round_images_per_s=[x["images_per_s"] for x in rounds],
            round_others_cpu_share=[x["others_cpu_share"] for x in rounds],
            median_step_s=float(statistics.median(x["median_step_s"] for x in rounds)),
            images_per_s_from_median_step=float(statistics.median(x["images_per_s_from_median_step"] for x in rounds)),
            rounds=len(rounds), timed_steps=args.steps, warmup_steps=args.warmup,
            others_cpu_share_during_rounds=float(np.mean(shares)) if shares else None)
    if recipe.augment is None:
        entry["bound_with_augment"] = {**entry["bound_no_augment"], "same_as": "bound_no_augment",
                                       "note": "the recipe has no augmentation"}
    del feeds, model, data
    keras.backend.clear_session()
    gc.collect()
    return entry


class EpochLog(keras.callbacks.Callback):
    """Wall-clock seconds since `start` and the metrics at every epoch end; stops once the target is met."""

    def __init__(self, start: float, target: float, stop: bool):
        super().__init__()
        self.start, self.target, self.stop = start, target, stop
        self.epochs: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epochs.append({"epoch": epoch + 1, "seconds": time.perf_counter() - self.start,
                            **{k: float(logs[k]) for k in ("accuracy", "val_accuracy", "loss", "val_loss") if k in logs}})
        if self.stop and logs.get("val_accuracy", 0.0) >= self.target:
            self.model.stop_training = True


def time_to_target(split_dir: Path, args) -> dict:
    """Train malarianet with its cpu recipe as malaria_lib.train does (without checkpoint files) until val_accuracy >= target."""
    overrides = {"epochs": args.t95_epochs} if args.t95_epochs else {}
    recipe = get_recipe("malarianet", "cpu", **overrides)
    train_part, val_part = read_part(split_dir, "train"), read_part(split_dir, "val")
    steps = math.ceil(len(train_part) / recipe.batch_size)
    seed_everything(args.seed, args.deterministic)
    with Monitor() as monitor:
        start = time.perf_counter()
        augment = build_augmentation(recipe.augment, args.seed)
        train_data = make_dataset(train_part, recipe.input_size, recipe.batch_size, training=True, augment=augment,
                                  resize=recipe.resize, seed=args.seed)
        val_data = make_dataset(val_part, recipe.input_size, recipe.batch_size, resize=recipe.resize)
        model = compile_model(build_model("malarianet", recipe.input_size, recipe.standardize), recipe, steps)
        log = EpochLog(start, args.t95_target, stop=not args.t95_full)
        model.fit(train_data, validation_data=val_data, epochs=recipe.epochs, callbacks=[log], verbose=0, shuffle=False)
    reached = next((e for e in log.epochs if e.get("val_accuracy", 0.0) >= args.t95_target), None)
    result = {"model": "malarianet", "profile": "cpu", "target_val_accuracy": args.t95_target,
              "recipe_epochs": recipe.epochs, "train_images": len(train_part), "val_images": len(val_part),
              "reached": reached is not None, "seconds": reached["seconds"] if reached else None,
              "epoch": reached["epoch"] if reached else None,
              "best_val_accuracy": max((e.get("val_accuracy", 0.0) for e in log.epochs), default=None),
              "stopped_at_target": not args.t95_full, "epochs": log.epochs, **monitor.report()}
    del model, train_data, val_data
    keras.backend.clear_session()
    gc.collect()
    return result


# --------------------------------------------------------------------------- the run


def prepare_data(args, say) -> tuple[Path, dict]:
    """Fetch the source into --data-dir when asked, make the patient split, describe the data."""
    data_dir = Path(args.data_dir)
    if args.source:
        from malaria_lib.fetch import fetch

        say(f"fetching {args.source} into {data_dir}")
        fetch(args.source, data_dir, progress=False)
    split_dir = Path(args.split_dir)
    result = make_split(data_dir, split_dir, "patient", (0.7, 0.15, 0.15), seed=args.split_seed)
    cell_dir = data_dir / "cell_images" if (data_dir / "cell_images").is_dir() else data_dir
    try:
        marker = json.loads((cell_dir / MARKER).read_text())
    except (OSError, ValueError):
        marker = {}
    description = {"data_dir": str(data_dir.resolve()), "source": args.source or marker.get("source"),
                   "source_sha256": marker.get("sha256"), "images": sum(sum(c.values()) for c in result.counts.values()),
                   "split": {"strategy": "patient", "ratios": [0.7, 0.15, 0.15], "seed": args.split_seed,
                             "counts": result.counts, "patients": result.patients}}
    return split_dir, description


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(config.default_data_dir()),
                        help="folder holding cell_images/, filled from --source when given (default: $MALARIA_DATA_DIR or data)")
    parser.add_argument("--source", help="zip, URL or folder to `malaria fetch` into --data-dir first")
    parser.add_argument("--split-dir", help="where to make the patient split (default: a temporary folder)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON file to write (default: benchmarks/results/throughput.json)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="default: all three")
    parser.add_argument("--max-images", type=int, help="use at most this many train images (default: all)")
    parser.add_argument("--steps", type=int, default=15, help="timed training steps per round (default: 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them in every round (default: 3)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed rounds per feed, taking turns between feeds; the speed is their median (default: 5)")
    parser.add_argument("--full-epoch", action="store_true",
                        help="time a whole cached epoch of the pipeline after the first (slower)")
    parser.add_argument("--loader-workers", type=int, default=1,
                        help="threads of the old loader (default 1, as Keras 2's fit_generator)")
    parser.add_argument("--no-determinism", dest="deterministic", action="store_false",
                        help="skip tf op determinism (malaria_lib.train enables it on a CPU, so it is on by default)")
    parser.add_argument("--time-to-95", action="store_true", help="also train malarianet (cpu recipe) to 95%% val accuracy")
    parser.add_argument("--t95-target", type=float, default=0.95, help=argparse.SUPPRESS)
    parser.add_argument("--t95-epochs", type=int, help="override the recipe's epochs for --time-to-95 (tests)")
    parser.add_argument("--t95-full", action="store_true", help="run all epochs instead of stopping at the target")
    parser.add_argument("--max-load", type=float, default=1.0, help="1-minute load average regarded as idle (default: 1.0)")
    parser.add_argument("--wait-for-idle", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for the load to drop below --max-load before measuring")
    parser.add_argument("--seed", type=int, default=config.SEED)
    parser.add_argument("--split-seed", type=int, default=1337)
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    args = parser.parse_args(argv)
    for name in ("steps", "rounds", "loader_workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 1:
        parser.error("--warmup must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # e.g. the retracing warning: every measurement builds a fresh model
    say = (lambda message: None) if args.quiet else (lambda message: print(f"[throughput] {message}", file=sys.stderr,
                                                                             flush=True))
    started = time.perf_counter()
    idle = wait_for_idle(args.max_load, args.wait_for_idle, say)
    scratch = None
    if args.split_dir is None:
        scratch = tempfile.mkdtemp(prefix="throughput-split-")
        args.split_dir = str(Path(scratch) / "split")
    try:
        results = run(args, idle, say, started)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(format_table(results))
    say(f"wrote {out}")
    return results


def run(args: argparse.Namespace, idle: dict, say, started: float) -> dict:
    load_before = load_average()
    split_dir, data = prepare_data(args, say)
    full_train = read_part(split_dir, "train")
    part = subsample(full_train, args.max_images, args.seed)
    data.update(train_images_in_split=len(full_train), train_images_used=len(part))
    say(f"{len(part)} train images ({len(full_train)} in the split); load average {load_before}")
    results: dict = {
        "benchmark": "throughput",
        "settings": {k: v for k, v in vars(args).items() if k not in ("quiet",)},
        "machine": machine_facts(),
        "load": {"before": load_before, "wait": idle},
        "data": data,
        "models": {},
    }
    for name in args.models:
        recipe = get_recipe(name, "cpu")
        steps_per_epoch = math.ceil(len(full_train) / recipe.batch_size)
        entry: dict = {"recipe": recipe.to_dict(), "input_size": recipe.input_size, "batch_size": recipe.batch_size,
                       "augment": recipe.augment, "resize": recipe.resize, "cpu_profile_epochs": recipe.epochs,
                       "load_at_start": load_average()}
        entry.update(measure_model(name, recipe, part, steps_per_epoch, args, say))
        entry.update(summarise(entry, len(full_train), len(part), recipe.epochs))
        say(f"{name}: " + ", ".join(f"{k} {entry[k]['images_per_s']:.1f} img/s" for k in KINDS))
        results["models"][name] = entry
    if args.time_to_95:
        say(f"time to {args.t95_target:.0%}: training malarianet with the cpu recipe")
        results["time_to_95"] = time_to_target(split_dir, args)
    else:
        results["time_to_95"] = None
    results["load"]["after"] = load_average()
    results["peak_rss_mb_process"] = peak_rss_bytes() / 2**20
    results["total_seconds"] = time.perf_counter() - started
    return results


def summarise(entry: dict, n_full: int, n_used: int, epochs: int) -> dict:
    """Ratios, the goal check and epoch times for one model."""
    rate = {k: entry[k]["images_per_s"] for k in KINDS}
    pipeline = entry["pipeline"]
    first_full = pipeline["first_epoch_seconds"] * n_full / n_used  # decoding scales with the number of images
    steady = n_full / rate["pipeline"]
    return {
        "ratios": {"pipeline_over_bound": rate["pipeline"] / rate["bound_with_augment"],
                   "pipeline_over_bound_no_augment": rate["pipeline"] / rate["bound_no_augment"],
                   "pipeline_over_old_loader": rate["pipeline"] / rate["old_loader"],
                   "augment_cost": 1 - rate["bound_with_augment"] / rate["bound_no_augment"]},
        "within_10pct_of_bound": rate["pipeline"] >= GOAL * rate["bound_with_augment"],
        "epoch_seconds": {
            "train_images": n_full,
            "estimated": {k: n_full / rate[k] for k in KINDS},
            "pipeline_first_epoch_measured": pipeline["first_epoch_seconds"],
            "pipeline_first_epoch_images": n_used,
            "pipeline_steady_epoch_measured": pipeline["steady_epoch_seconds_measured"],
            "cpu_profile_training_estimate": {  # training steps only: no validation, no checkpoints
                "pipeline": first_full + (epochs - 1) * steady,
                "old_loader": epochs * n_full / rate["old_loader"],
            },
        },
    }


def others_share(model_entry: dict) -> str:
    """The mean share of the machine's CPU other processes used during a model's timed rounds."""
    shares = [model_entry[k]["others_cpu_share_during_rounds"] for k in KINDS]
    shares = [x for x in shares if x is not None]
    return f"{np.mean(shares):.0%}" if shares else "n/a"


def format_table(results: dict) -> str:
    rows = [("model", "old img/s", "pipe img/s", "1st ep img/s", "bound", "bound+aug", "b/c", "b/a",
             "epoch s old/pipe/1st", "peak RSS MB a/b/c+aug", "others' CPU")]
    for name, m in results["models"].items():
        e = m["epoch_seconds"]
        rows.append((
            name, f"{m['old_loader']['images_per_s']:.1f}", f"{m['pipeline']['images_per_s']:.1f}",
            f"{m['pipeline']['first_epoch_images_per_s']:.1f}", f"{m['bound_no_augment']['images_per_s']:.1f}",
            f"{m['bound_with_augment']['images_per_s']:.1f}",
            f"{m['ratios']['pipeline_over_bound']:.2f}" + ("" if m["within_10pct_of_bound"] else "*"),
            f"{m['ratios']['pipeline_over_old_loader']:.2f}x",
            f"{e['estimated']['old_loader']:.0f}/{e['estimated']['pipeline']:.0f}/{e['pipeline_first_epoch_measured']:.0f}",
            f"{m['old_loader']['peak_rss_mb']:.0f}/{m['pipeline']['peak_rss_mb']:.0f}/"
            f"{m['bound_with_augment']['peak_rss_mb']:.0f}",
            others_share(m),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    data, machine = results["data"], results["machine"]
    lines.append(f"b/c = pipeline / in-memory bound with the same augmentation (* = below {GOAL:.0%}); "
                 f"b/a = speed-up over the old loader; epoch s for {data['train_images_in_split']} train images.")
    t95 = results.get("time_to_95")
    if t95:
        lines.append(f"time to {t95['target_val_accuracy']:.0%} val accuracy (malarianet, cpu): "
                     + (f"{t95['seconds']:.0f} s at epoch {t95['epoch']}" if t95["reached"]
                        else f"not reached in {len(t95['epochs'])} epochs (best {t95['best_val_accuracy']:.3f})"))
    lines.append(f"{machine['cpu_count']} CPUs, TF {machine['tensorflow']}, load {results['load']['before']} -> "
                 f"{results['load']['after']}; total {results['total_seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
