"""The measured figures the chapters quote (cross-validation, ablation), shipped inside the package.

They come from benchmarks/results/ in the repository (condensed by benchmarks/reference.py), so that
a chapter opened on its own on Colab, with only the installed package, prints the same tables as a
clone does.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


@cache
def reference_results() -> dict:
    """malaria_lib/results/reference_results.json: keys ablation, cross_validation, patients_out_of_fold, machine, data."""
    return json.loads(resources.files("malaria_lib").joinpath("results/reference_results.json").read_text())
