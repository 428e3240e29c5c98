"""Shared fixtures: synthetic cells (always available) and the real dev zip (when CI provides it)."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from malaria_lib.config import DEV_ZIP_ENV
from malaria_lib.synth import make_synthetic_cells

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic data set in the NIH layout (folder holding cell_images/), never modified by tests."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_cells(root, n=120, seed=7, n_patients=12)
    return root


@pytest.fixture()
def raw_tree(tmp_path, synthetic_root) -> Path:
    """A writable copy of the synthetic cells with NIH's Thumbs.db files added, as in the real archive."""
    root = tmp_path / "raw"
    shutil.copytree(synthetic_root / "cell_images", root / "cell_images")
    for label in ("Parasitized", "Uninfected"):
        (root / "cell_images" / label / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 not an image")
    return root


def zip_tree(root: Path, target: Path, prefix: str = "") -> Path:
    """Zip every file under root, entry names relative to root (optionally under prefix)."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(root).as_posix())
    return target


@pytest.fixture()
def raw_zip(tmp_path, raw_tree) -> Path:
    return zip_tree(raw_tree, tmp_path / "cells.zip")


def tree_digest(root: Path) -> str:
    """One hash over names and bytes of a folder or file, to prove a source was left untouched."""
    digest = hashlib.sha256()
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*"))
    for path in paths:
        digest.update(str(path.relative_to(root.parent)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def dev_zip() -> Path:
    """The real dev subset of the NIH cells; the test is skipped, saying why, when it is not available."""
    value = os.environ.get(DEV_ZIP_ENV)
    if not value or not Path(value).is_file():
        pytest.skip(f"real-data test: set {DEV_ZIP_ENV} to ../shared/data/malaria_cells_dev.zip to run it")
    return Path(value)


@pytest.fixture(scope="session")
def dev_data(dev_zip, tmp_path_factory) -> Path:
    """The dev zip fetched once per session into a data folder."""
    from malaria_lib.fetch import fetch

    data_dir = tmp_path_factory.mktemp("dev_data")
    fetch(str(dev_zip), data_dir, progress=False)
    return data_dir
