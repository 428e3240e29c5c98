"""split: patient-disjoint and tutorial A's random split, manifests, reuse, refusals."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from malaria_lib.cli import main
from malaria_lib.errors import MalariaError
from malaria_lib.fetch import fetch
from malaria_lib.split import class_balance, make_split, patients_in_several_splits, read_manifest


@pytest.fixture()
def data_dir(tmp_path, raw_zip):
    fetch(str(raw_zip), tmp_path / "d", progress=False)
    return tmp_path / "d"


def test_patient_split_keeps_patients_whole_and_balance_close(tmp_path, data_dir):
    result = make_split(data_dir, tmp_path / "s", "patient", (0.7, 0.15, 0.15), seed=3)
    rows = read_manifest(tmp_path / "s")
    assert patients_in_several_splits(rows) == {}
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    overall = sum(r["label"] == "Parasitized" for r in rows) / len(rows)
    for part, share in class_balance(rows).items():
        assert abs(share - overall) < 0.15, (part, share, overall)
    assert result.counts["train"]["Parasitized"] + result.counts["train"]["Uninfected"] > len(rows) * 0.5
    # Every manifest row is a readable link into the data folder.
    for row in rows[:20]:
        path = tmp_path / "s" / row["path"]
        assert path.is_symlink() and path.resolve().parent.parent == (data_dir / "cell_images").resolve()


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    from malaria_lib.synth import make_synthetic_cells

    data_dir = tmp_path / "many"
    make_synthetic_cells(data_dir, n=300, seed=1, n_patients=40)  # enough patients for seeds to matter
    make_split(data_dir, tmp_path / "a", seed=11)
    make_split(data_dir, tmp_path / "b", seed=11)
    make_split(data_dir, tmp_path / "c", seed=12)
    a, b, c = (read_manifest(tmp_path / x) for x in "abc")
    assert a == b and a != c


def test_random_split_is_tutorial_a_split_exactly(tmp_path, raw_tree, data_dir):
    """Tutorial A called splitfolders.ratio on the raw NIH folders (Thumbs.db included) with seed 1337."""
    import splitfolders

    splitfolders.ratio(str(raw_tree / "cell_images"), output=str(tmp_path / "tutorial"), seed=1337, ratio=(.7, .3, 0))
    theirs = {(p.parent.parent.name, p.parent.name, p.name)
              for p in (tmp_path / "tutorial").rglob("*.png")}
    make_split(data_dir, tmp_path / "ours", "random", (0.7, 0.3, 0), seed=1337)
    ours = {tuple(r["path"].split("/")) for r in read_manifest(tmp_path / "ours")}
    assert ours == theirs
    assert len(patients_in_several_splits(read_manifest(tmp_path / "ours"))) > 0  # the leak we warn about


def test_ordered_split_is_keras_2_validation_split(tmp_path, data_dir):
    """Tutorial B: ImageDataGenerator(validation_split=0.2) put the first 20% of sorted names per class in validation."""
    make_split(data_dir, tmp_path / "o", "ordered", (0.8, 0.2), seed=0)
    rows = read_manifest(tmp_path / "o")
    for label in ("Parasitized", "Uninfected"):
        names = sorted(p.name for p in (data_dir / "cell_images" / label).glob("*.png"))
        cut = int(0.2 * len(names))
        val = sorted(r["path"].rsplit("/", 1)[1] for r in rows if r["label"] == label and r["split"] == "val")
        assert val == names[:cut]
    assert {r["split"] for r in rows} == {"train", "val"}


def test_copy_mode_and_keras_reads_the_tree(tmp_path, data_dir):
    import keras

    make_split(data_dir, tmp_path / "s", link="copy")
    rows = read_manifest(tmp_path / "s")
    assert not any((tmp_path / "s" / r["path"]).is_symlink() for r in rows)
    dataset = keras.utils.image_dataset_from_directory(tmp_path / "s" / "train", image_size=(32, 32), verbose=False)
    assert dataset.class_names == ["Parasitized", "Uninfected"]
    assert sum(int(x.shape[0]) for x, _ in dataset) == sum(r["split"] == "train" for r in rows)


def test_rerun_reuses_and_different_arguments_need_force(tmp_path, data_dir, capsys):
    out = tmp_path / "s"
    assert main(["split", "--data-dir", str(data_dir), "--out", str(out), "--seed", "5"]) == 0
    manifest = (out / "manifest.csv").read_text()
    assert main(["split", "--data-dir", str(data_dir), "--out", str(out), "--seed", "5"]) == 0
    assert "(reused)" in capsys.readouterr().out
    assert (out / "manifest.csv").read_text() == manifest
    assert main(["split", "--data-dir", str(data_dir), "--out", str(out), "--seed", "6"]) == 5
    assert "--force" in capsys.readouterr().err
    assert (out / "manifest.csv").read_text() == manifest
    assert main(["split", "--data-dir", str(data_dir), "--out", str(out), "--seed", "6", "--force"]) == 0
    assert json.loads((out / "split.json").read_text())["seed"] == 6


def test_reuse_is_reported_in_json(tmp_path, data_dir, capsys):
    args = ["split", "--data-dir", str(data_dir), "--out", str(tmp_path / "s"), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert not first["reused"] and second["reused"] and first["counts"] == second["counts"]


@pytest.mark.parametrize("args, message", [
    (["--ratios", "0.5", "0.3", "0.1"], "add up to 0.9"),
    (["--strategy", "shuffle"], "Unknown split strategy 'shuffle'"),
    (["--ratios", "1.0"], "two or three"),
])
def test_bad_split_arguments(tmp_path, data_dir, args, message, capsys):
    assert main(["split", "--data-dir", str(data_dir), "--out", str(tmp_path / "s"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_split_refuses_a_folder_holding_other_things(tmp_path, data_dir):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(MalariaError, match="not empty"):
        make_split(data_dir, tmp_path / "s")
    assert (tmp_path / "s" / "notes.txt").read_text() == "mine"


def test_patient_split_needs_patient_keys(tmp_path, data_dir):
    folder = data_dir / "cell_images" / "Parasitized"
    shutil.copy(next(folder.glob("*.png")), folder / "no_key_at_all.png")
    with pytest.raises(MalariaError, match="no patient key"):
        make_split(data_dir, tmp_path / "s")


def test_unknown_command_line_option_exits_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["inventory", "--bogus"])
    assert stop.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.real_data
def test_dev_zip_patient_split_has_no_patient_in_two_splits(tmp_path, dev_data):
    result = make_split(dev_data, tmp_path / "s", "patient", (0.7, 0.15, 0.15), seed=1337)
    rows = read_manifest(tmp_path / "s")
    assert len(rows) == 8708 and patients_in_several_splits(rows) == {}
    assert sum(result.patients.values()) == 60
    overall = 4581 / 8708
    for share in class_balance(rows).values():
        assert abs(share - overall) < 0.02
    for part, ratio in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        assert abs(sum(result.counts[part].values()) / 8708 - ratio) < 0.02
    with open(tmp_path / "s" / "manifest.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["path", "label", "patient", "split"]


@pytest.mark.parametrize("bad", ["/etc/passwd", "../../outside.png", "train/../../x.png"])
def test_a_manifest_path_that_leaves_the_split_is_refused(tmp_path, data_dir, bad):
    from malaria_lib.pipeline import read_part

    out = tmp_path / "s"
    make_split(data_dir, out, seed=1)
    manifest = out / "manifest.csv"
    lines = manifest.read_text().splitlines()
    first = lines[1].split(",")
    first[0] = bad
    manifest.write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    with pytest.raises(MalariaError, match="a path outside the split"):
        read_part(out, first[3])
