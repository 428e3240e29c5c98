"""The rendered series in a real browser: every page loads, every figure is there, no internal link is broken.

Two sites are checked alike: the build that `make test` makes first (`malaria run --profile smoke --build
build/test`; another with MALARIA_SERIES_BUILD), and the reader's edition in docs/ (`make edition`). A
screenshot of each index is left as an artifact (BUILD/index.png, build/edition-index.png). Skipped, saying
why, without the build or without headless Chromium.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest
from PIL import Image

from malaria_lib.edition import figure_count

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("MALARIA_SERIES_BUILD", ROOT / "build" / "test")).resolve()
HTML = BUILD / "html"
EDITION = ROOT / "docs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")


class Site:
    """A rendered series: its folder, and how many figures each chapter's page must show."""

    def __init__(self, name: str, folder: Path, screenshot: Path):
        self.name, self.folder, self.screenshot = name, folder, screenshot

    def figures(self, stem: str) -> int:
        if self.name == "edition":  # the edition keeps no notebooks, only its manifest
            return json.loads((self.folder / "edition.json").read_text())["chapters"][stem]["figures"]
        return figure_count(nbformat.read(BUILD / "notebooks" / f"{stem}.ipynb", as_version=4))

    def chapters(self) -> set[str]:
        if self.name == "edition":
            return {c["page"] for c in json.loads((self.folder / "edition.json").read_text())["chapters"].values()}
        return {p.stem + ".html" for p in (BUILD / "notebooks").glob("*.ipynb")}


SITES = {"series": Site("series", HTML, BUILD / "index.png"),
         "edition": Site("edition", EDITION, ROOT / "build" / "edition-index.png")}
MISSING = {"series": f"no rendered series in {HTML}: run `make test` (or `malaria run --build {BUILD}`) first",
           "edition": f"no reader's edition in {EDITION}: make it with `make edition`"}


@pytest.fixture(scope="module", params=sorted(SITES))
def site(request) -> Site:
    if not (SITES[request.param].folder / "index.html").is_file():
        pytest.skip(MISSING[request.param])
    return SITES[request.param]


def chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="malaria-chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120)


class Links(HTMLParser):
    """Collects hrefs, img srcs and element ids of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(found["id"])
        if tag == "a" and found.get("name"):
            self.ids.add(found["name"])
        if tag == "a" and found.get("href"):
            self.hrefs.append(found["href"])
        if tag == "img" and found.get("src"):
            self.images.append(found["src"])


def parse(text: str) -> Links:
    parser = Links()
    parser.feed(text)
    return parser


def pages(site: Site) -> list[Path]:
    return sorted(site.folder.glob("*.html"))


@pytest.fixture(scope="module")
def dom(site) -> dict[str, Links]:
    """Each page as Chromium built it (after parsing and scripts), not as the file reads."""
    result = {}
    for page in pages(site):
        run = chromium("--dump-dom", page.as_uri())
        assert run.returncode == 0 and "<body" in run.stdout, f"{page.name} did not load: {run.stderr[-500:]}"
        result[page.name] = parse(run.stdout)
    return result


def test_index_lists_every_chapter(site, dom):
    chapters = site.chapters()
    assert chapters, "no executed notebooks"
    assert chapters <= set(dom["index.html"].hrefs)
    assert set(dom) == chapters | {"index.html"}


def test_every_figure_is_present_and_decodes(site, dom):
    for name, page in dom.items():
        if name == "index.html":
            continue
        embedded = [src for src in page.images if src.startswith("data:image/png;base64,")]
        assert len(embedded) == site.figures(name.removesuffix(".html")), f"figures missing in {name}"
        for src in embedded:
            with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
                image.verify()
    assert sum(len(p.images) for p in dom.values()) > 0, "the series shows no figure at all"


def test_no_internal_link_is_broken(site, dom):
    checked = 0
    for name, page in dom.items():
        for href in page.hrefs:
            url = urlparse(href)
            if url.scheme in ("http", "https", "mailto", "data", "javascript"):
                continue  # external: cannot be checked offline
            target = (site.folder / unquote(url.path)) if url.path else site.folder / name
            assert target.is_file(), f"{name} links to {href}, which does not exist"
            if url.fragment:
                ids = dom[target.name].ids if target.name in dom else parse(target.read_text()).ids
                assert unquote(url.fragment) in ids, f"{name} links to {href}, an anchor that does not exist"
            checked += 1
    assert checked >= 2 * len(dom) - 1, "pages should at least link to the index and their neighbours"


def test_screenshot_of_the_index(site):
    shot = site.screenshot
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    run = chromium(f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars",
                   (site.folder / "index.html").as_uri())
    assert run.returncode == 0 and shot.is_file(), run.stderr[-500:]
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        low, high = image.convert("L").getextrema()
        assert high - low > 100, "the screenshot is blank"


def test_pages_carry_no_tensorflow_start_up_noise_and_one_numbering(site):
    for page in pages(site):
        text = page.read_text(encoding="utf-8")
        for noise in ("absl::InitializeLog", "oneDNN custom operations", "cuInit", "cuda_platform"):
            assert noise not in text, f"{page.name} shows TensorFlow's start-up line '{noise}'"
    index = (site.folder / "index.html").read_text(encoding="utf-8")
    assert "<ol>" not in index, "chapter titles carry their numbers: a numbered list would number them twice"

