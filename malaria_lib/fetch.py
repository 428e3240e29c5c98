"""Get the NIH cell images into `DATA_DIR/cell_images/{Parasitized,Uninfected}`, checked.

Sources: the NIH address (default), any URL, a local zip, or a folder in the NIH or Kaggle
layout. Every image is decoded once on the way in; non-images (`Thumbs.db`) are skipped and
recorded; nothing is written outside the destination and the source is never changed. The work
happens in a staging folder that replaces the result only when everything checked out.

What is not trusted in a source we did not make, and what happens to it:
- zip entries whose path leaves the destination (absolute, drive letters, `..`): the archive is refused;
- zip members that declare or inflate to more than MAX_MEMBER_BYTES: reported as unusable, never read whole;
- linked folders in a source folder: not entered (they can lead anywhere, or in a circle), listed as skipped;
- files that are not images, are damaged, or whose header declares more pixels than a cell can have
  (`images.decode_rgb`): reported as unusable; `--skip-bad` leaves them out, otherwise nothing is written;
- a second fetch into the same folder while one runs: refused (file lock).
In every case the source is only read, and the destination changes only when a fetch completes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from . import config
from .download import download, sha256_of
from .errors import InTheWay, MalariaError
from .images import NotAnImage, decode_rgb
from .patients import read_patient_csv
from .subsets import in_subset, manifest_sha256, read_subset

MARKER = config.FETCH_MARKER
MAX_MEMBER_BYTES = 20 * 2**20  # NIH's largest cell PNG is well under 1 MB; a member beyond this is not a cell


@dataclass
class FetchReport:
    """What a fetch did; also stored beside the cells so that `inventory` and a second fetch can read it."""

    data_dir: str
    source: str
    sha256: str | None = None
    classes: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    converted: int = 0
    nested_duplicates_ignored: int = 0
    patient_csvs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    subset: str | None = None  # the named subset of the source that was kept (subsets.py), if any
    reused: bool = False

    @property
    def cell_dir(self) -> Path:
        return Path(self.data_dir) / "cell_images"


@dataclass
class _Entry:
    """One file of the source, wherever it lives (zip member or file on disk)."""

    name: str  # posix path relative to the source root
    read: Callable[[], bytes]


# ---------------------------------------------------------------- listing sources


def _zip_entries(path: Path) -> tuple[list[_Entry], Callable[[], None]]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise MalariaError(
            f"{path} is not a complete zip archive (it may be truncated or damaged); download it again."
        ) from None
    except OSError as exc:
        raise MalariaError(f"Cannot read {path} ({exc.strerror}); check the path and its permissions.") from None
    entries = []
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        pure = PurePosixPath(name)
        if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in pure.parts:
            archive.close()
            raise MalariaError(
                f"The archive {path} holds an entry '{info.filename}' that would land outside the destination; "
                "refusing to extract it: use the original NIH archive."
            )
        if not info.is_dir():
            entries.append(_Entry(name, lambda info=info: _read_member(archive, info)))
    return entries, archive.close


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, never more than MAX_MEMBER_BYTES: a member may declare (or inflate to) any size."""
    if info.file_size > MAX_MEMBER_BYTES:
        raise OSError(f"it declares {info.file_size:,} bytes, more than any cell image ({MAX_MEMBER_BYTES:,})")
    with archive.open(info) as handle:
        data = handle.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        raise OSError(f"it inflates beyond {MAX_MEMBER_BYTES:,} bytes, more than any cell image")
    return data


def _dir_entries(root: Path) -> tuple[list[_Entry], list[dict[str, str]]]:
    """The files under ROOT, and the linked folders that were not entered (a link can lead anywhere, or in a
    circle). A linked file is read as the file it points to, and checked like any other."""
    entries, skipped = [], []
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [d for d in dirs if (Path(folder) / d).is_symlink()]:
            dirs.remove(name)
            skipped.append({"path": (Path(folder) / name).relative_to(root).as_posix(),
                            "reason": "a linked folder; links are not followed"})
        dirs.sort()
        for file in sorted(files):
            full = Path(folder) / file
            entries.append(_Entry(full.relative_to(root).as_posix(), full.read_bytes))
    return entries, skipped


# ---------------------------------------------------------------- layout


def _plan(entries: list[_Entry], source: str) -> tuple[dict[str, list[_Entry]], list[dict[str, str]], int]:
    """Sort entries into classes; return (images per class, skipped files, nested duplicates ignored).

    The class folders nearest the root win, so Kaggle's nested copy `cell_images/cell_images` is
    ignored rather than counted twice.
    """
    class_prefixes = {
        PurePosixPath(e.name).parts[:-2]
        for e in entries
        if len(PurePosixPath(e.name).parts) >= 2 and PurePosixPath(e.name).parts[-2] in config.CLASSES
    }
    if not class_prefixes:
        raise MalariaError(
            f"{source} has no Parasitized or Uninfected folder; it must hold cell_images/Parasitized and "
            "cell_images/Uninfected (the NIH layout)."
        )
    base = min(class_prefixes, key=lambda p: (len(p), p))
    per_class: dict[str, list[_Entry]] = {c: [] for c in config.CLASSES}
    skipped: list[dict[str, str]] = []
    nested = 0
    for entry in entries:
        parts = PurePosixPath(entry.name).parts
        is_image = parts[-1].lower().endswith(config.IMAGE_SUFFIXES)
        if parts[: len(base)] != base or parts[0] == "__MACOSX":
            if is_image and parts[0] != "__MACOSX" and parts[-2] in config.CLASSES:
                nested += 1
            else:
                skipped.append({"path": entry.name, "reason": "outside the class folders"})
            continue
        inner = parts[len(base):]
        if len(inner) >= 2 and inner[0] not in config.CLASSES and is_image:
            if inner[0] == "cell_images":
                nested += 1
                continue
            raise MalariaError(
                f"{source} has images in an unknown folder '{'/'.join(parts[:len(base) + 1])}', which is neither "
                "Parasitized nor Uninfected; move it out of the data folder and try again."
            )
        if len(inner) == 2 and inner[0] in config.CLASSES and is_image:
            per_class[inner[0]].append(entry)
        elif len(inner) >= 2 and inner[0] in config.CLASSES and not is_image:
            reason = "Windows thumbnail cache" if parts[-1] == "Thumbs.db" else "not a .png file"
            skipped.append({"path": entry.name, "reason": reason})
        elif not (len(inner) >= 2 and inner[0] == "cell_images"):
            skipped.append({"path": entry.name, "reason": "outside the class folders"})
    for name, items in per_class.items():
        if not items:
            present = any(PurePosixPath(e.name).parts[len(base):][:1] == (name,) for e in entries)
            what = "is empty" if present else "is missing"
            raise MalariaError(
                f"The {name} folder of {source} {what}; the source must hold PNG cells in both "
                "cell_images/Parasitized and cell_images/Uninfected."
            )
    return per_class, skipped, nested


# ---------------------------------------------------------------- the fetch


def _read_marker(cell_dir: Path) -> dict | None:
    try:
        return json.loads((cell_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _resolve_source(source: str | None, sha256: str | None) -> tuple[str, str, str | None]:
    """Return (kind, source, expected sha256) with kind one of url, zip, dir."""
    if source is None:
        return "url", config.NIH_URL, sha256 or config.NIH_SHA256
    if source.startswith(("http://", "https://")):
        if sha256 is None and source in (config.NIH_URL, config.NIH_URL_OLD):
            sha256 = config.NIH_SHA256
        return "url", source, sha256
    path = Path(source).expanduser()
    if not path.exists():
        raise MalariaError(f"The source {source} does not exist; give a URL, a zip file or a folder of cell images.")
    if path.is_dir():
        return "dir", str(path.resolve()), None
    if sha256 is None:
        sidecar = path.with_name(path.name + ".sha256")
        if sidecar.is_file():
            sha256 = sidecar.read_text().split()[0] if sidecar.read_text().split() else None
    return "zip", str(path.resolve()), sha256


def _sidecar_checksum(url: str) -> str | None:
    """A `URL.sha256` file beside a non-NIH URL, if the server offers one."""
    try:
        with urllib.request.urlopen(url + ".sha256", timeout=30) as response:
            words = response.read(4096).decode("ascii", "replace").split()
            return words[0] if words and len(words[0]) == 64 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _fetch_url_csvs(url: str, data_dir: Path, report: FetchReport) -> None:
    folder = url.rsplit("/", 1)[0] + "/"
    for name in config.PATIENT_CSVS.values():
        try:
            download(folder + name, data_dir / name, None, retries=1, progress=False)
            read_patient_csv(data_dir / name)
            report.patient_csvs.append(name)
        except MalariaError:
            (data_dir / name).unlink(missing_ok=True)
            report.notes.append(f"{name} is not offered beside {url}; patient ids come from file names.")


def _copy_local_csvs(places: list[Path], data_dir: Path, report: FetchReport) -> None:
    """Copy NIH's mapping CSVs found beside a local source (e.g. `..._parasitized_dev.csv`)."""
    for _label, name in config.PATIENT_CSVS.items():
        stem = name[: -len(".csv")]
        found = sorted(p for place in places if place.is_dir() for p in place.glob(f"{stem}*.csv"))
        if not found:
            continue
        try:
            read_patient_csv(found[0])
        except MalariaError as exc:
            report.notes.append(f"Ignored {found[0]}: {exc}")
            continue
        shutil.copyfile(found[0], data_dir / name)
        report.patient_csvs.append(name)


@contextlib.contextmanager
def _one_fetch_at_a_time(data_dir: Path):
    """Hold an exclusive lock on DATA_DIR/.malaria_fetch.lock: a second fetch into the same folder (another
    notebook, another terminal) is refused with a sentence instead of sharing the download's `.part` file and
    the staging folder. The kernel releases the lock when the process ends, even when it is killed."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one fetch per folder is then up to the user
        yield
        return
    with open(data_dir / ".malaria_fetch.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InTheWay(f"Another `malaria fetch` is writing to {data_dir}; wait for it to finish, then run "
                               "this again (it will reuse what the other one fetched).") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(
    source: str | None = None,
    data_dir: str | Path | None = None,
    **options,
) -> FetchReport:
    """Fetch, verify and extract the cell images; a second call with the same source reuses them.

    One fetch at a time per data folder (a file lock); see `_fetch` for the options.
    """
    data_dir = Path(data_dir if data_dir is not None else config.default_data_dir())
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MalariaError(f"Cannot write to {data_dir} ({exc.strerror}); choose a writable --data-dir.") from None
    with _one_fetch_at_a_time(data_dir):
        return _fetch(source, data_dir, **options)


def _fetch(
    source: str | None = None,
    data_dir: str | Path | None = None,
    *,
    sha256: str | None = None,
    force: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
    download_dir: str | Path | None = None,
    subset: str | None = None,
) -> FetchReport:
    """Fetch, verify and extract the cell images; a second call with the same source reuses them.

    A downloaded archive is kept in DOWNLOAD_DIR (default DATA_DIR/downloads): on Colab a folder on Google
    Drive, so that a new session extracts it again instead of downloading it again. `subset` (a name from
    `subsets.py`, e.g. "dev", or a subset file) keeps only that subset's patients and checks the result
    against the subset's manifest checksum before anything replaces the destination.
    """
    wanted = read_subset(subset) if subset is not None else None
    subset_name = None if wanted is None else str(wanted.get("name", subset))
    kind, source, expected = _resolve_source(source, sha256)
    data_dir = Path(data_dir if data_dir is not None else config.default_data_dir())
    cell_dir = data_dir / "cell_images"
    if kind == "dir" and Path(source) in (cell_dir.resolve(), data_dir.resolve()):
        raise MalariaError(f"The source {source} is the destination itself; choose another --data-dir.")

    marker = _read_marker(cell_dir)
    if marker is not None and not force:
        same_source = marker.get("source") == source or (expected and marker.get("sha256") == expected)
        if same_source and marker.get("subset") == subset_name:
            marker["reused"] = True
            return FetchReport(**{k: v for k, v in marker.items() if k in FetchReport.__dataclass_fields__})
        raise InTheWay(
            f"{cell_dir} already holds cells fetched from {marker.get('source')}; pass --force to replace them "
            "or choose another --data-dir."
        )
    if marker is None and cell_dir.exists() and any(cell_dir.iterdir()) and not force:
        raise InTheWay(
            f"{cell_dir} already exists and was not made by `malaria fetch`; pass --force to set it aside "
            "(it is renamed, not deleted) or choose another --data-dir."
        )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise MalariaError(f"Cannot write to {data_dir} ({exc.strerror}); choose a writable --data-dir.") from None

    report = FetchReport(data_dir=str(data_dir), source=source, sha256=expected, subset=subset_name)
    not_followed: list[dict[str, str]] = []
    def close() -> None:
        return None
    if kind == "url":
        if expected is None:
            expected = report.sha256 = _sidecar_checksum(source)
        if expected is None:
            report.notes.append(f"No checksum is known for {source}; the download was not verified.")
        archive = Path(download_dir or data_dir / "downloads") / PurePosixPath(source).name
        if archive.exists() and expected and sha256_of(archive) != expected:
            archive.unlink()
        if not archive.exists():
            download(source, archive, expected, progress=progress)
        _fetch_url_csvs(source, data_dir, report)
        entries, close = _zip_entries(archive)
    elif kind == "zip":
        if expected is not None:
            actual = sha256_of(source, progress=progress)
            if actual != expected.lower():
                raise MalariaError(
                    f"{source} has sha256 {actual[:12]}… but {expected[:12]}… was expected; it was left as it "
                    "is: download it again."
                )
        entries, close = _zip_entries(Path(source))
        _copy_local_csvs([Path(source).parent], data_dir, report)
    else:
        entries, not_followed = _dir_entries(Path(source))
        _copy_local_csvs([Path(source), Path(source).parent], data_dir, report)
    try:
        per_class, skipped, report.nested_duplicates_ignored = _plan(entries, source)
        report.skipped = skipped + not_followed
        verify = None
        if wanted is not None:
            per_class = {label: [e for e in items if in_subset(e.name, wanted)] for label, items in per_class.items()}
            verify = _subset_check(wanted, subset_name, source)
        _extract(per_class, data_dir, report, skip_bad, progress, verify)
    finally:
        close()
    return report


def _subset_check(wanted: dict, name: str, source: str) -> Callable[[Path], None]:
    """A check of the extracted cells against the subset's manifest checksum, run before they replace anything."""
    def verify(staging: Path) -> None:
        if manifest_sha256(staging) != wanted["manifest_sha256"]:
            raise MalariaError(
                f"The cells of the {name} subset taken from {source} differ from its manifest (checksum "
                f"{wanted['manifest_sha256'][:12]}…): the source is not the NIH archive as published, or a file in "
                "it has changed; nothing was written."
            )
    return verify


def _extract(per_class: dict[str, list[_Entry]], data_dir: Path, report: FetchReport, skip_bad: bool,
             progress: bool, verify: Callable[[Path], None] | None = None) -> None:
    staging = data_dir / ".cell_images.staging"
    shutil.rmtree(staging, ignore_errors=True)
    bad: list[dict[str, str]] = []
    total = sum(len(v) for v in per_class.values())
    try:
        with tqdm(total=total, unit="img", desc="extract and check", disable=not progress) as bar:
            for label, items in per_class.items():
                (staging / label).mkdir(parents=True, exist_ok=True)
                kept = 0
                for entry in items:
                    problem = _write_checked(entry, staging / label, report)
                    if problem:
                        bad.append({"path": entry.name, "reason": problem})
                    else:
                        kept += 1
                    bar.update(1)
                report.classes[label] = kept
        if bad and not skip_bad:
            example = bad[0]
            raise MalariaError(
                f"{len(bad)} of {total} image files cannot be used (e.g. {example['path']}: {example['reason']}); "
                "the source was left as it is: replace or remove them, or pass --skip-bad to leave them out."
            )
        report.skipped.extend(bad)
        for label, count in report.classes.items():
            if count == 0:
                raise MalariaError(f"No usable {label} image is left; check the source.")
        if verify is not None:
            verify(staging)
        (staging / MARKER).write_text(json.dumps(asdict(report), indent=1))
        cell_dir = data_dir / "cell_images"
        if cell_dir.exists():
            if _read_marker(cell_dir) is not None:
                shutil.rmtree(cell_dir)
            else:
                aside = data_dir / f"cell_images.old-{time.strftime('%Y%m%d-%H%M%S')}"
                cell_dir.rename(aside)
                report.notes.append(f"The earlier {cell_dir} was moved to {aside}.")
        os.replace(staging, cell_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_checked(entry: _Entry, folder: Path, report: FetchReport) -> str | None:
    """Decode one image and write it as RGB PNG; return why not when it cannot be used."""
    try:
        data = entry.read()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"cannot be read ({exc})"
    try:
        image, converted = decode_rgb(data)
    except NotAnImage as exc:
        return str(exc)
    target = folder / PurePosixPath(entry.name).name
    if converted:
        image.save(target, format="PNG")
        report.converted += 1
    else:
        target.write_bytes(data)
    return None
