"""The library's house rules, checked on its source: imports only go down the layers, and never in a circle.

Every import counts, also one inside a function (kept lazy so that `malaria --help` starts without
TensorFlow): lazy imports may only go down too. The statistics layer works on numbers alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "malaria_lib"
# One line each in the README's "How the library is built"; a new module gets a layer here.
LAYERS: dict[str, list[str]] = {
    "core": ["config", "errors", "files", "images", "runtime", "reference"],
    "data": ["download", "patients", "subsets", "fetch", "inventory", "split", "synth"],
    "model": ["pretrained", "models", "augment", "recipes", "pipeline", "artifacts"],
    "stats": ["metrics", "rules", "screening"],
    "ops": ["inference", "calibration", "train", "predict"],
    "workflows": ["evaluate", "screen", "export", "explain", "plots", "evalplots", "workspace", "render", "colab",
                  "series", "edition"],
    "cli": ["cli", "__main__", "__init__"],
}
RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}
LAYER_OF = {module: name for name, modules in LAYERS.items() for module in modules}


def _imports(path: Path) -> set[str]:
    """The malaria_lib modules PATH imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.level == 0 and (node.module or "").startswith("malaria_lib."):
                found.add(node.module.split(".")[1])
            elif node.module == "malaria_lib":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("malaria_lib."))
    return found


GRAPH = {path.stem: _imports(path) for path in sorted(PACKAGE.glob("*.py"))}


def test_every_module_has_a_layer():
    assert set(GRAPH) == set(RANK), f"give these modules a layer: {sorted(set(GRAPH) - set(RANK))}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_go_down(module):
    upward = sorted(t for t in GRAPH[module] if t in RANK and RANK[t] > RANK[module])
    assert not upward, (f"{module} ({LAYER_OF[module]}) imports {', '.join(f'{t} ({LAYER_OF[t]})' for t in upward)}, "
                        "a layer above it: move the shared code down")


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(target):] + [target]))
            if target in GRAPH and not state.get(target):
                visit(target, path + [target])
        state[module] = 2

    for module in GRAPH:
        if not state.get(module):
            visit(module, [module])


@pytest.mark.parametrize("module", LAYERS["stats"])
def test_statistics_need_no_keras(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert not names & {"keras", "tensorflow"}
    assert not {t for t in GRAPH[module] if RANK[t] >= RANK["models"] and LAYER_OF[t] == "model"}


def test_the_check_sees_lazy_and_absolute_imports(tmp_path):
    """An upward import inside a function, or spelt malaria_lib.X, would not slip through."""
    module = tmp_path / "metrics.py"
    module.write_text("import numpy\n\ndef f():\n    from .train import train\n    import malaria_lib.evaluate\n"
                      "    from malaria_lib.screen import screen_model\n")
    found = _imports(module)
    assert found == {"train", "evaluate", "screen"}
    assert all(RANK[t] > RANK["metrics"] for t in found)
