"""The notebook series as stored: clean, parametrised, with badges and a Colab setup cell that works.

Also the series runner on a tiny fake series: a failing chapter stops the run with its name and
cell; a working one yields report.json and an HTML index.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import yaml

from malaria_lib.cli import main
from malaria_lib.colab import badge_row, install_target, settings, sync_badges
from malaria_lib.errors import MalariaError
from malaria_lib.series import all_notebooks, notebook_paths, run_series

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = all_notebooks(ROOT)
CHAPTERS = notebook_paths(ROOT)
SHARED_PARAMETERS = {"profile", "source", "data_dir", "work_dir", "seed"}


def _id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _setup_source(path: Path) -> str:
    return next(c.source for c in _read(path).cells if c.cell_type == "code")


def test_the_series_and_its_launcher_exist():
    assert [p.name for p in CHAPTERS[:2]] == ["01_data.ipynb", "02_splitting.ipynb"]
    assert ROOT / "colab" / "run_all.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_stored_clean_and_valid(path):
    nb = _read(path)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"cells {dirty} keep outputs or execution counts; run `malaria badges` to clean them"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_layout_title_setup_parameters(path):
    cells = _read(path).cells
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged `parameters`"
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    assert cells[1].cell_type == "code" and 'if "google.colab" in sys.modules:' in cells[1].source
    assert len(cells[1].source.splitlines()) <= 8, "the setup cell stays a few lines; the rest lives in malaria_lib"
    assert tagged == [2]


@pytest.mark.parametrize("path", CHAPTERS, ids=_id)
def test_chapter_parameters_are_the_shared_ones_with_real_defaults(path):
    from papermill.translators import PythonTranslator

    cell = next(c for c in _read(path).cells if "parameters" in c.metadata.get("tags", []))
    found = {p.name: p.default for p in PythonTranslator.inspect(cell)}
    assert SHARED_PARAMETERS | {"use_drive"} <= set(found), f"missing {SHARED_PARAMETERS - set(found)}"
    assert found["profile"] == '"auto"' and found["source"] == "None" and found["work_dir"] == "None"
    assert found["use_drive"] == "False"


@pytest.mark.parametrize("path", CHAPTERS, ids=_id)
def test_chapters_settle_profile_and_folders_then_fetch_what_they_need(path):
    code = [c.source for c in _read(path).cells if c.cell_type == "code"]
    start = code[2]
    assert "chapter = start_chapter(profile, data_dir, work_dir, use_drive=use_drive" in start
    assert "profile, data_dir, work_dir = chapter.profile, chapter.data_dir, chapter.work_dir" in start
    if path.name != "01_data.ipynb":  # chapter 1 teaches the fetch in its own cell
        assert "ensure_data(source, data_dir" in start and "download_dir=chapter.download_dir" in start
    assert not any("find_root" in source for source in code), "nothing a chapter reads may live only in a clone"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_training_chapters_ask_colab_for_a_gpu(path):
    nb = _read(path)
    trains = any("ensure_run(" in c.source for c in nb.cells) or path.parent.name == "colab"
    assert (nb.metadata.get("accelerator") == "GPU") == trains
    if trains:
        assert nb.metadata["colab"]["gpuType"] == "T4"
        assert "trains=True" in "".join(c.source for c in nb.cells if c.cell_type == "code")


def test_profiles_share_the_parameter_names():
    for profile in ("full", "cpu", "smoke"):
        params = yaml.safe_load((ROOT / "configs" / f"{profile}.yaml").read_text())
        assert set(params) == SHARED_PARAMETERS and params["profile"] == profile and params["seed"] == 1337
    assert yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())["source"] == "synthetic"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_badges_point_at_the_notebook_itself(path):
    repository, ref = settings(ROOT)
    first = _read(path).cells[0].source
    assert badge_row(repository, ref, _id(path)) in first
    owner_name = repository.removeprefix("https://github.com/")
    assert f"https://colab.research.google.com/github/{owner_name}/blob/{ref}/{_id(path)}" in first


def _run_setup(path: Path, monkeypatch, *, colab: bool) -> list[list[str]]:
    """Execute the setup cell as Colab would (a fake google.colab) or as elsewhere; capture what it runs."""
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, *a, **k: calls.append(list(cmd)))
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(_setup_source(path), str(path), "exec"), {})
    return calls


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_setup_cell_installs_the_tagged_release_on_colab(path, monkeypatch):
    target = install_target(*settings(ROOT))
    assert "@v" in target, "the setup cell installs a release tag, not a branch"
    wanted = f"malaria_lib[run] @ {target}" if path.parent.name == "colab" else target  # the launcher runs papermill
    assert _run_setup(path, monkeypatch, colab=True) == [[sys.executable, "-m", "pip", "install", "-q", wanted]]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_setup_cell_does_nothing_outside_colab(path, monkeypatch, capsys):
    assert _run_setup(path, monkeypatch, colab=False) == []
    assert capsys.readouterr().out == ""


def test_badges_check_passes(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["badges", "--check"]) == 0, capsys.readouterr().err


def test_badges_notice_a_changed_reference_and_fix_it(tmp_path):
    (tmp_path / "notebooks").mkdir()
    shutil.copy(CHAPTERS[0], tmp_path / "notebooks" / CHAPTERS[0].name)
    text = (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(re.sub(r'^ref = .*$', 'ref = "v1.0"', text, flags=re.M))
    notebook = tmp_path / "notebooks" / CHAPTERS[0].name
    assert sync_badges(tmp_path, [notebook], check=True) == [notebook]
    assert sync_badges(tmp_path, [notebook]) == [notebook]
    assert sync_badges(tmp_path, [notebook], check=True) == []
    assert "malaria-cells@v1.0" in notebook.read_text() and "@v0." not in notebook.read_text()


# ---------------------------------------------------------------- the runner on a fake series

CONFIG = "profile: smoke\nsource: synthetic\ndata_dir: build/smoke/data\nwork_dir: build/smoke\nseed: 1337\n"


def _fake_series(root: Path, chapters: dict[str, list[str]]) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "configs" / "smoke.yaml").write_text(CONFIG)
    for name, code in chapters.items():
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
        params = nbformat.v4.new_code_cell('work_dir = "build/full"\nseed = 0')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {name.title()} chapter"), params]
        nb.cells += [nbformat.v4.new_code_cell(source) for source in code]
        nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")
    return root


def test_run_stops_at_the_failing_notebook_and_cell(tmp_path, monkeypatch, capsys):
    root = _fake_series(tmp_path, {"01_works": ["x = 1"], "02_breaks": ["y = 2", "raise ValueError('bad cells')"]})
    monkeypatch.chdir(root)
    assert main(["run", "--profile", "smoke", "--build", "out"]) == 3
    captured = capsys.readouterr()
    assert "[1/2] 01_works.ipynb" in captured.out and "02_breaks.ipynb  FAILED" in captured.out
    error = captured.err.strip()
    assert error.count("\n") == 0, "one message, no traceback"
    assert "02_breaks.ipynb failed in cell In [4]" in error and "ValueError: bad cells" in error
    assert "raise ValueError" in error and str(root / "out" / "notebooks" / "02_breaks.ipynb") in error
    assert not (root / "out" / "report.json").exists()


def test_run_writes_report_and_html(tmp_path):
    code = ['from malaria_lib.series import save_metrics\nsave_metrics(work_dir, "01_works", {"answer": seed})']
    root = _fake_series(tmp_path, {"01_works": code})
    lines: list[str] = []
    report = run_series("smoke", root=root, build=root / "out", log=lines.append)
    assert report["01_works"] == {"answer": 1337}, "parameters from configs/smoke.yaml reach the notebook"
    assert report["profile"] == "smoke" and set(report["timings"]) == {"01_works"}
    assert report["parameters"]["work_dir"] == str(root / "out" / "smoke"), "build/ paths move with --build"
    assert {"python", "tensorflow", "keras", "malaria_lib"} <= set(report["versions"])
    assert (root / "out" / "report.json").is_file() and any("01_works.ipynb" in line for line in lines)
    index = (root / "out" / "html" / "index.html").read_text()
    assert '<a href="01_works.html">01_Works chapter</a>' in index
    assert 'href="index.html"' in (root / "out" / "html" / "01_works.html").read_text()


def test_run_refuses_an_unknown_profile(tmp_path):
    root = _fake_series(tmp_path, {"01_works": ["x = 1"]})
    with pytest.raises(MalariaError, match="Unknown profile"):
        run_series("gpu", root=root)


def test_start_up_noise_is_dropped_and_real_warnings_kept():
    from malaria_lib.render import drop_startup_noise

    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             "I0000 00:00:1795983628.344388    1474 port.cc:153] oneDNN custom operations are on.\n"
             "E0000 00:00:1795982529.290144   27337 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import tensorflow")])
    nb.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=noise),
        nbformat.v4.new_output("stream", name="stderr", text=noise + "UserWarning: 3 files could not be read\n"),
        nbformat.v4.new_output("stream", name="stdout", text="I0000 printed by the chapter itself\n"),
    ]
    drop_startup_noise(nb)
    assert [(o.name, o.text) for o in nb.cells[0].outputs] == [
        ("stderr", "UserWarning: 3 files could not be read\n"), ("stdout", "I0000 printed by the chapter itself\n")]


def test_every_chapter_links_to_its_neighbours_and_ends_with_exercises():
    chapters = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for i, path in enumerate(chapters):
        cells = nbformat.read(path, as_version=4).cells
        last = cells[-1].source
        neighbours = [chapters[j].name for j in (i - 1, i + 1) if 0 <= j < len(chapters)]
        assert all(f"]({name})" in last for name in neighbours), f"{path.name} must link to {neighbours}"
        assert "](../README.md#the-notebooks)" in last
        assert any(c.source.startswith("## What we learned") and "## Exercises" in c.source for c in cells), path.name
