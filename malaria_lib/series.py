"""Run the notebook series headlessly with papermill, then collect its report and render it.

`malaria run --profile P` executes notebooks/NN_*.ipynb in order with the parameters of
configs/P.yaml, writes the executed copies to BUILD/notebooks/, merges the metrics the chapters
wrote (WORK_DIR/metrics/*.json) into BUILD/report.json and renders BUILD/html/. The first
failing notebook stops the run with one sentence naming it and its cell. Notebooks import
`save_metrics` from here, so heavy imports (papermill, nbconvert) stay lazy; the commands that
call this (`malaria run`, `html`, `badges`) are in `cli`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from .errors import MalariaError, UsageError
from .render import render_html
from .runtime import machine, versions

PROFILES = ("full", "cpu", "smoke")
KERNEL = "python3"
PATH_PARAMETERS = ("data_dir", "work_dir")


# ---------------------------------------------------------------- used by the notebooks


def save_metrics(work_dir: str | Path, name: str, values: dict) -> Path:
    """Write WORK_DIR/metrics/NAME.json, which `malaria run` merges into the series report."""
    path = Path(work_dir) / "metrics" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=1, sort_keys=True, default=str) + "\n")
    return path


# ---------------------------------------------------------------- locating the series


def find_root(start: str | Path | None = None) -> Path:
    """The repository folder (holding notebooks/ and configs/): START or a parent, else the package's parent."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents, Path(__file__).resolve().parent.parent):
        if (folder / "notebooks").is_dir() and (folder / "configs").is_dir():
            return folder
    raise MalariaError(f"No notebooks/ and configs/ folders in {here} or above; run this from the repository's folder.")


def notebook_paths(root: str | Path) -> list[Path]:
    """The chapters, notebooks/NN_*.ipynb, in numeric order."""
    return sorted(Path(root, "notebooks").glob("[0-9][0-9]_*.ipynb"))


def all_notebooks(root: str | Path) -> list[Path]:
    """Chapters plus the Colab launcher(s): everything that carries badges and a setup cell."""
    return notebook_paths(root) + sorted(Path(root, "colab").glob("*.ipynb"))


def load_parameters(root: Path, profile: str, *, source: str | None = None, build: Path | None = None,
                    data_dir: str | None = None) -> dict:
    """configs/PROFILE.yaml with overrides; paths made absolute so any working folder (nbval's) works.

    Relative paths are relative to the repository, except those under build/, which move with BUILD.
    """
    import yaml

    if profile not in PROFILES:
        raise UsageError(f"Unknown profile '{profile}'; choose one of: {', '.join(PROFILES)}.")
    path = root / "configs" / f"{profile}.yaml"
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise MalariaError(f"Cannot read the parameters {path} ({exc}); restore it from git.") from None
    build = (build or root / "build").resolve()
    if source is not None:
        params["source"] = source
    src = params.get("source")
    if src and src != "synthetic" and "://" not in src and Path(src).expanduser().exists():
        params["source"] = str(Path(src).expanduser().resolve())
    if data_dir is not None:
        params["data_dir"] = str(Path(data_dir).expanduser().resolve())
    for key in PATH_PARAMETERS:
        value = Path(params.get(key, "build/" + profile if key == "work_dir" else "data"))
        if not value.is_absolute():
            parts = value.parts
            value = build.joinpath(*parts[1:]) if parts[:1] == ("build",) else root / value
        params[key] = str(value)
    return params


# ---------------------------------------------------------------- running


@contextlib.contextmanager
def _current_python_kernel() -> Iterator[None]:
    """Make the kernel `python3` this very interpreter, whatever other kernels the machine has registered."""
    with tempfile.TemporaryDirectory(prefix="malaria-kernel-") as tmp:
        spec = Path(tmp, "kernels", KERNEL)
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            # --log-level=ERROR hides ipykernel's start-up warnings, which a user cannot act on
            "argv": [sys.executable, "-m", "ipykernel_launcher", "--log-level=ERROR", "-f", "{connection_file}"],
            "display_name": "Python 3", "language": "python"}))
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [tmp, old]))
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ notices (CUDA probing, graph attributes) are noise here
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old


def _failure(notebook: Path, target: Path, exc) -> MalariaError:
    """One sentence from papermill's error: the notebook, the cell, the line that raised and the error."""
    lines = (exc.source or "").splitlines()
    trace = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(exc.traceback or []))
    where = re.search(r"Cell In\s*\[\d*\], line (\d+)", trace)
    number = int(where.group(1)) if where and 0 < int(where.group(1)) <= len(lines) else None
    line = lines[number - 1].strip() if number else next((x.strip() for x in lines if x.strip()), "")
    line = line if len(line) <= 70 else line[:67] + "..."
    what = exc.evalue if exc.ename == "MalariaError" else f"{exc.ename}: {exc.evalue}"
    at = f"cell In [{exc.exec_count}]" + (f", line {number}" if number else "")
    return MalariaError(f"{notebook.name} failed in {at} (`{line}`): {what.rstrip('.')}; "
                        f"the executed notebook with the full traceback is {target}.")


def run_series(profile: str, *, source: str | None = None, build: str | Path = "build", data_dir: str | None = None,
               root: str | Path | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Execute every chapter in order, stop at the first failure, then write the report and the HTML."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    root = find_root(root)
    build = Path(build).resolve()
    params = load_parameters(root, profile, source=source, build=build, data_dir=data_dir)
    params["progress"] = False  # progress bars in an executed notebook are frozen widgets: noise for a reader
    notebooks = notebook_paths(root)
    if not notebooks:
        raise MalariaError(f"{root / 'notebooks'} holds no NN_name.ipynb chapter; nothing to run.")
    out = build / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    for stale in Path(params["work_dir"], "metrics").glob("*.json"):
        stale.unlink()  # only this run's chapters go into the report
    say = log or (lambda _: None)
    say(f"Running {len(notebooks)} notebooks with the {profile} profile; executed copies go to {out}")
    timings: dict[str, float] = {}
    with _current_python_kernel():
        for i, notebook in enumerate(notebooks, 1):
            target = out / notebook.name
            start = time.perf_counter()
            try:
                papermill.execute_notebook(str(notebook), str(target), parameters=params, kernel_name=KERNEL,
                                           cwd=str(root), progress_bar=False, log_output=False)
            except PapermillExecutionError as exc:
                say(f"[{i}/{len(notebooks)}] {notebook.name}  FAILED after {time.perf_counter() - start:.1f} s")
                raise _failure(notebook, target, exc) from None
            timings[notebook.stem] = round(time.perf_counter() - start, 1)
            say(f"[{i}/{len(notebooks)}] {notebook.name}  {timings[notebook.stem]:.1f} s")
    report = collect_report(build, params, profile, timings)
    index = render_html(build)
    say(f"Report: {build / 'report.json'}; HTML: {index}")
    return report


def collect_report(build: Path, params: dict, profile: str, timings: dict[str, float]) -> dict:
    """Merge WORK_DIR/metrics/*.json (keyed by file stem) with the run's profile, versions and timings."""
    report: dict = {}
    for path in sorted(Path(params["work_dir"], "metrics").glob("*.json")):
        try:
            report[path.stem] = json.loads(path.read_text())
        except ValueError:
            raise MalariaError(f"{path} is not valid JSON; run the notebook that writes it again.") from None
    report.update(profile=profile, parameters=params, versions=versions(), timings=timings,
                  total_seconds=round(sum(timings.values()), 1), machine=machine(),
                  finished=datetime.now(UTC).isoformat(timespec="minutes"))
    build.mkdir(parents=True, exist_ok=True)
    (build / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return report


# ---------------------------------------------------------------- notebook hygiene


def strip_outputs(nb) -> bool:
    """Remove outputs and execution counts in place (notebooks are stored clean); True if anything changed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
    return changed
