"""The real download path, end to end, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from malaria_lib.cli import main
from malaria_lib.download import download
from malaria_lib.errors import MalariaError
from malaria_lib.fetch import fetch


@pytest.fixture(autouse=True)
def waits(monkeypatch) -> list[float]:
    """The pauses download() takes between attempts, recorded instead of slept."""
    import types

    from malaria_lib import download as module

    seen: list[float] = []
    monkeypatch.setattr(module, "time", types.SimpleNamespace(sleep=seen.append))
    return seen


class _Server:
    """Serves files from one folder; honours Range; can drop the connection halfway through."""

    def __init__(self, folder: Path, drop_first: int = 0, ranges: bool = True):
        self.folder, self.drop_left, self.ranges = folder, drop_first, ranges
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                owner.requests.append((self.path, self.headers.get("Range")))
                path = owner.folder / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                if owner.ranges and self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if owner.drop_left > 0 and path.suffix == ".zip":
                    owner.drop_left -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.close()  # the connection dies halfway
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_with_correct_checksum_then_reuse(tmp_path, raw_zip, raw_tree):
    with _Server(raw_zip.parent) as server:
        report = fetch(server.url + raw_zip.name, tmp_path / "d", sha256=_sha(raw_zip), progress=False)
        assert report.classes["Parasitized"] == len(list((raw_tree / "cell_images/Parasitized").glob("*.png")))
        assert (tmp_path / "d/downloads" / raw_zip.name).read_bytes() == raw_zip.read_bytes()
        assert not list((tmp_path / "d/downloads").glob("*.part"))
        seen = len(server.requests)
        again = fetch(server.url + raw_zip.name, tmp_path / "d", sha256=_sha(raw_zip), progress=False)
        assert again.reused and len(server.requests) == seen  # no second download


def test_download_with_wrong_checksum_keeps_nothing(tmp_path, raw_zip, capsys):
    with _Server(raw_zip.parent) as server:
        code = main(["fetch", "--source", server.url + raw_zip.name, "--sha256", "ab" * 32,
                     "--data-dir", str(tmp_path / "d"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 3 and "sha256" in err and "deleted" in err
    assert not list((tmp_path / "d").rglob("*.zip*")) and not (tmp_path / "d/cell_images").exists()


def test_dropped_connection_is_resumed_with_a_range_request(tmp_path, raw_zip):
    with _Server(raw_zip.parent, drop_first=1) as server:
        target = download(server.url + raw_zip.name, tmp_path / "x.zip", _sha(raw_zip), progress=False)
    assert target.read_bytes() == raw_zip.read_bytes()
    ranges = [r for p, r in server.requests if p.endswith(".zip")]
    assert ranges[0] is None and ranges[1] is not None and ranges[1] != "bytes=0-"


def test_connection_that_keeps_dropping_leaves_a_partial_file_to_resume(tmp_path, raw_zip, capsys, waits):
    with _Server(raw_zip.parent, drop_first=100, ranges=False) as server:
        code = main(["fetch", "--source", server.url + raw_zip.name, "--sha256", _sha(raw_zip),
                     "--data-dir", str(tmp_path / "d"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 4 and "run the same command again to resume" in err
        assert waits == [2.0, 4.0, 8.0], "a flaky network gets seconds, not a fraction of one, to come back"
        assert (tmp_path / "d/downloads" / (raw_zip.name + ".part")).exists()
        assert not (tmp_path / "d/downloads" / raw_zip.name).exists()
        server.drop_left, server.ranges = 0, True  # the network is back: the same command finishes
        assert main(["fetch", "--source", server.url + raw_zip.name, "--sha256", _sha(raw_zip),
                     "--data-dir", str(tmp_path / "d"), "--quiet"]) == 0
    assert (tmp_path / "d/downloads" / raw_zip.name).read_bytes() == raw_zip.read_bytes()


def test_missing_url_and_unreachable_host(tmp_path, raw_zip):
    with _Server(raw_zip.parent) as server:
        with pytest.raises(MalariaError, match="HTTP 404"):
            download(server.url + "nothing.zip", tmp_path / "n.zip", None, progress=False)
    with pytest.raises(MalariaError, match="Cannot reach"):
        download("http://127.0.0.1:9/none.zip", tmp_path / "n.zip", None, retries=0, progress=False)


@pytest.mark.real_data
def test_dev_zip_over_http_with_its_checksum_and_patient_csvs(tmp_path, dev_zip):
    """The dev zip served over HTTP: checksum from the .sha256 beside it, patient CSVs fetched too."""
    with _Server(dev_zip.parent) as server:
        report = fetch(server.url + dev_zip.name, tmp_path / "d", progress=False)
    assert report.sha256 == (dev_zip.parent / (dev_zip.name + ".sha256")).read_text().split()[0]
    assert report.classes == {"Parasitized": 4581, "Uninfected": 4127}
    assert len(report.skipped) == 2
    # The dev CSVs carry a _dev suffix, so the NIH names are not offered here and that is said.
    assert report.patient_csvs == [] and any("patient ids come from file names" in n for n in report.notes)


DOWNLOAD_CHILD = """
import os, signal, sys
from malaria_lib import download as downloading
from malaria_lib.fetch import fetch

url, data, sha = sys.argv[1:4]
downloading.CHUNK = 4096
bar = downloading.tqdm

class DyingBar(bar):  # a third of the way through the archive, the process is killed
    def __init__(self, *args, total=None, **kwargs):
        super().__init__(*args, total=total, **kwargs)
        self.expected, self.got = total, 0

    def update(self, n=1):
        super().update(n)
        self.got += n
        if self.got * 3 >= self.expected:
            os.kill(os.getpid(), signal.SIGKILL)

downloading.tqdm = DyingBar
fetch(url, data, sha256=sha, force=True, progress=False)
"""


def test_a_fetch_killed_during_download_resumes_and_keeps_the_previous_cells(tmp_path, raw_zip, raw_tree):
    import signal
    import subprocess
    import sys

    from conftest import tree_digest

    data = tmp_path / "d"
    fetch(str(raw_tree), data, progress=False)  # cells from an earlier fetch
    before, source_before = tree_digest(data / "cell_images"), tree_digest(raw_zip)
    with _Server(raw_zip.parent) as server:
        url = server.url + raw_zip.name
        killed = subprocess.run([sys.executable, "-c", DOWNLOAD_CHILD, url, str(data), _sha(raw_zip)],
                                capture_output=True, text=True, timeout=300)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        part = data / "downloads" / (raw_zip.name + ".part")
        assert 0 < part.stat().st_size < raw_zip.stat().st_size, "a partial download is kept to resume"
        assert tree_digest(data / "cell_images") == before, "the cells fetched before are untouched"
        report = fetch(url, data, sha256=_sha(raw_zip), force=True, progress=False)  # the same call again
        ranges = [r for p, r in server.requests if p.endswith(".zip")]
    assert ranges[-1] is not None and ranges[-1] != "bytes=0-", "the rerun asks only for the rest"
    assert (data / "downloads" / raw_zip.name).read_bytes() == raw_zip.read_bytes()
    assert not part.exists() and report.classes["Parasitized"] > 0
    assert tree_digest(raw_zip) == source_before
