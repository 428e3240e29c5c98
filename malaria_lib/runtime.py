"""Where a chapter runs and what it may use: Colab or a clone, a GPU or not, the local disk or Google Drive.

Each chapter calls `start_chapter` right after its parameters. It settles the `auto` profile by the
hardware (`full` on a GPU, `cpu` without one), gives every profile its own work folder so that a
finished run of one profile is never replaced by another's, keeps the archive and the work on Google
Drive when asked (the cells themselves are extracted to the fast local disk), checks the installed
TensorFlow and Keras against the versions this tutorial was tested with, and tells the reader all of it
in a few lines. Values given explicitly (by hand or by papermill) are obeyed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .errors import UsageError

AUTO = "auto"
PROFILES = ("full", "cpu", "smoke")
DRIVE_MOUNT = "/content/drive"
DRIVE_FOLDER = "MyDrive/malaria"  # on Drive: downloads/ (the archive) and build/PROFILE/ (splits, models, figures)

# The lowest versions the library declares (pyproject.toml) and the ones its results were made with
# (constraints.txt); tests/test_colab.py keeps both in step with those files.
MINIMUM = {"tensorflow": "2.16", "keras": "3.8"}
TESTED = {"tensorflow": "2.21", "keras": "3.15"}


@dataclass
class Chapter:
    """What a chapter works with once its parameters are settled."""

    profile: str
    data_dir: Path  # holds cell_images/ (always on the local disk: 27,558 small files are slow on Drive)
    work_dir: Path  # splits, runs, figures, metrics of this profile
    download_dir: Path | None  # where a downloaded archive is kept (None: DATA_DIR/downloads)
    gpus: int
    colab: bool


def on_colab() -> bool:
    """True inside a Google Colab runtime (its kernel imports google.colab at start)."""
    return "google.colab" in sys.modules


def gpu_names() -> list[str]:
    """The GPUs TensorFlow can use (empty on a CPU-only machine)."""
    import tensorflow as tf

    return [gpu.name for gpu in tf.config.list_physical_devices("GPU")]


def _version(name: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in metadata.version(name).split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return None


def _as_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def version_notes() -> list[str]:
    """One sentence per package whose installed version differs from the tested one (empty when all match)."""
    notes = []
    for name, tested in TESTED.items():
        found = _version(name)
        if found is None:
            notes.append(f"{name} is not installed; run the setup cell again.")
        elif found < _as_tuple(MINIMUM[name]):
            notes.append(f"{name} {'.'.join(map(str, found))} is older than {MINIMUM[name]}, the oldest this library "
                         f"works with; install a newer one (pip install -U {name}) and restart the runtime.")
        elif found[:2] != _as_tuple(tested):
            notes.append(f"{name} {'.'.join(map(str, found))} is not the tested {tested}: it should work, but the "
                         "numbers may differ a little from the ones in the text.")
    return notes


def resolve_profile(profile: str | None, gpus: int) -> str:
    """`auto` (or None) becomes `full` on a GPU and `cpu` without one; a named profile is kept as given."""
    if profile in (None, AUTO):
        return "full" if gpus else "cpu"
    if profile not in PROFILES:
        raise UsageError(f"Unknown profile {profile!r}; choose one of: {AUTO}, {', '.join(PROFILES)}.")
    return profile


def start_chapter(profile: str | None = AUTO, data_dir: str | Path = "data", work_dir: str | Path | None = None, *,
                  use_drive: bool = False, trains: bool = False, say: Callable[[str], None] | None = print,
                  mount: Callable[[str], None] | None = None, drive_root: str | Path = DRIVE_MOUNT) -> Chapter:
    """Settle a chapter's profile and folders from its parameters and the machine, and say what was chosen.

    `trains` marks a chapter that trains networks: only there does the lack of a GPU change the profile (when
    left on `auto`) and earn a word. `mount` and `drive_root` exist for tests (Colab's drive.mount otherwise).
    """
    say = say or (lambda _: None)
    colab = on_colab()
    gpus = len(gpu_names())
    chosen = resolve_profile(profile, gpus)
    download_dir = None
    if use_drive and not colab:
        say("use_drive = True works on Google Colab only; here everything stays in the local folders.")
    elif use_drive:
        if mount is None:
            from google.colab import drive  # only importable on Colab

            mount = drive.mount
        mount(str(drive_root))
        drive = Path(drive_root) / DRIVE_FOLDER
        download_dir = drive / "downloads"
        if work_dir is None:
            work_dir = drive / "build" / chosen
        say(f"Google Drive: the archive is kept in {download_dir} and the work in {work_dir}; the cells are "
            f"extracted to {data_dir} on this machine's disk, which is faster.")
    work_dir = Path(work_dir) if work_dir is not None else Path("build") / chosen
    if trains:
        if gpus:
            say(f"Training on {gpus} GPU(s) with the {chosen} profile: "
                + ("float16 arithmetic where it is safe (mixed precision), " if chosen == "full" else "")
                + "augmentation on the GPU, "
                + (f"each batch split over the {gpus} GPUs, " if gpus > 1 else "")
                + "and GPU kernels that are not bit-for-bit repeatable: the last digits of your results may "
                  "differ from a CPU run's.")
        elif profile in (None, AUTO):
            say(f"No GPU here, so this chapter trains with the {chosen} profile's settings: fewer epochs, minutes "
                "instead of hours. For the tutorials' full settings choose Runtime > Change runtime type > GPU "
                "(on Colab) and run again, or set profile = \"full\" to train them on this CPU anyway (hours).")
        elif chosen == "full":
            say("No GPU here, and profile = \"full\" trains the tutorials' own settings on the CPU: expect hours.")
    if colab:
        for note in version_notes():
            say(note)
    return Chapter(chosen, Path(data_dir), work_dir, download_dir, gpus, colab)


def versions() -> dict[str, str]:
    """Versions worth printing at the top of a chapter (read from package metadata: no slow imports)."""
    import platform

    found = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "numpy", "malaria_lib"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict:
    """The processor a run was timed on: the same code on two 2-core machines of this project ran A's epochs at 134
    and at 95 cells per second (an AMD EPYC and an Intel Xeon), so a time means little without it."""
    import os
    import platform

    model = None
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), None)
    except OSError:
        pass
    return {"cpu": model or platform.processor() or platform.machine(), "cores": os.cpu_count(), "gpus": gpu_names(),
            "onednn": onednn_enabled()}


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels on the CPU (up to 1.45 times the training speed on a 2-core AMD
    EPYC; see malaria_lib/__init__.py); None if this TensorFlow cannot say. Why a private module: TensorFlow offers no
    public query of it."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - depends on the TensorFlow build
        return None
    return bool(_pywrap_util_port.IsMklEnabled())
