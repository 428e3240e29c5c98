"""Tests for the synthetic stand-in data set (malaria_lib.synth)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from malaria_lib.errors import MalariaError
from malaria_lib.synth import make_synthetic_cells

NAME_RE = re.compile(r"^(C(\d+)(P\d+)?[A-Za-z]*ThinF)_IMG_2015\d{4}_\d{6}_cell_\d+\.png$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One default-sized data set shared by the read-only tests (generation is the slow part)."""
    out = tmp_path_factory.mktemp("synth")
    summary = make_synthetic_cells(out, n=200, seed=7, n_patients=12, healthy_fraction=0.25)
    return summary, Path(summary["out"])


def _files(root: Path, cls: str) -> list[Path]:
    return sorted((root / cls).glob("*.png"))


def _purple_fraction(path: Path) -> float:
    """Share of cell pixels that are dark purple (blue clearly above green, fairly dark)."""
    a = np.asarray(Image.open(path)).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    cell = a.sum(-1) > 30
    purple = cell & (b > g + 40) & (r + g + b < 380)
    return purple.sum() / max(cell.sum(), 1)


def test_counts_and_summary(dataset):
    summary, root = dataset
    par, uninf = _files(root, "Parasitized"), _files(root, "Uninfected")
    assert len(par) == 100 and len(uninf) == 100
    assert summary["classes"] == {"Parasitized": 100, "Uninfected": 100}
    assert summary["patients"] == 12 and summary["seed"] == 7
    assert root.name == "cell_images"
    names = [p.name for p in par + uninf]
    assert len(set(names)) == len(names)
    assert all(NAME_RE.match(n) for n in names)


def test_odd_n_splits_half(tmp_path):
    s = make_synthetic_cells(tmp_path, n=11, n_patients=4)
    root = Path(s["out"])
    assert len(_files(root, "Parasitized")) == 5 and len(_files(root, "Uninfected")) == 6


def test_images_decode_rgb_with_black_corners(dataset):
    _, root = dataset
    sizes = set()
    for path in _files(root, "Parasitized") + _files(root, "Uninfected"):
        with Image.open(path) as im:
            assert im.mode == "RGB"
            w, h = im.size
            assert 45 <= w <= 155 and 45 <= h <= 155
            a = np.asarray(im)
        sizes.add((w, h))
        assert a.dtype == np.uint8
        for corner in (a[0, 0], a[0, -1], a[-1, 0], a[-1, -1]):
            assert corner.tolist() == [0, 0, 0]
        centre = a[h // 2 - 3:h // 2 + 3, w // 2 - 3:w // 2 + 3]
        assert centre.mean() > 60  # a cell, not an empty image
    assert len(sizes) > 20  # image size varies


def test_patients(dataset):
    _, root = dataset
    keys = {cls: {NAME_RE.match(p.name).group(1) for p in _files(root, cls)}
            for cls in ("Parasitized", "Uninfected")}
    all_keys = keys["Parasitized"] | keys["Uninfected"]
    assert len(all_keys) == 12  # every patient got at least one cell
    numbers = [re.match(r"C(\d+)", k).group(1) for k in all_keys]
    assert len(set(numbers)) == 12  # C-numbers unique
    healthy = {k for k in all_keys if "P" not in k}
    assert len(healthy) == round(12 * 0.25)
    assert not healthy & keys["Parasitized"]
    infected = all_keys - healthy
    assert infected <= keys["Parasitized"] and infected <= keys["Uninfected"]
    per_patient = [sum(1 for cls in keys for p in _files(root, cls) if p.name.startswith(k + "_")) for k in all_keys]
    assert max(per_patient) >= 2 * min(per_patient)  # spread unevenly


def test_every_patient_gets_a_cell_when_tight(tmp_path):
    s = make_synthetic_cells(tmp_path, n=6, n_patients=6, healthy_fraction=0.5)
    root = Path(s["out"])
    keys = {NAME_RE.match(p.name).group(1) for cls in ("Parasitized", "Uninfected") for p in _files(root, cls)}
    assert len(keys) == 6


def test_deterministic(tmp_path):
    def run(sub: str, seed: int) -> dict[str, bytes]:
        root = Path(make_synthetic_cells(tmp_path / sub, n=30, seed=seed, n_patients=5)["out"])
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}

    a, b, c = run("a", 3), run("b", 3), run("c", 4)
    assert a == b
    assert a != c


def test_parasitized_have_more_purple(dataset):
    _, root = dataset
    par = np.array([_purple_fraction(p) for p in _files(root, "Parasitized")])
    uninf = np.array([_purple_fraction(p) for p in _files(root, "Uninfected")])
    assert par.mean() > 3 * uninf.mean()
    assert (par > 0).mean() > 0.9  # nearly every parasitized cell shows a parasite


def test_not_trivially_separable(dataset):
    """Some uninfected cells carry purple look-alikes, so 'has a purple spot' is not a perfect rule."""
    _, root = dataset

    def has_spot(path: Path) -> bool:
        # Purple relative to the cell's own stain, so slide-to-slide colour shifts do not count.
        a = np.asarray(Image.open(path)).astype(int)
        cell = a.sum(-1) > 150
        excess = (a[..., 2] - a[..., 1]) - np.median((a[..., 2] - a[..., 1])[cell])
        return bool(((excess > 20) & cell).sum() >= 3)

    assert np.mean([has_spot(p) for p in _files(root, "Parasitized")]) > 0.95
    rate = np.mean([has_spot(p) for p in _files(root, "Uninfected")])
    assert 0.08 < rate < 0.5


def test_progress_bar(tmp_path, capsys):
    make_synthetic_cells(tmp_path / "quiet", n=4, n_patients=2)
    assert capsys.readouterr().err == ""
    make_synthetic_cells(tmp_path / "loud", n=4, n_patients=2, progress=True)
    assert "4/4" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, word", [
    ({"n": 1, "n_patients": 2}, "n=1"),
    ({"n": 5, "n_patients": 10}, "n=5"),
    ({"n": 10, "n_patients": 1}, "n_patients"),
    ({"n": 10, "healthy_fraction": 1.0, "n_patients": 2}, "healthy_fraction"),
    ({"n": 10, "healthy_fraction": -0.1, "n_patients": 2}, "healthy_fraction"),
    ({"n": 10, "n_patients": 10, "healthy_fraction": 0.9}, "healthy_fraction"),
])
def test_bad_arguments(tmp_path, kwargs, word):
    with pytest.raises(MalariaError, match=word):
        make_synthetic_cells(tmp_path, **kwargs)
    assert not (tmp_path / "cell_images").exists()  # nothing written before validation


def test_refuses_non_empty_target(tmp_path):
    make_synthetic_cells(tmp_path, n=4, n_patients=2)
    with pytest.raises(MalariaError, match="another folder or delete"):
        make_synthetic_cells(tmp_path, n=4, n_patients=2)


def test_empty_existing_target_is_fine(tmp_path):
    (tmp_path / "cell_images").mkdir()
    assert make_synthetic_cells(tmp_path, n=4, n_patients=2)["classes"]["Uninfected"] == 2


def test_unwritable_target(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(MalariaError, match="writable"):
        make_synthetic_cells(blocker / "sub", n=4, n_patients=2)
