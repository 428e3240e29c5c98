"""Every number the chapters' prose states is earned: printed by the run, or quoted with its source.

A measured figure (a percentage, a duration, a score such as 0.953) in a markdown cell, or a mention of
"our run", must stand in a paragraph that carries a source marker, `(source: ...)`, naming the run, the data
and the date it comes from, or the publication. A table or a list belongs to the paragraph that introduces
it. Recipe constants and worked examples are not measurements: they are listed in CONSTANTS, by chapter,
with the phrase that holds them. Code (in backticks or fenced) is left out: it says what it does.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MARKER = re.compile(r"[(;] ?source: ")  # "(source: ...)", or "; source: ..." inside a parenthesis
RUN = re.compile(r"\b(?:our|one|in the) (?:`\w+` )?run\b", re.I)
FIGURE = re.compile(r"(?<![\w.^])(?:\d+(?:\.\d+)?\s?%|\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)? ?(?:s|seconds|minutes|min|hours|ms)\b"
                    r"|0\.\d{2,}(?!\d*&deg;))")
# phrases whose figures are settings or arithmetic examples, not results of a run
CONSTANTS: dict[str, tuple[str, ...]] = {
    "*": (r"95%\s+(?:confidence\s+)?intervals?", r"\b70% of the cells", r"70/30", r"15% for"),
    "02": (r"its 70% and 30%", r"70%[^.]*30%"),
    "03": (r"the other 30%", r"&asymp; 0\.0035"),
    "04": (r"first 20%", r"remaining 80%", r"20% of a class"),
    "05": (r"mild \*\*zoom\*\* \(10%\)", r"Label smoothing\*\* \(0\.05\)", r"0\.975 / 0\.025", r"100% sure"),
    "06": (r"about 15% of the patients",),
    "09": (r"specificity on cells of 97%", r"\*f\* is 0\.03", r"called infected 95% of the time", r"at least 2%",
           r"below 5%", r"chance of\s+5%", r"rate of 1%"),
}


def blocks(markdown: str) -> list[str]:
    """Paragraphs; a table joins the paragraph before it (its caption), a list the paragraph that ends in ':'."""
    merged: list[str] = []
    for part in (p for p in re.split(r"\n\s*\n", markdown) if p.strip()):
        table = part.lstrip().startswith("|")
        listed = re.match(r"\s*(?:[-*]|\d+\.) ", part) and merged and merged[-1].rstrip().endswith(":")
        if merged and (table or listed):
            merged[-1] += "\n\n" + part
        else:
            merged.append(part)
    return merged


def unsourced(path: Path) -> list[str]:
    allowed = CONSTANTS["*"] + CONSTANTS.get(path.name[:2], ())
    found = []
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "markdown":
            continue
        for block in blocks(cell.source):
            if MARKER.search(block):
                continue
            text = block
            for phrase in allowed:
                text = re.sub(phrase, "", text)
            text = re.sub(r"```.*?```|`[^`]*`", "", text, flags=re.S)  # code says what it does
            figures = FIGURE.findall(text) + RUN.findall(text)
            if figures:
                found.append(f"{path.name}[{index}]: {', '.join(figures)} in: {block[:90]!r}")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_measured_figure_in_the_prose_names_its_source(path):
    assert unsourced(path) == []


def test_the_check_finds_an_unsourced_figure(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("Our network reached 95.1% on new patients in 6 minutes."),
        nbformat.v4.new_markdown_cell("It reached 95.1% (source: README, reference run, 2026-11-29)."),
        nbformat.v4.new_markdown_cell("We keep 70% of the cells for training and show a 95% interval."),
        nbformat.v4.new_markdown_cell("In our run the network found every infected patient."),
        nbformat.v4.new_markdown_cell("What the runs say (source: README, 2026-11-25):\n\n- 95.1% on new patients"),
    ])
    path = tmp_path / "05_x.ipynb"
    nbformat.write(nb, path)
    assert [line.split(":")[0] for line in unsourced(path)] == ["05_x.ipynb[0]", "05_x.ipynb[3]"]
    assert "95.1%, 6 minutes" in unsourced(path)[0]
