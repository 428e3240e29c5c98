"""The executed series as a small static web site: one HTML page per chapter and an index.

Readers who never run anything read this. Figures are embedded (data: URIs), links between
chapters point at the .html pages, and every page links back to the index and its neighbours.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from pathlib import Path

from .errors import MalariaError

TITLE = "Malaria cell classification"


def chapter_title(nb) -> str:
    """The first Markdown heading of a notebook (its chapter title), else its file name."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#+\s+(.+)$", cell.source, re.M)
            if match:
                return match.group(1).strip()
    return nb.metadata.get("title", "untitled")


# What TensorFlow's C++ core prints to stderr as it starts (absl, oneDNN, CUDA probing): noise for a reader, and
# printed before Python can silence it, so it is taken out of the rendered pages (the executed notebooks keep it).
_STARTUP_NOISE = re.compile(
    r"^(?:[IWEF]\d{4} [\d:. ]+\d+ \S+:\d+\]|WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions:|\S*cuda\S* .*(?:unable|Could not|failed)|oneDNN custom operations"
    r"|This TensorFlow binary is optimized)")


def drop_startup_noise(nb) -> None:
    """Remove TensorFlow's start-up lines from the stderr outputs of a notebook (in place); keep every other line."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines = [line for line in output.get("text", "").splitlines(keepends=True)
                         if not _STARTUP_NOISE.match(line)]
                if not "".join(lines).strip():
                    continue
                output["text"] = "".join(lines)
            kept.append(output)
        cell["outputs"] = kept


def _nav(pages: list[tuple[str, str]], i: int) -> str:
    links = ['<a href="index.html">All chapters</a>']
    if i > 0:
        links.append(f'<a href="{pages[i - 1][0]}">&larr; {html.escape(pages[i - 1][1])}</a>')
    if i + 1 < len(pages):
        links.append(f'<a href="{pages[i + 1][0]}">{html.escape(pages[i + 1][1])} &rarr;</a>')
    return ('<nav class="malaria-nav" style="font-family:sans-serif;padding:.6em 1em;border-bottom:1px solid #ddd">'
            + " &middot; ".join(links) + "</nav>")


# Scripts nbconvert's lab template loads from a CDN: require.js (for widgets, which the chapters have none of) and
# MathJax (for LaTeX, which they do not use). Left out, a page opens offline without a failed request; MathJax stays
# on a page whose Markdown holds a $ (it might be math).
_REQUIRE_JS = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/require\.js/[^"]*"[^>]*>\s*</script>\s*')
_MATHJAX = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[^"]*"[^>]*>\s*</script>\s*')
_STYLE = re.compile(r"<style[^>]*>(.*?)</style>\s*", re.S)


def _share_styles(body: str, out: Path) -> str:
    """Move a page's inline style sheets (260 KB of nbconvert's, the same on every page) to one file they share."""
    start = body.find("<body")
    head = body[:max(start, 0)]
    first = _STYLE.search(head)
    if first is None:
        return body
    css = "\n".join(_STYLE.findall(head))
    name = f"notebook-{hashlib.sha256(css.encode()).hexdigest()[:10]}.css"
    if not (out / name).is_file():
        (out / name).write_text(css, encoding="utf-8")
    link = f'<link rel="stylesheet" href="{name}">\n'
    return head[:first.start()] + link + _STYLE.sub("", head[first.start():]) + body[start:]


def _has_math(nb) -> bool:
    return any("$" in cell.source for cell in nb.cells if cell.cell_type == "markdown")


def render_html(build: str | Path, out: str | Path | None = None, *, about: str = "",
                replace: dict[str, str] | None = None) -> Path:
    """Render BUILD/notebooks/*.ipynb to OUT (default BUILD/html/) with an index.html; return the index path.

    ABOUT is HTML added to the index (the edition's account of its run); REPLACE maps text to put in its place in
    every page (the edition takes this machine's folders out of the paths it shows).
    """
    import nbformat
    from nbconvert import HTMLExporter

    build = Path(build)
    sources = sorted((build / "notebooks").glob("*.ipynb"))
    if not sources:
        raise MalariaError(f"{build / 'notebooks'} holds no executed notebook; run `malaria run` first.")
    out = Path(out) if out is not None else build / "html"
    out.mkdir(parents=True, exist_ok=True)
    notebooks = [nbformat.read(p, as_version=4) for p in sources]
    pages = [(p.stem + ".html", chapter_title(nb)) for p, nb in zip(sources, notebooks, strict=True)]
    stems = {p.stem for p in sources}
    exporter = HTMLExporter(template_name="lab")
    for i, (nb, (page, title)) in enumerate(zip(notebooks, pages, strict=True)):
        drop_startup_noise(nb)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
        # links between chapters ("02_splitting.ipynb#Section") go to the rendered pages
        body = re.sub(r'href="(?:\./)?(\d\d_[\w-]+)\.ipynb(#[^"]*)?"',
                      lambda m: f'href="{m.group(1)}.html{m.group(2) or ""}"' if m.group(1) in stems else m.group(0),
                      body)
        body = re.sub(r'href="\.\./README\.md(?:#[^"]*)?"', 'href="index.html"', body)  # "All chapters": the index here
        body = _REQUIRE_JS.sub("", body)
        if not _has_math(nb):
            body = _MATHJAX.sub("", body)
        for old, new in (replace or {}).items():
            body = body.replace(old, new)
        body = _share_styles(body, out)
        opening = re.search(r"<body[^>]*>", body)
        if opening:
            body = body[:opening.end()] + _nav(pages, i) + body[opening.end():]
        (out / page).write_text(body, encoding="utf-8")
    (out / "index.html").write_text(_index(pages, _timings(build), about), encoding="utf-8")
    return out / "index.html"


def _timings(build: Path) -> dict:
    try:
        report = json.loads((build / "report.json").read_text())
    except (OSError, ValueError):
        return {}
    return {"profile": report.get("profile"), **report.get("timings", {})}


def _index(pages: list[tuple[str, str]], timings: dict, about: str = "") -> str:
    """The contents page. A list without numbers: the chapter titles carry their own ("3. Tutorial A ...")."""
    items = []
    for page, title in pages:
        seconds = timings.get(page.removesuffix(".html"))
        when = f' <span class="t">({seconds:.0f} s)</span>' if isinstance(seconds, (int, float)) else ""
        items.append(f'<li><a href="{page}">{html.escape(title)}</a>{when}</li>')
    profile = timings.get("profile")
    note = f"<p>Executed with the <code>{html.escape(str(profile))}</code> profile.</p>" if profile else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{TITLE}</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto;padding:0 1em;line-height:1.5}}
.t{{color:#777}} ul.contents{{list-style:none;padding-left:0}}
table.about th{{text-align:left;padding-right:1em;vertical-align:top}}</style></head>
<body><h1>{TITLE}</h1>
<p>A reproducible tutorial: detect malaria-infected red blood cells in microscope images with a
convolutional network, evaluated on patients the model has never seen.</p>{note}
<h2>Contents</h2>
<ul class="contents">
{chr(10).join(items)}
</ul>{about}</body></html>
"""
