"""The Colab learner's path in pieces: profile and folders by hardware, Drive without symlinks, pins that agree.

The whole path, a chapter executed from a non-editable install in a folder that is not the
repository under a fake google.colab, is tests/test_colab_standin.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from malaria_lib import runtime
from malaria_lib.colab import settings
from malaria_lib.errors import MalariaError
from malaria_lib.pipeline import read_part
from malaria_lib.runtime import resolve_profile, start_chapter, version_notes
from malaria_lib.split import read_manifest
from malaria_lib.workspace import ensure_data, ensure_run, ensure_split, run_dir, split_dir

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture()
def no_gpu(monkeypatch):
    monkeypatch.setattr(runtime, "gpu_names", lambda: [])


@pytest.fixture()
def one_gpu(monkeypatch):
    monkeypatch.setattr(runtime, "gpu_names", lambda: ["/physical_device:GPU:0"])


@pytest.fixture()
def fake_colab(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))


def test_auto_means_full_on_a_gpu_and_cpu_without_one_and_named_profiles_are_obeyed():
    assert resolve_profile("auto", gpus=1) == "full" and resolve_profile("auto", gpus=0) == "cpu"
    assert resolve_profile(None, gpus=0) == "cpu"
    for name in ("full", "cpu", "smoke"):
        assert resolve_profile(name, gpus=0) == name == resolve_profile(name, gpus=2)
    with pytest.raises(MalariaError, match="Unknown profile 'gpu'"):
        resolve_profile("gpu", gpus=1)


def test_without_a_gpu_a_training_chapter_says_so_and_takes_the_cpu_settings(no_gpu):
    lines: list[str] = []
    chapter = start_chapter("auto", "data", None, trains=True, say=lines.append)
    assert chapter.profile == "cpu" and chapter.work_dir == Path("build/cpu") and chapter.download_dir is None
    assert len(lines) == 1 and "No GPU here" in lines[0] and 'profile = "full"' in lines[0]
    lines.clear()
    insisted = start_chapter("full", "data", None, trains=True, say=lines.append)
    assert insisted.profile == "full" and insisted.work_dir == Path("build/full") and "expect hours" in lines[0]
    lines.clear()
    assert start_chapter("auto", "data", None, trains=False, say=lines.append).profile == "cpu" and lines == []


def test_on_a_gpu_the_full_profile_tells_what_differs_from_a_cpu_run(one_gpu):
    lines: list[str] = []
    chapter = start_chapter("auto", "data", None, trains=True, say=lines.append)
    assert chapter.profile == "full" and chapter.gpus == 1 and chapter.work_dir == Path("build/full")
    assert "float16" in lines[0] and "bit-for-bit" in lines[0]


def test_each_profile_has_its_own_work_dir_unless_one_is_given(no_gpu):
    folders = {name: start_chapter(name, say=None).work_dir for name in ("full", "cpu", "smoke")}
    assert folders == {name: Path("build") / name for name in folders}
    assert start_chapter("smoke", work_dir="elsewhere", say=None).work_dir == Path("elsewhere")


def test_use_drive_keeps_archive_and_work_on_drive_and_the_cells_local(tmp_path, no_gpu, fake_colab):
    mounted: list[str] = []
    lines: list[str] = []
    chapter = start_chapter("smoke", "data", None, use_drive=True, say=lines.append, mount=mounted.append,
                            drive_root=tmp_path / "drive")
    drive = tmp_path / "drive" / "MyDrive" / "malaria"
    assert mounted == [str(tmp_path / "drive")]
    assert chapter.download_dir == drive / "downloads" and chapter.work_dir == drive / "build" / "smoke"
    assert chapter.data_dir == Path("data") and any("Google Drive" in line for line in lines)


def test_use_drive_outside_colab_is_ignored_with_a_word(no_gpu):
    lines: list[str] = []
    chapter = start_chapter("smoke", use_drive=True, say=lines.append)
    assert chapter.download_dir is None and "Colab only" in lines[0]


def test_version_notes_name_what_differs_from_the_tested_versions(monkeypatch):
    found = {"tensorflow": "2.21.0", "keras": "3.15.1"}
    monkeypatch.setattr(runtime.metadata, "version", lambda name: found[name])
    assert version_notes() == []
    found["keras"] = "3.20.0"
    assert len(notes := version_notes()) == 1 and "keras 3.20 is not the tested 3.15" in notes[0]
    found["tensorflow"] = "2.15.1"
    assert any("older than 2.16" in note and "pip install -U tensorflow" in note for note in version_notes())


def _lower_bound(name: str) -> str:
    spec = next(d for d in PYPROJECT["project"]["dependencies"] if re.match(rf"{name}\b", d))
    return re.search(r">=([\d.]+)", spec).group(1)


def test_pins_agree_with_pyproject_and_constraints():
    for name, minimum in runtime.MINIMUM.items():
        assert _lower_bound(name) == minimum, f"runtime.MINIMUM[{name!r}] differs from pyproject.toml"
    pins = dict(re.findall(r"^([\w.-]+)==([\w.]+)$", (ROOT / "constraints.txt").read_text(), re.M))
    for name, tested in runtime.TESTED.items():
        assert pins[name].startswith(tested + "."), f"runtime.TESTED[{name!r}] differs from constraints.txt"
    repository, ref = settings(ROOT)
    assert ref == f"v{PYPROJECT['project']['version']}", "the install line and badges point at this version's tag"
    import malaria_lib

    assert malaria_lib.__version__ == PYPROJECT["project"]["version"]
    readme = (ROOT / "colab" / "README.md").read_text()
    for name in runtime.TESTED:
        assert f"{name} {runtime.MINIMUM[name]}" in readme and f"{name} {pins[name]}" in readme


def test_the_library_does_not_depend_on_the_notebook_runners():
    names = {re.match(r"[\w.-]+", d).group(0).lower() for d in PYPROJECT["project"]["dependencies"]}
    assert not names & {"papermill", "nbconvert", "nbformat", "ipykernel", "jupyter"}
    assert {"papermill", "nbconvert", "ipykernel"} <= {re.match(r"[\w.-]+", d).group(0)
                                                      for d in PYPROJECT["project"]["optional-dependencies"]["run"]}


def test_shipped_reference_results_match_the_benchmarks():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reference.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    from malaria_lib.reference import reference_results

    reference = reference_results()
    stored = json.loads((ROOT / "benchmarks" / "results" / "accuracy.json").read_text())
    rules = json.loads((ROOT / "benchmarks" / "results" / "screening_rules.json").read_text())
    default = rules["rules"][rules["default"]]
    assert reference["patients_out_of_fold"]["rows"] == default["rows"]
    assert reference["patients_out_of_fold"]["summary"] == default["summary"]
    assert reference["screening_rules"]["default"] == rules["default"]
    assert reference["cross_validation"][0]["summary"]["accuracy"] == stored["models"]["malarianet"]["summary"]["accuracy"]


# ---------------------------------------------------------------- Drive: no symlinks, nothing lost


@pytest.fixture()
def drive_without_symlinks(tmp_path, monkeypatch):
    """A folder standing in for Google Drive's mount, where creating a symlink fails as it does there."""
    drive = tmp_path / "drive"
    drive.mkdir()
    real = os.symlink

    def symlink(src, dst, *args, **kwargs):
        if str(Path(dst).absolute()).startswith(str(drive)):
            raise OSError(95, "Operation not supported")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "symlink", symlink)
    return drive


def test_work_on_drive_keeps_splits_and_models_without_symlinks(tmp_path, drive_without_symlinks):
    data_dir, work_dir = tmp_path / "local" / "data", drive_without_symlinks / "build" / "smoke"
    assert "Synthetic cells made" in ensure_data("synthetic", data_dir, seed=3)
    for name in ("patient", "random", "ordered"):
        split = ensure_split(data_dir, work_dir, name, seed=3)
        assert split.settings["link"] == "none"
        assert {p.name for p in split.out.iterdir()} == {"manifest.csv", "split.json"}, "no tree of links on Drive"
        assert ensure_split(data_dir, work_dir, name, seed=3).reused
    part = read_part(split_dir(work_dir, "patient"), "val")
    assert part.paths and all(Path(p).is_file() and Path(p).is_relative_to(data_dir / "cell_images") for p in part.paths)
    run = ensure_run(data_dir, work_dir, "malarianet", "patient", "smoke", seed=3, verbose=0)
    assert run.best_model.is_file() and run.best_model.is_relative_to(drive_without_symlinks)
    assert not [p for p in drive_without_symlinks.rglob("*") if p.is_symlink()]
    assert ensure_run(data_dir, work_dir, "malarianet", "patient", "smoke", seed=3, verbose=0).reused


def test_a_split_with_another_seed_is_moved_aside_not_deleted(tmp_path):
    data_dir, work_dir = tmp_path / "data", tmp_path / "work"
    ensure_data("synthetic", data_dir, seed=3)
    first = read_manifest(ensure_split(data_dir, work_dir, "patient", seed=3).out)
    ensure_split(data_dir, work_dir, "patient", seed=4)
    aside = [p for p in work_dir.iterdir() if p.name.startswith("split_patient.stale-")]
    assert len(aside) == 1 and read_manifest(aside[0]) == first


def test_switching_profile_keeps_the_finished_run(tmp_path, no_gpu, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ensure_data("synthetic", "data", seed=3)
    smoke = start_chapter("smoke", say=None)
    run = ensure_run("data", smoke.work_dir, "malarianet", "patient", "smoke", seed=3, verbose=0)
    model = run.best_model.read_bytes()
    other = start_chapter("cpu", say=None)
    assert other.work_dir != smoke.work_dir
    assert not run_dir(other.work_dir, "malarianet", "patient").exists()
    assert run.best_model.read_bytes() == model
