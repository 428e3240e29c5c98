"""Checksummed, resumable download of one file.

Why not pooch or `keras.utils.get_file`: both verify a checksum but start over after a dropped
connection, and the NIH archive is 353 MB. This keeps a `.part` file, resumes it with an HTTP
Range request when the server allows, and renames it into place only after the sha256 matches.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .errors import MalariaError, NetworkError

CHUNK = 1 << 20


def sha256_of(path: str | Path, progress: bool = False) -> str:
    """The sha256 hex digest of a file, read in chunks so a large archive never sits in memory."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc="checksum", disable=not progress, leave=False
    ) as bar:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of `url` to `part`, asking for a byte range when part of it is already there."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "malaria_lib"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if have and response.status != 206:  # the server ignored the range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=Path(url).name, disable=not progress
        ) as bar:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                out.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download(
    url: str,
    dest: str | Path,
    sha256: str | None,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    backoff: float = 2.0,
) -> Path:
    """Download `url` to `dest`, resuming after dropped connections; verify `sha256` before renaming.

    The file appears at `dest` only when complete and verified; a wrong checksum removes the
    partial file so that the next attempt starts clean. After a dropped connection it waits BACKOFF
    seconds, then twice that, and so on (at most 30 s), giving a flaky network time to come back.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MalariaError(f"Cannot create {dest.parent} ({exc.strerror}); choose a writable --data-dir.") from None
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout, progress)
            last_error = None
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and part.exists():  # range beyond the end: what we have is all there is
                last_error = None
                break
            raise NetworkError(f"The server refused {url} (HTTP {exc.code} {exc.reason}); check the address.") from None
        except urllib.error.URLError as exc:
            last_error = exc
            if not part.exists():
                raise NetworkError(
                    f"Cannot reach {url} ({exc.reason}); check your connection or pass --source with a local copy."
                ) from None
        except (http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            last_error = exc
        if attempt < retries:
            time.sleep(min(backoff * 2.0**attempt, 30.0))
    if last_error is not None:
        got = part.stat().st_size if part.exists() else 0
        raise NetworkError(
            f"The download of {url} broke off after {got:,} bytes ({type(last_error).__name__}); "
            "run the same command again to resume it."
        )
    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256.lower():
            part.unlink()
            raise MalariaError(
                f"The file from {url} has sha256 {actual[:12]}… but {sha256[:12]}… was expected, so it was "
                "deleted; try again later or check that the address is right."
            )
    os.replace(part, dest)
    return dest
