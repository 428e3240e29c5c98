"""Where the series keeps its splits and training runs, so every chapter finds what another made.

A chapter that needs a split or a trained model asks for it here: it is made (or trained) the
first time and reused after that, so each notebook can also run on its own.
"""

from __future__ import annotations

from pathlib import Path

from . import config
from .split import SplitResult, make_split
from .train import TrainResult, train

# The series' three splits: tutorial A's, tutorial B's, and the honest one.
SPLITS: dict[str, dict] = {
    "random": {"strategy": "random", "ratios": (0.7, 0.3, 0.0)},  # splitfolders.ratio(seed=1337, ratio=(.7, .3, 0))
    "ordered": {"strategy": "ordered", "ratios": (0.8, 0.2, 0.0)},  # ImageDataGenerator(validation_split=0.2)
    "patient": {"strategy": "patient", "ratios": (0.7, 0.15, 0.15)},  # no patient on two sides
}


def split_dir(work_dir: str | Path, name: str) -> Path:
    return Path(work_dir) / f"split_{name}"


def run_dir(work_dir: str | Path, model: str, split: str) -> Path:
    return Path(work_dir) / "runs" / f"{model}_{split}"


def ensure_split(data_dir: str | Path, work_dir: str | Path, name: str, seed: int = config.SEED) -> SplitResult:
    """The named split of the series, made on first use and reused after."""
    return make_split(data_dir, split_dir(work_dir, name), seed=seed, **SPLITS[name])


def ensure_run(data_dir: str | Path, work_dir: str | Path, model: str, split: str, profile: str,
               seed: int = config.SEED, verbose: int | str = 2) -> TrainResult:
    """A model trained with its recipe on a named split: trained on first use, reused after.

    A run made with other settings (an older recipe, another profile) is replaced, not refused:
    these folders belong to the series.
    """
    ensure_split(data_dir, work_dir, split, seed)
    return train(model, split_dir(work_dir, split), run_dir(work_dir, model, split), profile, seed=seed,
                 replace_stale=True, verbose=verbose)
