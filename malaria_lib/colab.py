"""Colab badges and install lines of the notebooks, from one setting in pyproject.toml.

Every notebook opens with an "Open in Colab" / "View on GitHub" badge row and has a setup cell
that pip-installs malaria_lib on Colab from `git+REPOSITORY@REF`. Both are derived from
`[tool.malaria] repository` and `ref` so that a fork or a release tag is one edit plus
`malaria badges`, and `malaria badges --check` keeps CI honest about it.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import MalariaError

BADGES_START = "<!-- badges: kept in sync with pyproject.toml by `malaria badges` -->"
BADGES_END = "<!-- /badges -->"
_BADGES = re.compile(re.escape(BADGES_START) + r".*?" + re.escape(BADGES_END), re.S)
_INSTALL = re.compile(r'^MALARIA_LIB = "[^"\n]*"', re.M)
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
GITHUB_BADGE = "https://img.shields.io/badge/view%20on-GitHub-181717?logo=github"


def settings(root: str | Path) -> tuple[str, str]:
    """(repository URL, git reference) from `[tool.malaria]` in ROOT/pyproject.toml."""
    path = Path(root) / "pyproject.toml"
    try:
        text = path.read_text()
    except OSError:
        raise MalariaError(f"Cannot read {path}; run this from the repository's folder.") from None
    try:
        import tomllib

        table = tomllib.loads(text).get("tool", {}).get("malaria", {})
    except ModuleNotFoundError:  # Python 3.10: the two plain string keys are easy to read
        section = text.split("[tool.malaria]", 1)[-1].split("\n[", 1)[0]
        table = dict(re.findall(r'^(\w+)\s*=\s*"([^"]*)"', section, re.M))
    repository, ref = table.get("repository"), table.get("ref")
    if not repository or not ref:
        raise MalariaError(f"{path} lacks `repository` or `ref` under [tool.malaria]; add both (see README).")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository.rstrip("/")):
        raise MalariaError(f"[tool.malaria] repository = {repository!r} is not https://github.com/OWNER/NAME; "
                           "Colab opens notebooks from GitHub only, so fix it in pyproject.toml.")
    return repository.rstrip("/"), ref


def install_target(repository: str, ref: str) -> str:
    """What the setup cell gives pip on Colab."""
    return f"git+{repository}@{ref}"


def badge_row(repository: str, ref: str, path: str) -> str:
    """The marked-up badge row for the notebook at PATH (relative to the repository root)."""
    github = f"{repository}/blob/{ref}/{path}"
    colab = "https://colab.research.google.com/github/" + github.removeprefix("https://github.com/")
    return (f"{BADGES_START}\n[![Open In Colab]({COLAB_BADGE})]({colab}) "
            f"[![View on GitHub]({GITHUB_BADGE})]({github})\n{BADGES_END}")


def refresh(source: str, *, badges: str | None = None, install: str | None = None) -> str:
    """Replace the badge row and/or the MALARIA_LIB install line in one cell's source."""
    if badges is not None:
        source = _BADGES.sub(lambda _: badges, source)
    if install is not None:
        source = _INSTALL.sub(f'MALARIA_LIB = "{install}"', source)
    return source


def sync_badges(root: str | Path, notebooks: list[Path], check: bool = False) -> list[Path]:
    """Bring every notebook's badge row and install line up to date; return the ones that were stale.

    With check=True nothing is written and a notebook lacking the badge markers or the
    `MALARIA_LIB = "..."` line counts as stale; without check, such a notebook is an error.
    """
    import nbformat

    root = Path(root)
    repository, ref = settings(root)
    install = install_target(repository, ref)
    stale = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        rel = path.resolve().relative_to(root.resolve()).as_posix()
        badges = badge_row(repository, ref, rel)
        has_row = any(c.cell_type == "markdown" and _BADGES.search(c.source) for c in nb.cells)
        has_line = any(c.cell_type == "code" and _INSTALL.search(c.source) for c in nb.cells)
        if not (has_row and has_line) and not check:
            raise MalariaError(f"{rel} has no {'badge row' if not has_row else 'MALARIA_LIB install line'} to "
                               "update; copy it from notebooks/01_data.ipynb, then run `malaria badges` again.")
        changed = not (has_row and has_line)
        for cell in nb.cells:
            new = refresh(cell.source, badges=badges if cell.cell_type == "markdown" else None,
                          install=install if cell.cell_type == "code" else None)
            if new != cell.source:
                cell.source, changed = new, True
        if changed:
            stale.append(path)
            if not check:
                nbformat.write(nb, path)
    return stale
