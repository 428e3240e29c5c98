"""Anyone can rebuild the dev subset: `malaria fetch --subset dev` keeps its 60 patients and checks the result."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import tree_digest
from PIL import Image

from malaria_lib.cli import main
from malaria_lib.errors import MalariaError
from malaria_lib.fetch import fetch
from malaria_lib.inventory import list_cells
from malaria_lib.patients import patient_id
from malaria_lib.subsets import describe_subset, manifest_sha256, read_subset


def _reencoded(path: Path) -> bytes:
    """The same picture, saved again: a valid PNG with other bytes (what a tampered archive would hold)."""
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@pytest.fixture()
def half_subset(tmp_path, synthetic_root) -> tuple[Path, dict]:
    """A subset file naming half of the synthetic patients, made the way subsets/dev.json was made."""
    cells = synthetic_root / "cell_images"
    patients = sorted({patient_id(p.name) for p in cells.rglob("*.png")})[::2]
    copy = tmp_path / "chosen" / "cell_images"
    for label in ("Parasitized", "Uninfected"):
        (copy / label).mkdir(parents=True)
        for path in (cells / label).glob("*.png"):
            if patient_id(path.name) in patients:
                shutil.copyfile(path, copy / label / path.name)
    definition = describe_subset(copy, "half", "every second synthetic patient")
    path = tmp_path / "half.json"
    path.write_text(json.dumps(definition))
    return path, definition


def test_a_subset_keeps_its_patients_and_is_checked(tmp_path, synthetic_root, half_subset):
    path, definition = half_subset
    report = fetch(str(synthetic_root), tmp_path / "d", subset=str(path), progress=False)
    kept = tmp_path / "d" / "cell_images"
    assert report.subset == "half" and sum(report.classes.values()) == definition["cells"]
    assert {patient_id(p.name) for p in kept.rglob("*.png")} == set(definition["patients"])
    assert manifest_sha256(kept) == definition["manifest_sha256"]
    assert fetch(str(synthetic_root), tmp_path / "d", subset=str(path), progress=False).reused
    with pytest.raises(MalariaError, match="already holds cells"):  # the whole source is another data set
        fetch(str(synthetic_root), tmp_path / "d", progress=False)


def test_a_source_whose_subset_differs_from_the_manifest_is_refused(tmp_path, synthetic_root, half_subset):
    path, definition = half_subset
    source = tmp_path / "src"
    shutil.copytree(synthetic_root, source)
    victim = next(p for p in sorted((source / "cell_images" / "Uninfected").glob("*.png"))
                  if patient_id(p.name) in definition["patients"])
    victim.write_bytes(_reencoded(victim))
    before = tree_digest(source)
    assert main(["fetch", "--source", str(source), "--data-dir", str(tmp_path / "d"), "--subset", str(path),
                 "--quiet"]) == 3
    assert not (tmp_path / "d" / "cell_images").exists() and not (tmp_path / "d" / ".cell_images.staging").exists()
    assert tree_digest(source) == before


def test_an_unknown_subset_is_a_usage_error(tmp_path, synthetic_root, capsys):
    assert main(["fetch", "--source", str(synthetic_root), "--data-dir", str(tmp_path / "d"), "--subset",
                 "tiny"]) == 2
    assert "Unknown subset 'tiny'; choose one of: dev" in capsys.readouterr().err


def test_the_dev_subset_ships_with_its_60_patients():
    dev = read_subset("dev")
    assert len(dev["patients"]) == 60 and dev["cells"] == 8_708 and len(dev["manifest_sha256"]) == 64


def test_the_dev_subset_is_rebuilt_exactly_from_an_nih_layout_archive(tmp_path, dev_zip):
    """The dev zip plus cells of patients outside it, zipped like the NIH archive: --subset dev gives back the dev
    zip's 8,708 cells, byte for byte."""
    archive = tmp_path / "cell_images.zip"
    others = 0
    with zipfile.ZipFile(dev_zip) as dev, zipfile.ZipFile(archive, "w") as out:
        for info in dev.infolist():
            data = dev.read(info)
            out.writestr(info.filename, data)
            if info.filename.endswith(".png") and others < 40:  # the same picture under a patient not in the subset
                name = Path(info.filename).name
                other = "C999P60thinF_IMG_" + name.partition("_IMG_")[2] if "P" in name.split("_")[0] else \
                    "C998thinF_IMG_" + name.partition("_IMG_")[2]
                out.writestr(str(Path(info.filename).parent / other), data)
                others += 1
    assert main(["fetch", "--source", str(archive), "--data-dir", str(tmp_path / "d"), "--subset", "dev",
                 "--quiet"]) == 0
    cells, _ = list_cells(tmp_path / "d")
    assert len(cells) == 8_708 and not any(patient_id(str(c.path)) in ("C998", "C999") for c in cells)
    assert manifest_sha256(tmp_path / "d" / "cell_images") == read_subset("dev")["manifest_sha256"]
