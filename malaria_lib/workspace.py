"""Where the series keeps its data, splits and training runs, so every chapter finds what another made.

A chapter that needs the cells, a split or a trained model asks for it here: it is fetched, made
(or trained) the first time and reused after that, so each notebook also runs on its own, as a
learner who opens one chapter from its Colab badge runs it. Nothing is thrown away on the way:
a split or a run made with other settings is moved aside (NAME.stale-TIMESTAMP), not deleted.
"""

from __future__ import annotations

from pathlib import Path

from . import config
from .fetch import fetch
from .files import move_aside
from .split import SplitResult, StaleSplit, make_split
from .synth import make_synthetic_cells
from .train import TrainResult, train

# The series' three splits: tutorial A's, tutorial B's, and the honest one.
SPLITS: dict[str, dict] = {
    "random": {"strategy": "random", "ratios": (0.7, 0.3, 0.0)},  # splitfolders.ratio(seed=1337, ratio=(.7, .3, 0))
    "ordered": {"strategy": "ordered", "ratios": (0.8, 0.2, 0.0)},  # ImageDataGenerator(validation_split=0.2)
    "patient": {"strategy": "patient", "ratios": (0.7, 0.15, 0.15)},  # no patient on two sides
}
SYNTHETIC = {"n": 400, "n_patients": 20}  # the smoke profile's stand-in for the NIH cells


def split_dir(work_dir: str | Path, name: str) -> Path:
    return Path(work_dir) / f"split_{name}"


def run_dir(work_dir: str | Path, model: str, split: str) -> Path:
    return Path(work_dir) / "runs" / f"{model}_{split}"


def ensure_data(source: str | None, data_dir: str | Path, *, seed: int = config.SEED,
                download_dir: str | Path | None = None, progress: bool = True) -> str:
    """The cells in DATA_DIR/cell_images: fetched from SOURCE (or made, for "synthetic") once, reused after.

    Returns one line saying where they came from, for the chapter to print.
    """
    if source == "synthetic":
        if (Path(data_dir) / "cell_images").exists():
            return f"Synthetic cells in {data_dir} (already there)"
        make_synthetic_cells(data_dir, seed=seed, **SYNTHETIC)
        return f"Synthetic cells made in {data_dir}"
    fetched = fetch(source, data_dir, download_dir=download_dir, progress=progress)
    return f"Cells from {fetched.source} in {fetched.cell_dir}" + (" (already there)" if fetched.reused else "")


def ensure_split(data_dir: str | Path, work_dir: str | Path, name: str, seed: int = config.SEED) -> SplitResult:
    """The named split of the series, made on first use and reused after; one made otherwise is moved aside."""
    out = split_dir(work_dir, name)
    try:
        return make_split(data_dir, out, seed=seed, **SPLITS[name])
    except StaleSplit:
        move_aside(out)  # another seed or data folder: keep the old split (runs may refer to it), make the new one
    return make_split(data_dir, out, seed=seed, **SPLITS[name])


def ensure_run(data_dir: str | Path, work_dir: str | Path, model: str, split: str, profile: str,
               seed: int = config.SEED, verbose: int | str = 2, **overrides) -> TrainResult:
    """A model trained with its recipe (and OVERRIDES of it, e.g. weights=None) on a named split: trained on first
    use, reused after.

    A run made with other settings (an older recipe, another seed) is moved aside, never deleted:
    it may hold hours of GPU time. `describe_run` says which happened.
    """
    ensure_split(data_dir, work_dir, split, seed)
    return train(model, split_dir(work_dir, split), run_dir(work_dir, model, split), profile, seed=seed,
                 replace_stale=True, verbose=verbose, **overrides)


def describe_run(result: TrainResult) -> str:
    """One line for the reader: reused or trained, where, how long; and any older run that was moved aside."""
    minutes = result.seconds / 60
    line = (f"Reused the finished run in {result.out_dir} ({minutes:.1f} minutes of training, "
            f"profile {result.settings['profile']})" if result.reused
            else f"Trained in {result.out_dir}: {minutes:.1f} minutes")
    if result.moved_aside is not None:
        line += f"; an older run with other settings was kept in {result.moved_aside}"
    return line
