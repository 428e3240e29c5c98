"""The `malaria` command as a user types it: installed entry point, synth and models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from malaria_lib.cli import main


def test_console_script_is_installed_and_helps():
    exe = shutil.which("malaria") or f"{sys.executable} -m malaria_lib"
    out = subprocess.run(f"{exe} --help", shell=True, capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("fetch", "inventory", "split", "synth", "models"):
        assert command in out.stdout


def test_synth_then_inventory(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "60", "--patients", "6", "--quiet"]) == 0
    assert "30 Parasitized, 30 Uninfected" in capsys.readouterr().out
    assert main(["inventory", "--data-dir", str(tmp_path / "s"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["patients"] == 6
    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "60", "--quiet"]) == 5  # refuses to overwrite
    assert "error" in capsys.readouterr().err


def test_models_json_lists_exact_parameter_counts(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tutorial_a"]["params"] == 8_417_634 and rows["tutorial_a"]["input_size"] == 128
    assert rows["tutorial_b"]["params"] == 1_900_098 and rows["tutorial_b"]["input_size"] == 125
    assert "malarianet" in rows


def test_every_command_has_working_help(capsys):
    from malaria_lib.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"fetch", "train", "evaluate", "screen", "predict", "run"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0, name
        assert f"usage: malaria {name}" in capsys.readouterr().out


def test_the_readme_lists_every_exit_status_the_cli_uses():
    import re
    from pathlib import Path

    from malaria_lib.errors import EXIT_STATUSES, InTheWay, MalariaError, NetworkError, UsageError

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", readme, re.M))
    assert {int(k): v for k, v in table.items()} == EXIT_STATUSES
    kinds = {MalariaError: 3, UsageError: 2, NetworkError: 4, InTheWay: 5}
    assert {kind: kind.exit_status for kind in kinds} == kinds and set(kinds.values()) <= set(EXIT_STATUSES)


@pytest.mark.parametrize("argv, status", [
    (["models", "--bogus"], 2),  # argparse
    (["train", "--model", "tutorial_b", "--standardize", "--split", "{tmp}", "--out", "{tmp}/o"], 2),  # ours
    (["inventory", "--data-dir", "{tmp}/nowhere"], 3),
    (["synth", "--out", "{tmp}", "--n", "8", "--quiet"], 2),  # 8 cells cannot cover 20 patients
    (["synth", "--out", "{tmp}", "--n", "60", "--patients", "6", "--quiet"], 5),  # tmp_path holds the folder made below
])
def test_each_kind_of_failure_has_its_exit_status(argv, status, tmp_path, capsys):
    (tmp_path / "cell_images").mkdir()
    (tmp_path / "cell_images" / "occupied").write_text("")
    try:
        code = main([arg.format(tmp=tmp_path) for arg in argv])
    except SystemExit as stop:
        code = stop.code
    assert code == status and "error" in capsys.readouterr().err
