"""inventory: counts, patients, sizes and skipped files, as text and JSON."""

from __future__ import annotations

import json

import pytest

from malaria_lib.cli import main
from malaria_lib.errors import MalariaError
from malaria_lib.fetch import fetch
from malaria_lib.inventory import take_inventory
from malaria_lib.patients import is_infected_key, patient_id, read_patient_csv, slide_key


def test_patient_ids_from_file_names():
    assert slide_key("C33P1thinF_IMG_20150619_114756a_cell_179.png") == "C33P1thinF"
    assert patient_id("C33P1thinF_IMG_20150619_114756a_cell_179.png") == "C33"
    assert patient_id("C47P8thinOriginal_IMG_20150622_105253_cell_1.png") == patient_id("C47P8thinF_IMG_x_cell_2.png")
    assert patient_id("C1_thinF_IMG_20150604_104722_cell_9.png") == "C1"
    assert patient_id("no_key.png") is None
    assert is_infected_key("C51AP12thinF") and is_infected_key("C174P135NThinF")
    assert not is_infected_key("C12NThinF") and not is_infected_key("C201ThinF")


def test_patient_csv_in_nih_format(tmp_path):
    good = tmp_path / "p.csv"
    good.write_text("C33P1thinF,['C33P1thinF_IMG_1_cell_1.png', 'C33P1thinF_IMG_1_cell_2.png'],,,\n")
    assert read_patient_csv(good) == {"C33P1thinF_IMG_1_cell_1.png": "C33", "C33P1thinF_IMG_1_cell_2.png": "C33"}
    bad = tmp_path / "bad.csv"
    bad.write_text("C33P1thinF,not a list\n")
    with pytest.raises(MalariaError, match="Line 1"):
        read_patient_csv(bad)


def test_inventory_json(tmp_path, raw_zip, raw_tree, capsys):
    fetch(str(raw_zip), tmp_path / "d", progress=False)
    assert main(["inventory", "--data-dir", str(tmp_path / "d"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    pngs = {c: len(list((raw_tree / "cell_images" / c).glob("*.png"))) for c in ("Parasitized", "Uninfected")}
    assert result["classes"] == pngs
    assert result["patients"] == 12
    assert [s["reason"] for s in result["skipped"]] == ["Windows thumbnail cache"] * 2
    assert 50 <= result["sizes"]["width"]["min"] <= result["sizes"]["width"]["max"] <= 150


def test_inventory_text_and_missing_folder(tmp_path, synthetic_root, capsys):
    assert main(["inventory", "--data-dir", str(synthetic_root)]) == 0
    assert "Parasitized" in capsys.readouterr().out
    assert main(["inventory", "--data-dir", str(tmp_path / "nowhere")]) == 3
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["inventory", "--data-dir", str(tmp_path / "empty")]) == 3
    assert "run `malaria fetch` first" in capsys.readouterr().err


@pytest.mark.real_data
def test_dev_zip_inventory(dev_data, capsys):
    assert main(["inventory", "--data-dir", str(dev_data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["classes"] == {"Parasitized": 4581, "Uninfected": 4127}
    assert result["patients"] == 60
    assert result["patients_per_class"] == {"Parasitized": 45, "Uninfected": 60}
    assert [s["path"].rsplit("/", 1)[-1] for s in result["skipped"]] == ["Thumbs.db", "Thumbs.db"]
    # Patients from file names agree with NIH's own mapping files.
    from malaria_lib.inventory import list_cells

    mapping = {}
    for name in ("patientid_cellmapping_parasitized.csv", "patientid_cellmapping_uninfected.csv"):
        mapping.update(read_patient_csv(dev_data / name))
    cells, _ = list_cells(dev_data)
    assert all(mapping[c.path.name] == c.patient for c in cells)
    assert take_inventory(dev_data).patients == len(set(mapping.values()))
