"""A Colab stand-in: the chapters as a learner runs them from their badges, without Colab or a GPU.

What Colab does and this reproduces: a fresh Python with Colab's preinstalled packages (TensorFlow,
Keras, NumPy, ..., ipykernel) and a kernel that has imported `google.colab`; a chapter opened alone
in an empty working folder (Colab's /content), not in a clone of the repository; its setup cell
pip-installing the library from a tagged git release, not editable. The release here is the
working tree committed and tagged in a throwaway repository (`git+file://...@vX.Y.Z`), since the
real one sits on GitHub. The chapters run with the smoke parameters (synthetic cells, offline):
all ten in order in one folder, then chapters 5, 6, 9 and 10 each alone in a fresh folder, where they
must fetch, split and train everything they need themselves.

About 6 minutes on 2 cores (the fresh environment about 1 of them, from pip's cache).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from malaria_lib.colab import refresh
from malaria_lib.series import notebook_paths

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = notebook_paths(ROOT)
# What a Colab runtime brings before the setup cell runs (the library's own extras it must install itself).
COLAB_PREINSTALLED = ["tensorflow", "keras", "numpy", "pillow", "matplotlib", "scikit-learn", "scipy", "tqdm",
                      "pyyaml", "ipykernel", "ipywidgets"]
SMOKE = {"profile": "smoke", "source": "synthetic", "progress": False}
ALONE = ("05_our_model", "06_unseen_patients", "09_screening", "10_transfer_learning")
KERNEL = "colab-standin"

pytestmark = pytest.mark.slow


def _quiet_run(args: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> str:
    """The working tree as a tagged release in a throwaway git repository, as pip sees `git+URL@TAG`."""
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    repo = tmp_path_factory.mktemp("release") / "malaria-cells"
    listed = _quiet_run(["git", "-C", ROOT, "ls-files", "-co", "--exclude-standard"]).stdout.splitlines()
    for name in listed:
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git = ["git", "-C", repo, "-c", "user.name=stand-in", "-c", "user.email=stand-in@localhost"]
    _quiet_run(["git", "init", "-q", repo])
    _quiet_run([*git, "add", "-A"])
    _quiet_run([*git, "commit", "-q", "-m", "release"])
    _quiet_run([*git, "tag", f"v{version}"])
    return f"git+file://{repo}@v{version}"


@pytest.fixture(scope="module")
def colab_kernel(tmp_path_factory):
    """A fresh virtual environment with Colab's preinstalled packages and a kernel that imports google.colab."""
    home = tmp_path_factory.mktemp("colab")
    venv = home / "venv"
    _quiet_run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    _quiet_run([python, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", *COLAB_PREINSTALLED])
    fake = home / "fake" / "google" / "colab"  # google/ stays a namespace package, shared with protobuf
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""Stand-in for Colab\'s module: its presence is what the chapters check."""\n')
    (fake / "drive.py").write_text("def mount(path):\n    raise RuntimeError('no Google Drive in the stand-in')\n")
    startup = home / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab  # as Colab's kernel does at start\n")
    spec = home / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "--log-level=ERROR", "-f", "{connection_file}"],
        "display_name": "Colab stand-in", "language": "python",
        "env": {"PYTHONPATH": str(home / "fake"), "IPYTHONDIR": str(home / "ipython"),
                "TF_CPP_MIN_LOG_LEVEL": "3", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(home / "jupyter"), old]))
    yield python
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def _open_from_badge(chapter: Path, folder: Path, release: str) -> Path:
    """The chapter as Colab opens it, alone in FOLDER, its install line pointing at the local release."""
    nb = nbformat.read(chapter, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = refresh(cell.source, install=release)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / chapter.name
    nbformat.write(nb, target)
    return target


def _run(notebook: Path) -> float:
    import papermill

    start = time.perf_counter()
    papermill.execute_notebook(str(notebook), str(notebook.with_suffix(".out.ipynb")), parameters=SMOKE,
                               kernel_name=KERNEL, cwd=str(notebook.parent), progress_bar=False)
    return time.perf_counter() - start


def _outputs(notebook: Path) -> str:
    nb = nbformat.read(notebook.with_suffix(".out.ipynb"), as_version=4)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_every_chapter_runs_in_order_from_a_released_install_outside_the_repository(tmp_path, release,
                                                                                    colab_kernel):
    content = tmp_path / "content"
    times = {chapter.stem: _run(_open_from_badge(chapter, content, release)) for chapter in CHAPTERS}
    installed = _quiet_run([colab_kernel, "-c", "import malaria_lib; print(malaria_lib.__file__)"], cwd=content).stdout.strip()
    assert Path(installed).is_relative_to(colab_kernel.parent.parent), "a regular install, not the clone"
    assert not (content / "notebooks").exists() and not (content / "configs").exists()
    metrics = {p.stem for p in (content / "build" / "smoke" / "metrics").glob("*.json")}
    assert {m[:3] for m in metrics} == {c.stem[:3] for c in CHAPTERS}, "every chapter wrote its metrics to build/PROFILE"
    assert "Synthetic cells made" in _outputs(content / CHAPTERS[1].name) or "already there" in _outputs(
        content / CHAPTERS[1].name)
    print("stand-in, in order: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in times.items()))


@pytest.mark.parametrize("name", ALONE)
def test_a_chapter_opened_alone_makes_what_it_needs(tmp_path, release, colab_kernel, name):
    chapter = next(c for c in CHAPTERS if c.stem == name)
    folder = tmp_path / "content"
    seconds = _run(_open_from_badge(chapter, folder, release))
    text = _outputs(folder / chapter.name)
    assert "Synthetic cells made in data" in text, "the chapter fetched its own cells"
    assert (folder / "build" / "smoke" / "metrics" / f"{name}.json").is_file()
    assert list((folder / "build" / "smoke" / "runs").glob("malarianet_patient/best.keras"))
    print(f"stand-in, {name} alone: {seconds:.0f} s")
