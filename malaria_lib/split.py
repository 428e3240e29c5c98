"""Train / validation / test splits by patient (honest) or by cell (tutorial A's), with a manifest.

A split is a folder: `manifest.csv` (path,label,patient,split), `split.json` (the arguments and
counts) and one tree per split that `keras.utils.image_dataset_from_directory` reads, made of
symlinks to the cells (or copies). Where symlinks cannot be made (Google Drive's mount, some
Windows setups) the split keeps only its manifest, whose paths then point into the data folder
(`link="none"`): the whole Drive copy of a split is two small files instead of 27,558 images.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from . import config
from .errors import InTheWay, MalariaError, UsageError
from .inventory import CellRecord, cell_dir_of, list_cells

SPLITS = ("train", "val", "test")
STRATEGIES = ("patient", "random", "ordered")
LINKS = ("symlink", "copy", "none")  # and "auto": symlinks where the file system allows them, else none
MANIFEST = "manifest.csv"
SETTINGS = "split.json"


class StaleSplit(InTheWay):
    """The output folder holds a split made with other arguments."""


@dataclass
class SplitResult:
    """Where a split lives and how many cells and patients each part got."""

    out: Path
    settings: dict
    counts: dict[str, dict[str, int]]
    patients: dict[str, int]
    reused: bool = False

    def summary(self) -> str:
        lines = [f"{self.settings['strategy']} split in {self.out}" + (" (reused)" if self.reused else "")]
        for part, by_class in self.counts.items():
            n = sum(by_class.values())
            share = by_class.get(config.POSITIVE_CLASS, 0) / n if n else 0.0
            lines.append(
                f"  {part:<5} {n:>6,} images  {self.patients[part]:>3} patients  {share:6.1%} Parasitized"
            )
        return "\n".join(lines)


def _check_arguments(strategy: str, ratios: tuple[float, ...], link: str) -> tuple[float, float, float]:
    if strategy not in STRATEGIES:
        raise UsageError(f"Unknown split strategy '{strategy}'; choose one of: {', '.join(STRATEGIES)}.")
    if link not in LINKS + ("auto",):
        raise UsageError(f"Unknown link mode '{link}'; choose one of: auto, {', '.join(LINKS)}.")
    if len(ratios) not in (2, 3) or any(r < 0 for r in ratios):
        raise UsageError("Give two or three non-negative ratios (train, validation[, test]), e.g. 0.7 0.15 0.15.")
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise UsageError(f"The ratios {' '.join(map(str, ratios))} add up to {sum(ratios):g}, not 1; adjust them.")
    if ratios[0] <= 0:
        raise UsageError("The training ratio must be above 0.")
    full = tuple(float(r) for r in ratios) + (0.0,) * (3 - len(ratios))
    return full  # type: ignore[return-value]


def assign_by_patient(cells: list[CellRecord], ratios: tuple[float, float, float], seed: int,
                       trials: int = 300) -> list[str]:
    """Whole patients (both classes) go to one split, chosen so sizes and class balance match the ratios.

    Why not scikit-learn's StratifiedGroupKFold: with 60 patients its folds are too coarse, and on
    the dev zip it gave a validation split with 36% Parasitized cells against 53% overall. Here
    infected and healthy patients are each shuffled and cut at the ratios by cell count (so every
    split gets both kinds), the seeded shuffle is tried `trials` times, and the cut whose split
    sizes and Parasitized shares are closest to the whole set's wins. Same seed, same split.
    """
    if any(c.patient is None for c in cells):
        n = sum(c.patient is None for c in cells)
        raise MalariaError(
            f"{n} cells carry no patient key in their file name (like C33P1thinF_IMG_...); "
            "the patient split needs one, or use --strategy random."
        )
    patients = sorted({c.patient for c in cells})  # type: ignore[type-var]
    index = {p: i for i, p in enumerate(patients)}
    total = np.zeros(len(patients))
    positive = np.zeros(len(patients))
    for c in cells:
        total[index[c.patient]] += 1
        positive[index[c.patient]] += c.label == config.POSITIVE_CLASS
    wanted = [i for i, r in enumerate(ratios) if r > 0]
    if len(patients) < len(wanted):
        raise MalariaError(f"{len(patients)} patients are too few for {len(wanted)} splits; add data or use fewer splits.")
    kinds = [np.flatnonzero(positive > 0), np.flatnonzero(positive == 0)]
    bounds = np.cumsum(ratios)[:-1]
    share = positive.sum() / total.sum()
    rng = np.random.default_rng(seed)
    best_cost, best = np.inf, None
    for _ in range(trials):
        part = np.empty(len(patients), dtype=int)
        for kind in kinds:
            if len(kind) == 0:
                continue
            order = rng.permutation(kind)
            middle = (np.cumsum(total[order]) - total[order] / 2) / total[order].sum()
            part[order] = np.searchsorted(bounds, middle, side="right")
        sizes = np.array([total[part == s].sum() for s in range(3)])
        if any(sizes[s] == 0 for s in wanted):
            continue
        shares = np.array([positive[part == s].sum() / max(sizes[s], 1) for s in range(3)])
        cost = sum(abs(sizes[s] / total.sum() - ratios[s]) + abs(shares[s] - share) for s in wanted)
        if cost < best_cost:
            best_cost, best = cost, part.copy()
    if best is None:
        raise MalariaError(f"Cannot give every split at least one of the {len(patients)} patients; use fewer splits.")
    return [SPLITS[best[index[c.patient]]] for c in cells]


def _assign_randomly(cells: list[CellRecord], cell_dir: Path, ratios: tuple[float, float, float], seed: int) -> list[str]:
    """Tutorial A's cell-level split, by split-folders itself so that it matches exactly.

    Tutorial A ran `splitfolders.ratio` on the raw NIH folders, whose `Thumbs.db` files took part
    in the shuffle. We rebuild that listing (links to our cells plus empty stand-ins for the
    skipped thumbnails) in a scratch folder, let split-folders split it, and read off its choice.
    """
    import splitfolders
    import splitfolders.split as splitfolders_split

    try:
        fetched = json.loads((cell_dir / config.FETCH_MARKER).read_text())
    except (OSError, ValueError):
        fetched = {}
    with tempfile.TemporaryDirectory(prefix="malaria-split-") as scratch:
        source, target = Path(scratch) / "in", Path(scratch) / "out"
        for label in config.CLASSES:
            (source / label).mkdir(parents=True)
        for cell in cells:
            os.symlink(cell.path.resolve(), source / cell.label / cell.path.name)
        for item in fetched.get("skipped", []):
            parts = PurePosixPath(item["path"]).parts
            if len(parts) >= 2 and parts[-2] in config.CLASSES and not parts[-1].startswith("."):
                (source / parts[-2] / parts[-1]).touch()
        ratio = ratios if ratios[2] > 0 else ratios[:2] + (0.0,)
        quiet = splitfolders_split.use_tqdm
        splitfolders_split.use_tqdm = False  # its bar counts scratch links, which means nothing to a user
        try:
            splitfolders.ratio(str(source), output=str(target), seed=seed, ratio=ratio, move="symlink")
        finally:
            splitfolders_split.use_tqdm = quiet
        where = {}
        for part in SPLITS:
            for label in config.CLASSES:
                folder = target / part / label
                if folder.is_dir():
                    for name in os.listdir(folder):
                        where[(label, name)] = part
    return [where[(c.label, c.path.name)] for c in cells]


def _assign_in_order(cells: list[CellRecord], ratios: tuple[float, float, float]) -> list[str]:
    """Tutorial B's split: Keras 2's `ImageDataGenerator(validation_split=0.2)` took, in each class
    folder, the first 20% of the sorted file names for validation and the rest for training.

    Because NIH file names start with the slide key, sorting groups cells by patient, so this
    split is almost patient-wise by accident: only patients at the cut fall on both sides.
    Here the validation share comes first, then test (if any), then training.
    """
    parts: list[str] = [""] * len(cells)
    for label in config.CLASSES:
        members = sorted((i for i, c in enumerate(cells) if c.label == label), key=lambda i: cells[i].path.name)
        val_end = int(ratios[1] * len(members))
        test_end = val_end + int(ratios[2] * len(members))
        for rank, i in enumerate(members):
            parts[i] = "val" if rank < val_end else "test" if rank < test_end else "train"
    return parts


def make_split(
    data_dir: str | Path,
    out: str | Path,
    strategy: str = "patient",
    ratios: tuple[float, ...] = (0.7, 0.15, 0.15),
    seed: int = config.SEED,
    link: str = "auto",
    force: bool = False,
) -> SplitResult:
    """Split the cells of `data_dir` into `out`; the same arguments again reuse the existing split."""
    full = _check_arguments(strategy, tuple(ratios), link)
    cell_dir = cell_dir_of(data_dir)
    out = Path(out)
    if link == "auto":
        link = "symlink" if symlinks_work(out) else "none"
    settings = {"strategy": strategy, "ratios": list(full), "seed": int(seed), "link": link,
                "data_dir": str(cell_dir.resolve())}
    existing = read_settings(out)
    if existing is not None:
        same = {k: existing.get(k) for k in settings} == settings
        if same and (out / MANIFEST).is_file():
            return _result(out, existing, read_manifest(out), reused=True)
        if not force:
            raise StaleSplit(
                f"{out} already holds a different split ({existing.get('strategy')}, ratios "
                f"{existing.get('ratios')}, seed {existing.get('seed')}); pass --force to replace it or choose another --out."
            )
    elif out.exists() and any(out.iterdir()) and not force:
        raise InTheWay(f"{out} is not empty and holds no split; choose an empty or new --out folder.")

    cells, _ = list_cells(cell_dir)
    if strategy == "patient":
        parts = assign_by_patient(cells, full, seed)
    elif strategy == "ordered":
        parts = _assign_in_order(cells, full)
    else:
        parts = _assign_randomly(cells, cell_dir, full, seed)
    return write_split(cells, parts, out, settings, link)


def write_split(cells: list[CellRecord], parts: list[str], out: str | Path, settings: dict,
                link: str = "symlink") -> SplitResult:
    """Write a split whose assignment is already decided: the tree, manifest.csv and split.json.

    `make_split` decides by strategy; cross-validation (benchmarks/accuracy.py) decides by fold.
    With link="none" no tree is written and the manifest's paths are relative to settings["data_dir"].
    The new split is written beside OUT and swapped in only when whole, so a split replaced with --force
    stays usable until then, and a kill at any moment leaves the old split or the new one.
    """
    out = Path(out)
    staging = out.with_name(f".{out.name}.staging")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        rows = []
        for cell, part in zip(cells, parts, strict=True):
            row = {"path": f"{part}/{cell.label}/{cell.path.name}", "label": cell.label,
                   "patient": cell.patient or "", "split": part}
            if link == "none":
                row["path"] = f"{cell.label}/{cell.path.name}"
            else:
                target = staging / row["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                if link == "symlink":
                    os.symlink(cell.path.resolve(), target)
                else:
                    shutil.copy2(cell.path, target)
            rows.append(row)
        rows.sort(key=lambda r: (SPLITS.index(r["split"]), r["path"]))
        with open(staging / MANIFEST, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "label", "patient", "split"])
            writer.writeheader()
            writer.writerows(rows)
        settings = dict(settings)
        result = _result(out, settings, rows)
        settings.update(counts=result.counts, patients=result.patients)
        (staging / SETTINGS).write_text(json.dumps(settings, indent=1))
        _swap_in(staging, out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise MalariaError(f"Cannot write the split to {out} ({exc.strerror}); choose a writable --out.") from None
    result.settings = settings
    return result


def _swap_in(staging: Path, out: Path) -> None:
    """Put the finished split in STAGING in OUT's place. A folder holding only a split is swapped whole (two
    renames); one that also holds other files (a --force over a folder of the user's) gets the split's own
    entries replaced one by one, its other files left alone."""
    own = set(SPLITS) | {MANIFEST, SETTINGS}
    if not out.exists() or {p.name for p in out.iterdir()} <= own:
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
        return
    for name in (*SPLITS, MANIFEST, SETTINGS):  # split.json last: the split is whole when it is there
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        if (staging / name).exists():
            os.replace(staging / name, out / name)
        else:
            (out / name).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)


def _result(out: Path, settings: dict, rows: list[dict[str, str]], reused: bool = False) -> SplitResult:
    counts = {p: {c: 0 for c in config.CLASSES} for p in SPLITS}
    patients: dict[str, set[str]] = {p: set() for p in SPLITS}
    for row in rows:
        counts[row["split"]][row["label"]] += 1
        if row["patient"]:
            patients[row["split"]].add(row["patient"])
    used = [p for p in SPLITS if sum(counts[p].values())]
    return SplitResult(out, settings, {p: counts[p] for p in used}, {p: len(patients[p]) for p in used}, reused)


def symlinks_work(folder: str | Path) -> bool:
    """Whether symbolic links can be made in FOLDER (or the nearest existing folder above it)."""
    place = Path(folder).absolute()
    while not place.is_dir() and place != place.parent:
        place = place.parent
    try:
        with tempfile.TemporaryDirectory(prefix=".malaria-link-test-", dir=place) as scratch:
            os.symlink(Path(scratch).resolve(), Path(scratch) / "link")
        return True
    except (OSError, NotImplementedError):
        return False


def cell_paths(split_dir: str | Path, rows: list[dict[str, str]]) -> list[Path]:
    """Where the cells of manifest ROWS are: in the split's tree, or in the data folder for a split without one."""
    split_dir = Path(split_dir)
    settings = read_settings(split_dir) or {}
    base = Path(settings["data_dir"]) if settings.get("link") == "none" else split_dir
    for row in rows:  # a manifest is a file anyone can edit: its paths must stay inside the split (or data folder)
        path = PurePosixPath(row["path"])
        if path.is_absolute() or ".." in path.parts or (len(row["path"]) > 1 and row["path"][1] == ":"):
            raise MalariaError(f"{split_dir / MANIFEST} lists '{row['path']}', a path outside the split; "
                               "make the split again (malaria split --force).")
    return [base / row["path"] for row in rows]


def read_settings(out: str | Path) -> dict | None:
    """The arguments a split folder was made with, or None if it holds no split."""
    try:
        return json.loads((Path(out) / SETTINGS).read_text())
    except (OSError, ValueError):
        return None


def read_manifest(split_dir: str | Path) -> list[dict[str, str]]:
    """The rows of a split's manifest.csv; a clear error when the folder holds none."""
    path = Path(split_dir) / MANIFEST
    if not path.is_file():
        raise MalariaError(f"{split_dir} holds no {MANIFEST}; make a split first with `malaria split --out {split_dir}`.")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or set(rows[0]) != {"path", "label", "patient", "split"}:
        raise MalariaError(f"{path} is not a split manifest (path,label,patient,split); make the split again.")
    return rows


def patients_in_several_splits(rows: list[dict[str, str]]) -> dict[str, list[str]]:
    """Patients whose cells sit in more than one split (empty for an honest patient split)."""
    seen: dict[str, set[str]] = {}
    for row in rows:
        if row["patient"]:
            seen.setdefault(row["patient"], set()).add(row["split"])
    return {p: sorted(s) for p, s in seen.items() if len(s) > 1}


def class_balance(rows: list[dict[str, str]]) -> dict[str, float]:
    """Share of Parasitized cells per split, to compare with the whole set's."""
    totals = Counter(r["split"] for r in rows)
    positives = Counter(r["split"] for r in rows if r["label"] == config.POSITIVE_CLASS)
    return {s: positives[s] / totals[s] for s in SPLITS if totals[s]}
