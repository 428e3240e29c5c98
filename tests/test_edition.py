"""The reader's edition (docs/): made from a finished run, true to the chapters' current code, small, self-contained.

The committed edition is checked against the chapters as they are now: a chapter whose code cells changed since
the edition was made fails here (make it again with `make edition`). The builder itself is tested on the smoke
series that `make test` runs first (MALARIA_SERIES_BUILD); the browser checks of both sites are in test_html.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from malaria_lib import edition
from malaria_lib.cli import main
from malaria_lib.errors import MalariaError
from malaria_lib.series import notebook_paths

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILD = Path(os.environ.get("MALARIA_SERIES_BUILD", ROOT / "build" / "test")).resolve()
needs_smoke_build = pytest.mark.skipif(not (BUILD / "report.json").is_file(),
                                       reason=f"no finished series in {BUILD}: run `make test` first")


def chapter(*code: str, setup: str = 'MALARIA_LIB = "git+https://example.org/x@v1"', injected: str = "seed = 1"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 1. A chapter"), nbformat.v4.new_code_cell(setup)]
    parameters = nbformat.v4.new_code_cell(injected)
    parameters.metadata["tags"] = ["injected-parameters"]
    nb.cells += [parameters] + [nbformat.v4.new_code_cell(source) for source in code]
    return nb


def test_the_code_hash_sees_code_and_ignores_the_setup_cell_and_injected_parameters():
    base = edition.code_hash(chapter("x = 1", "print(x)"))
    assert edition.code_hash(chapter("x = 1", "print(x)", setup='MALARIA_LIB = "git+https://example.org/x@v2"')) == base
    assert edition.code_hash(chapter("x = 1", "print(x)", injected="seed = 2")) == base
    assert edition.code_hash(chapter("x = 2", "print(x)")) != base
    assert edition.code_hash(chapter("x = 1\nprint(x)")) != base  # cells are kept apart
    executed = chapter("x = 1", "print(x)")
    executed.cells[-1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    assert edition.code_hash(executed) == base  # outputs are not code


# ---------------------------------------------------------------- the committed edition


@pytest.fixture(scope="module")
def manifest() -> dict:
    path = DOCS / edition.EDITION_FILE
    if not path.is_file():  # until the first edition is committed (it waits for a reference run: see the README)
        pytest.skip("docs/ holds no reader's edition yet: make it with `make edition` (see the README)")
    return json.loads(path.read_text())


def test_the_committed_edition_matches_every_chapters_code(manifest):
    stale = edition.stale_chapters(DOCS, notebook_paths(ROOT))
    assert not stale, (f"the edition in docs/ was made with other code in {', '.join(stale)}: make it again with "
                       "`make edition` (a cpu reference run on the dev subset)")
    assert main(["edition", "--out", str(DOCS), "--check"]) == 0


def test_the_committed_edition_is_a_cpu_run_on_named_data_and_small(manifest):
    assert manifest["profile"] == "cpu"
    assert manifest["data"]["name"] in ("dev", "nih"), manifest["data"]
    assert manifest["machine"] and manifest["versions"]["tensorflow"]
    size = sum(p.stat().st_size for p in DOCS.rglob("*") if p.is_file())
    assert size <= edition.MAX_BYTES, f"docs/ takes {size / 2**20:.1f} MB, more than 20 MB"
    assert {p.name for p in DOCS.glob("*.html")} == {"index.html"} | {c["page"] for c in manifest["chapters"].values()}
    index = (DOCS / "index.html").read_text(encoding="utf-8")
    for shown in ("About this edition", manifest["data"]["text"].split(":")[0], manifest["run_finished"],
                  f"tensorflow {manifest['versions']['tensorflow']}"):
        assert shown in index, f"the index does not say {shown!r}"


def test_the_committed_edition_shows_no_folder_of_the_machine_it_was_made_on(manifest):
    for page in DOCS.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        for private in ("/work/", "/home/", "/root/", "/tmp/", "/content/"):
            assert f'"{private}' not in text and f" {private}" not in text and f"'{private}" not in text, (
                f"{page.name} shows a path under {private}")


# ---------------------------------------------------------------- the builder, on the smoke series


@needs_smoke_build
def test_an_edition_of_the_smoke_series_is_complete_and_detects_changed_code(tmp_path):
    out = tmp_path / "docs"
    made = edition.make_edition(BUILD, out)
    assert made["profile"] == "smoke" and made["data"]["name"] == "synthetic"
    assert set(made["chapters"]) == {p.stem for p in notebook_paths(ROOT)}
    assert edition.stale_chapters(out, notebook_paths(ROOT)) == []  # the smoke series ran the chapters as they are
    for page in out.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert str(ROOT) not in text, f"{page.name} shows the repository's folder on this machine"
        assert not re.search(r'<script[^>]+src="https?://', text), f"{page.name} loads a script from the network"
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "About this edition" in index and "synthetic cells" in index and made["run_finished"] in index

    changed = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", changed)
    first = sorted(changed.glob("[0-9][0-9]_*.ipynb"))[0]
    nb = nbformat.read(first, as_version=4)
    code = next(c for c in reversed(nb.cells) if c.cell_type == "code")
    code.source += "\nprint('changed')"
    nbformat.write(nb, first)
    assert edition.stale_chapters(out, sorted(changed.glob("[0-9][0-9]_*.ipynb"))) == [first.stem]


@needs_smoke_build
def test_an_edition_too_large_or_from_an_unfinished_run_leaves_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "docs"
    out.mkdir()
    (out / "index.html").write_text("the old edition")
    monkeypatch.setattr(edition, "MAX_BYTES", 1000)
    with pytest.raises(MalariaError, match="more than"):
        edition.make_edition(BUILD, out)
    assert [p.name for p in out.iterdir()] == ["index.html"] and (out / "index.html").read_text() == "the old edition"
    with pytest.raises(MalariaError, match="no finished run"):
        edition.make_edition(tmp_path / "nothing", out)
    assert (out / "index.html").read_text() == "the old edition"


def test_check_names_the_chapters_that_changed(tmp_path, capsys):
    out = tmp_path / "docs"
    out.mkdir()
    (out / edition.EDITION_FILE).write_text(json.dumps({"chapters": {"01_data": {"code_sha256": "0" * 64}}}))
    assert main(["edition", "--out", str(out), "--check"]) == 3
    err = capsys.readouterr().err
    assert "01_data" in err and "make edition" in err and err.count("\n") == 1


def test_the_data_is_named_by_its_manifest_or_its_counts(tmp_path, synthetic_root):
    dev_counts = {"01_data": {"classes": {"Parasitized": 4581, "Uninfected": 4127}, "patients": 60}}
    assert edition.describe_data({"profile": "cpu", **dev_counts})["name"] == "dev"  # the data folder is gone
    other = {"profile": "cpu", **dev_counts, "parameters": {"data_dir": str(synthetic_root)}}
    assert edition.describe_data(other)["name"] == "other"  # the folder is there: its checksum decides
    nih = {"profile": "cpu", "01_data": {"classes": {"Parasitized": 13779, "Uninfected": 13779}, "patients": 200}}
    assert edition.describe_data(nih) == {**edition.describe_data(nih), "name": "nih", "cells": 27_558}
    assert edition.describe_data({"profile": "smoke"})["name"] == "synthetic"
    made_to_size = {"profile": "cpu", "01_data": {"classes": {"Parasitized": 14498, "Uninfected": 13060}, "patients": 190}}
    assert edition.describe_data(made_to_size)["name"] == "other"  # full_size_folder.py's 27,558 cells are not NIH's


def test_the_dev_subset_is_recognised_by_its_checksum(dev_data):
    report = {"profile": "cpu", "parameters": {"data_dir": str(dev_data)},
              "01_data": {"classes": {"Parasitized": 4581, "Uninfected": 4127}, "patients": 60}}
    described = edition.describe_data(report)
    assert described["name"] == "dev" and "malaria fetch --subset dev" in described["text"]
