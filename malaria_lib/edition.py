"""The reader's edition: one executed run of the series, rendered as a small static site under docs/.

A reader on GitHub (or on GitHub Pages serving docs/) sees the tutorial with its outputs without running
anything. The edition is a record of one reference run, so its index says which run: the profile, the data
(named when it is the dev subset or the whole NIH archive), when it ran, on which machine and with which
versions. `edition.json` keeps, for each chapter, a hash of the code it was executed with; `code_hash` of
the chapter as it is now must equal it, so a chapter whose code changed after the edition was made is
caught by a test instead of silently showing outputs of other code. The setup cell (rewritten by
`malaria badges` with each release) and papermill's injected parameters are left out of the hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import shutil
from pathlib import Path

from .errors import MalariaError
from .render import render_html
from .series import find_root
from .subsets import manifest_sha256, read_subset

EDITION_FILE = "edition.json"
MAX_BYTES = 20 * 1024 * 1024  # the cap: a repository stays quick to clone
_SETUP_MARK = "MALARIA_LIB = "  # the setup cell's install line (see colab.refresh)
NIH_CLASSES = {"Parasitized": 13_779, "Uninfected": 13_779}  # the NIH archive's cells per class


def code_cells(nb) -> list[str]:
    """The code a chapter teaches: its code cells, without the setup cell and papermill's injected parameters."""
    return [cell.source for cell in nb.cells
            if cell.cell_type == "code" and "injected-parameters" not in cell.get("metadata", {}).get("tags", [])
            and _SETUP_MARK not in cell.source]


def code_hash(notebook) -> str:
    """sha256 over a chapter's code cells (a path or a notebook node), each cell's source ended by a NUL."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4) if isinstance(notebook, (str, Path)) else notebook
    digest = hashlib.sha256()
    for source in code_cells(nb):
        digest.update(source.strip().encode() + b"\0")
    return digest.hexdigest()


def figure_count(nb) -> int:
    """How many figures (PNG outputs) an executed chapter shows: its page must show as many."""
    return sum("image/png" in output.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for output in cell.get("outputs", []))


def describe_data(report: dict) -> dict:
    """Which cells the run used, from chapter 1's inventory: named when they are the dev subset or the NIH archive.

    The dev subset is recognised by its manifest checksum when the run's data folder is still there (the same
    check `malaria fetch --subset dev` makes), else by its counts of cells per class and of patients.
    """
    data = report.get("01_data", {})
    classes = data.get("classes") if isinstance(data.get("classes"), dict) else {}
    cells = sum(classes.values()) if classes else None
    patients = data.get("patients")
    described = {"cells": cells, "patients": patients, "classes": classes}
    if report.get("profile") == "smoke" or report.get("parameters", {}).get("source") == "synthetic":
        return {**described, "name": "synthetic", "text": "synthetic cells (the smoke profile: it only proves the code runs)"}
    dev = read_subset("dev")
    cell_dir = Path(report.get("parameters", {}).get("data_dir", "")) / "cell_images"
    if cell_dir.is_dir():
        is_dev = manifest_sha256(cell_dir) == dev["manifest_sha256"]
    else:
        is_dev = classes == dev["classes"] and patients == len(dev["patients"])
    if is_dev:
        return {**described, "name": "dev", "text": (
            f"the dev subset: {cells:,} cells of {patients} of the NIH archive's 200 patients, the data the "
            "text's quoted figures come from; rebuild it from the NIH archive with `malaria fetch --subset dev`")}
    if classes == NIH_CLASSES:
        return {**described, "name": "nih", "text": f"the NIH archive: {cells:,} cells of {patients} patients"}
    return {**described, "name": "other", "text": f"{cells:,} cells of {patients} patients" if cells else "not recorded"}


def local_folders(report: dict) -> dict[str, str]:
    """This machine's folders as the pages would show them (the repository, the archive's folder), mapped to the
    relative paths a reader's clone has: `/home/me/malaria-cells/build/cpu` reads `build/cpu`."""
    folders = {str(find_root()): "."}
    source = report.get("parameters", {}).get("source")
    if source and "://" not in source and Path(source).is_absolute():
        folders[str(Path(source).parent)] = "."
    replace = {}
    for folder in sorted(folders, key=len, reverse=True):  # the deepest first: a folder inside another
        replace[folder + "/"] = ""
        replace[folder] = folders[folder]
    return replace


def _about(manifest: dict) -> str:
    """The index page's account of the run the edition shows."""
    machine = manifest.get("machine") or {}
    where = (f"{machine.get('cpu', 'unknown processor')}, {machine.get('cores', '?')} cores"
             + (f", GPUs: {', '.join(machine['gpus'])}" if machine.get("gpus") else ", no GPU")) if machine else "not recorded"
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())
    minutes = manifest.get("total_seconds", 0) / 60
    rows = [("Profile", f"<code>{html.escape(manifest['profile'])}</code>"),
            ("Data", html.escape(manifest["data"]["text"])),
            ("Run finished", html.escape(manifest.get("run_finished", "not recorded"))),
            ("Run time", f"{minutes:.1f} minutes for the {len(manifest['chapters'])} chapters" if minutes
             else "not recorded"),
            ("Machine", html.escape(where)),
            ("Versions", html.escape(versions)),
            ("Rendered", html.escape(manifest["rendered"]))]
    table = "\n".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f"""<h2>About this edition</h2>
<p>Every output below comes from one run of the notebook series, made with the commands in the
repository's README (<code>make edition</code>). Your own run prints its own figures: on other data,
another machine or other library versions they differ, and the chapters say which figures to expect.</p>
<table class="about">
{table}
</table>"""


def make_edition(build: str | Path, out: str | Path = "docs") -> dict:
    """Render the executed run in BUILD (from `malaria run`) as the reader's edition in OUT; return its manifest.

    OUT is replaced only when the new edition is complete and within MAX_BYTES; the old one is kept otherwise.
    """
    import nbformat

    build, out = Path(build), Path(out)
    try:
        report = json.loads((build / "report.json").read_text())
    except (OSError, ValueError):
        raise MalariaError(f"{build} holds no finished run (report.json); make one with "
                           f"`malaria run --profile cpu --build {build}` first.") from None
    notebooks = sorted((build / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = sorted(set(report.get("timings", {})) - {p.stem for p in notebooks})
    if not notebooks or missing:
        raise MalariaError(f"{build / 'notebooks'} lacks executed chapters ({', '.join(missing) or 'all'}); run the "
                           "series again.")
    finished = report.get("finished") or dt.datetime.fromtimestamp(
        (build / "report.json").stat().st_mtime, dt.UTC).isoformat(timespec="minutes")
    manifest = {
        "profile": report.get("profile"), "data": describe_data(report), "run_finished": finished,
        "rendered": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
        "machine": report.get("machine"), "versions": report.get("versions", {}),
        "timings": report.get("timings", {}), "total_seconds": report.get("total_seconds"),
        "chapters": {},
    }
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        manifest["chapters"][path.stem] = {"page": path.stem + ".html", "code_sha256": code_hash(nb),
                                           "figures": figure_count(nb)}
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    render_html(build, out=staging, about=_about(manifest), replace=local_folders(report))
    (staging / EDITION_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
    if size > MAX_BYTES:
        shutil.rmtree(staging)
        raise MalariaError(f"The edition would take {size / 2**20:.1f} MB, more than its {MAX_BYTES / 2**20:.0f} MB; "
                           f"smaller figures are needed. {out} was left as it was.")
    manifest["bytes"] = size
    (staging / EDITION_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)
    return manifest


def stale_chapters(edition: str | Path, notebooks: list[Path]) -> list[str]:
    """The chapters whose code differs from what the edition in EDITION was executed with (or that it lacks)."""
    path = Path(edition) / EDITION_FILE
    try:
        chapters = json.loads(path.read_text())["chapters"]
    except (OSError, ValueError, KeyError):
        raise MalariaError(f"{path} cannot be read; make the edition with `make edition`.") from None
    stale = [p.stem for p in notebooks if chapters.get(p.stem, {}).get("code_sha256") != code_hash(p)]
    return stale + sorted(set(chapters) - {p.stem for p in notebooks})
