"""fetch: local zips and folders, layouts, and every kind of bad input (message, exit code, source untouched)."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import tree_digest, zip_tree
from PIL import Image

from malaria_lib.cli import main
from malaria_lib.errors import MalariaError
from malaria_lib.fetch import MARKER, fetch


def count_pngs(data_dir: Path) -> dict[str, int]:
    return {c: len(list((data_dir / "cell_images" / c).glob("*.png"))) for c in ("Parasitized", "Uninfected")}


def expected_counts(root: Path) -> dict[str, int]:
    return count_pngs(root)


def test_fetch_from_zip_skips_thumbs_and_keeps_every_cell(tmp_path, raw_tree, raw_zip):
    before = tree_digest(raw_zip)
    report = fetch(str(raw_zip), tmp_path / "data", progress=False)
    assert report.classes == expected_counts(raw_tree)
    assert count_pngs(tmp_path / "data") == expected_counts(raw_tree)
    assert sorted(s["path"] for s in report.skipped) == [
        "cell_images/Parasitized/Thumbs.db", "cell_images/Uninfected/Thumbs.db"]
    assert not list((tmp_path / "data").rglob("Thumbs.db"))
    assert tree_digest(raw_zip) == before
    # Bytes of RGB PNGs are copied unchanged.
    name = next((raw_tree / "cell_images" / "Parasitized").glob("*.png")).name
    assert (tmp_path / "data/cell_images/Parasitized" / name).read_bytes() == (
        raw_tree / "cell_images/Parasitized" / name).read_bytes()


def test_second_fetch_reuses_and_other_source_is_refused(tmp_path, raw_zip, raw_tree):
    fetch(str(raw_zip), tmp_path / "data", progress=False)
    (tmp_path / "data/cell_images/Parasitized/extra_marker.txt").write_text("kept")
    again = fetch(str(raw_zip), tmp_path / "data", progress=False)
    assert again.reused
    assert (tmp_path / "data/cell_images/Parasitized/extra_marker.txt").exists()
    with pytest.raises(MalariaError, match="--force"):
        fetch(str(raw_tree), tmp_path / "data", progress=False)
    replaced = fetch(str(raw_tree), tmp_path / "data", force=True, progress=False)
    assert not replaced.reused and replaced.source == str(raw_tree.resolve())


def test_fetch_from_folder_in_nih_and_kaggle_layouts(tmp_path, raw_tree):
    before = tree_digest(raw_tree)
    report = fetch(str(raw_tree), tmp_path / "a", progress=False)
    assert report.classes == expected_counts(raw_tree)
    assert tree_digest(raw_tree) == before
    # Kaggle: cell_images/ plus a nested duplicate cell_images/cell_images/.
    kaggle = tmp_path / "kaggle"
    shutil.copytree(raw_tree / "cell_images", kaggle / "cell_images")
    shutil.copytree(raw_tree / "cell_images", kaggle / "cell_images" / "cell_images")
    for source in (kaggle, zip_tree(kaggle, tmp_path / "kaggle.zip")):
        report = fetch(str(source), tmp_path / f"k_{Path(source).suffix or 'dir'}", progress=False)
        assert report.classes == expected_counts(raw_tree)
        assert report.nested_duplicates_ignored == sum(expected_counts(raw_tree).values())


def test_fetch_class_folders_at_top_level(tmp_path, raw_tree):
    archive = zip_tree(raw_tree / "cell_images", tmp_path / "flat.zip")
    report = fetch(str(archive), tmp_path / "d", progress=False)
    assert report.classes == expected_counts(raw_tree)


def test_patient_csvs_beside_a_local_zip_are_copied(tmp_path, raw_zip, raw_tree):
    names = [p.name for p in (raw_tree / "cell_images/Parasitized").glob("*.png")][:3]
    (raw_zip.parent / "patientid_cellmapping_parasitized_dev.csv").write_text(f"C1P1ThinF,{names!r},,,\n")
    report = fetch(str(raw_zip), tmp_path / "d", progress=False)
    assert report.patient_csvs == ["patientid_cellmapping_parasitized.csv"]
    assert (tmp_path / "d/patientid_cellmapping_parasitized.csv").is_file()


def _png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_grayscale_rgba_and_16bit_pngs_become_rgb(tmp_path, raw_tree):
    folder = raw_tree / "cell_images" / "Uninfected"
    gray = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    (folder / "C1NThinF_IMG_1_cell_gray.png").write_bytes(_png_bytes(gray))
    rgba = np.zeros((50, 40, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[10:20, 10:20, 3] = 255
    (folder / "C1NThinF_IMG_1_cell_rgba.png").write_bytes(_png_bytes(rgba))
    deep = Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16))
    deep.save(folder / "C1NThinF_IMG_1_cell_16bit.png")
    assert Image.open(folder / "C1NThinF_IMG_1_cell_16bit.png").mode.startswith("I")
    report = fetch(str(raw_tree), tmp_path / "d", progress=False)
    assert report.converted == 3
    for name in ("gray", "rgba", "16bit"):
        with Image.open(tmp_path / f"d/cell_images/Uninfected/C1NThinF_IMG_1_cell_{name}.png") as image:
            assert image.mode == "RGB"
    rgba_out = np.asarray(Image.open(tmp_path / "d/cell_images/Uninfected/C1NThinF_IMG_1_cell_rgba.png"))
    assert rgba_out[0, 0].tolist() == [0, 0, 0] and rgba_out[15, 15].tolist() == [200, 0, 0]
    deep_out = np.asarray(Image.open(tmp_path / "d/cell_images/Uninfected/C1NThinF_IMG_1_cell_16bit.png"))
    assert deep_out.max() > 128  # scaled from 16 bits, not clipped to a black image


def huge_header(good: bytes, side: int = 100_000) -> bytes:
    """A real PNG whose header declares SIDE x SIDE pixels (a decompression bomb's header), CRC fixed."""
    header = good[12:16] + struct.pack(">II", side, side) + good[24:29]
    return good[:12] + header + struct.pack(">I", zlib.crc32(header)) + good[33:]


BAD_FILES = {
    "PNG declaring 100,000 x 100,000 pixels": huge_header,
    "corrupt PNG": lambda good: good[: len(good) // 3],
    "zero-byte file": lambda good: b"",
    "text named .png": lambda good: b"this is not an image, just some text\n",
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_unusable_image_stops_fetch_and_leaves_source(tmp_path, raw_tree, kind, capsys):
    good = next((raw_tree / "cell_images" / "Parasitized").glob("*.png")).read_bytes()
    bad = raw_tree / "cell_images" / "Parasitized" / "C9P9ThinF_IMG_1_cell_bad.png"
    bad.write_bytes(BAD_FILES[kind](good))
    before = tree_digest(raw_tree)
    code = main(["fetch", "--source", str(raw_tree), "--data-dir", str(tmp_path / "d"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 3
    assert "C9P9ThinF_IMG_1_cell_bad.png" in err and "--skip-bad" in err
    assert err.count("\n") == 1
    assert tree_digest(raw_tree) == before
    assert not (tmp_path / "d" / "cell_images").exists()
    # With --skip-bad the rest is fetched and the bad file is reported.
    report = fetch(str(raw_tree), tmp_path / "d", skip_bad=True, progress=False)
    assert any(s["path"].endswith("cell_bad.png") for s in report.skipped)
    assert report.classes["Parasitized"] == len(list((raw_tree / "cell_images/Parasitized").glob("*.png"))) - 1


def _zip_with(tmp_path: Path, raw_tree: Path, extra_name: str) -> Path:
    archive = zip_tree(raw_tree, tmp_path / "evil.zip")
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr(extra_name, b"payload")
    return archive


@pytest.mark.parametrize("entry", ["../escaped.png", "cell_images/../../escaped.png", "/tmp/abs_escaped.png"])
def test_zip_entry_outside_destination_is_refused(tmp_path, raw_tree, entry, capsys):
    archive = _zip_with(tmp_path, raw_tree, entry)
    before = tree_digest(archive)
    code = main(["fetch", "--source", str(archive), "--data-dir", str(tmp_path / "d" / "inner"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 3 and "outside the destination" in err
    assert not (tmp_path / "d" / "escaped.png").exists() and not (tmp_path / "escaped.png").exists()
    assert not Path("/tmp/abs_escaped.png").exists()
    assert not (tmp_path / "d" / "inner" / "cell_images").exists()
    assert tree_digest(archive) == before


def test_truncated_zip(tmp_path, raw_zip, capsys):
    cut = tmp_path / "cut.zip"
    cut.write_bytes(raw_zip.read_bytes()[: raw_zip.stat().st_size // 2])
    assert main(["fetch", "--source", str(cut), "--data-dir", str(tmp_path / "d")]) == 3
    assert "truncated" in capsys.readouterr().err


def test_wrong_checksum_of_local_zip(tmp_path, raw_zip, capsys):
    before = tree_digest(raw_zip)
    code = main(["fetch", "--source", str(raw_zip), "--sha256", "0" * 64, "--data-dir", str(tmp_path / "d"), "--quiet"])
    assert code == 3 and "sha256" in capsys.readouterr().err
    assert tree_digest(raw_zip) == before and not (tmp_path / "d" / "cell_images").exists()


def test_sidecar_checksum_is_checked(tmp_path, raw_zip):
    (raw_zip.parent / (raw_zip.name + ".sha256")).write_text("f" * 64 + "  cells.zip\n")
    with pytest.raises(MalariaError, match="sha256"):
        fetch(str(raw_zip), tmp_path / "d", progress=False)


def test_missing_class_folder(tmp_path, raw_tree):
    shutil.rmtree(raw_tree / "cell_images" / "Uninfected")
    with pytest.raises(MalariaError, match="Uninfected folder .* is missing"):
        fetch(str(raw_tree), tmp_path / "d", progress=False)


def test_empty_class_folder(tmp_path, raw_tree):
    for path in (raw_tree / "cell_images" / "Uninfected").iterdir():
        if path.suffix == ".png":
            path.unlink()
    with pytest.raises(MalariaError, match="Uninfected folder .* is empty"):
        fetch(str(raw_tree), tmp_path / "d", progress=False)


def test_unknown_extra_folder(tmp_path, raw_tree):
    (raw_tree / "cell_images" / "Other").mkdir()
    shutil.copy(next((raw_tree / "cell_images/Parasitized").glob("*.png")), raw_tree / "cell_images/Other/x.png")
    before = tree_digest(raw_tree)
    with pytest.raises(MalariaError, match="unknown folder 'cell_images/Other'"):
        fetch(str(raw_tree), tmp_path / "d", progress=False)
    assert tree_digest(raw_tree) == before


def test_source_that_does_not_exist(tmp_path, capsys):
    assert main(["fetch", "--source", str(tmp_path / "nope.zip"), "--data-dir", str(tmp_path / "d")]) == 3
    assert "does not exist" in capsys.readouterr().err


def test_destination_that_cannot_be_written(tmp_path, raw_zip, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["fetch", "--source", str(raw_zip), "--data-dir", str(blocker / "data")]) == 3
    assert "writable --data-dir" in capsys.readouterr().err


def test_folder_not_made_by_fetch_is_set_aside_not_deleted(tmp_path, raw_tree):
    mine = tmp_path / "d" / "cell_images" / "Parasitized"
    mine.mkdir(parents=True)
    (mine / "precious.png").write_bytes(b"user data")
    with pytest.raises(MalariaError, match="not made by `malaria fetch`"):
        fetch(str(raw_tree), tmp_path / "d", progress=False)
    report = fetch(str(raw_tree), tmp_path / "d", force=True, progress=False)
    kept = list((tmp_path / "d").glob("cell_images.old-*/Parasitized/precious.png"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"user data"
    assert any("moved" in note for note in report.notes)
    assert json.loads((tmp_path / "d/cell_images" / MARKER).read_text())["classes"] == report.classes


@pytest.mark.real_data
def test_dev_zip_fetch_counts(dev_zip, dev_data):
    marker = json.loads((dev_data / "cell_images" / MARKER).read_text())
    assert marker["classes"] == {"Parasitized": 4581, "Uninfected": 4127}
    assert [s["path"] for s in marker["skipped"]] == ["cell_images/Parasitized/Thumbs.db", "cell_images/Uninfected/Thumbs.db"]
    assert sorted(marker["patient_csvs"]) == ["patientid_cellmapping_parasitized.csv", "patientid_cellmapping_uninfected.csv"]


def test_a_second_fetch_into_the_same_folder_is_refused_while_the_first_runs(tmp_path, raw_zip):
    import fcntl

    data_dir = tmp_path / "d"
    data_dir.mkdir()
    with open(data_dir / ".malaria_fetch.lock", "a") as held:  # another process's fetch, as the kernel sees it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(MalariaError, match="Another `malaria fetch` is writing to"):
            fetch(str(raw_zip), data_dir, progress=False)
        assert not (data_dir / "cell_images").exists() and not (data_dir / ".cell_images.staging").exists()
    report = fetch(str(raw_zip), data_dir, progress=False)  # once it is done, the next one runs
    assert sum(report.classes.values()) > 0 and not report.reused


def test_a_zip_member_inflating_beyond_any_cell_is_reported_not_read_whole(tmp_path, raw_tree, capsys):
    from malaria_lib.fetch import MAX_MEMBER_BYTES

    archive = zip_tree(raw_tree, tmp_path / "bomb.zip")
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as z:  # compresses to a few KiB
        z.writestr("cell_images/Parasitized/C9P9ThinF_IMG_1_cell_huge.png", b"\0" * (MAX_MEMBER_BYTES + 1))
    assert main(["fetch", "--source", str(archive), "--data-dir", str(tmp_path / "d"), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "cell_huge.png" in err and "more than any cell image" in err and err.count("\n") == 1
    report = fetch(str(archive), tmp_path / "d", skip_bad=True, progress=False)
    assert any(s["path"].endswith("cell_huge.png") and "bytes" in s["reason"] for s in report.skipped)


def test_linked_folders_in_a_source_are_not_followed(tmp_path, raw_tree):
    outside = tmp_path / "outside"
    shutil.copytree(raw_tree / "cell_images" / "Uninfected", outside / "Uninfected")
    (raw_tree / "cell_images" / "Parasitized" / "elsewhere").symlink_to(outside, target_is_directory=True)
    before = tree_digest(raw_tree)
    report = fetch(str(raw_tree), tmp_path / "d", progress=False)
    assert any(s["path"].endswith("Parasitized/elsewhere") and "not followed" in s["reason"] for s in report.skipped)
    assert report.classes["Parasitized"] == len(list((raw_tree / "cell_images" / "Parasitized").glob("*.png")))
    assert tree_digest(raw_tree) == before
