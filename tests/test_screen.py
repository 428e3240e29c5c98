"""Patient screening: aggregation, the rule and the figures over patients, on synthetic patients with known fractions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from malaria_lib.cli import main
from malaria_lib.errors import MalariaError
from malaria_lib.metrics import proportion_interval
from malaria_lib.screening import any_cell_rule, choose_rule, group_patients, patient_table, screen_scores

P, U = 0, 1  # label codes: Parasitized, Uninfected


def cohort(fractions: dict[str, tuple[int, int]], false_positive: dict[str, int] | None = None,
           missed: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Cells of patients {name: (parasitized, uninfected)}; scores perfect except the given false positives / misses."""
    labels, scores, patients = [], [], []
    for name, (n_par, n_uninf) in fractions.items():
        fp = (false_positive or {}).get(name, 0)
        fn = (missed or {}).get(name, 0)
        labels += [P] * n_par + [U] * n_uninf
        scores += [0.1] * fn + [0.9] * (n_par - fn) + [0.8] * fp + [0.2] * (n_uninf - fp)
        patients += [name] * (n_par + n_uninf)
    return np.array(labels), np.array(scores), patients


VALIDATION = {"C1": (30, 70), "C2": (50, 50), "C3": (80, 20), "C4": (0, 100), "C5": (0, 90)}
TEST = {"C10": (20, 80), "C11": (40, 60), "C12": (70, 30), "C13": (0, 120), "C14": (0, 80), "C15": (25, 75)}


def test_perfect_predictions_give_exact_figures():
    labels, scores, patients = cohort(VALIDATION)
    rule = choose_rule(patient_table(scores, patients, 0.5, labels), 0.5)
    labels, scores, patients = cohort(TEST)
    result = screen_scores(scores, patients, rule, labels, reps=200)
    for row in result.patients:
        assert row["fraction"] == row["labelled_fraction"]
        assert row["verdict"] == row["infected"]
        lo, hi = row["fraction_ci"]
        assert lo <= row["fraction"] <= hi
    s = result.summary
    assert (s["infected"], s["healthy"]) == (4, 2)
    assert s["sensitivity"] == 1.0 and s["specificity"] == 1.0 and s["auc"] == 1.0 and s["fraction_mae"] == 0.0
    assert s["confusion"] == {"tp": 4, "fn": 0, "fp": 0, "tn": 2}
    assert result.notes == []


def test_rule_sits_halfway_across_the_widest_separating_gap():
    labels, scores, patients = cohort(VALIDATION, false_positive={"C4": 4, "C5": 2})
    rows = patient_table(scores, patients, 0.5, labels)
    assert [r["fraction"] for r in rows] == pytest.approx([0.3, 0.5, 0.8, 0.04, 2 / 90])
    rule = choose_rule(rows, 0.5)
    # halfway on the square-root scale, which gives binomial fractions equal noise on both sides
    assert rule.statistic == "fraction" and rule.cutoff == pytest.approx(((0.04 ** 0.5 + 0.3 ** 0.5) / 2) ** 2)
    assert "3 infected, 2 healthy" in rule.chosen_on
    count_rule = choose_rule(rows, 0.5, statistic="count")
    assert count_rule.cutoff == pytest.approx((4 + 30) / 2)


def test_any_positive_cell_fails_healthy_patients_that_the_fraction_rule_clears():
    labels, scores, patients = cohort(VALIDATION, false_positive={"C4": 3})
    rule = choose_rule(patient_table(scores, patients, 0.5, labels), 0.5)
    labels, scores, patients = cohort(TEST, false_positive={"C13": 4, "C14": 2})
    naive = screen_scores(scores, patients, any_cell_rule(0.5), labels, reps=100)
    chosen = screen_scores(scores, patients, rule, labels, reps=100)
    assert naive.summary["specificity"] == 0.0 and naive.summary["sensitivity"] == 1.0
    assert chosen.summary["specificity"] == 1.0
    assert chosen.summary["fraction_mae"] == pytest.approx((4 / 120 + 2 / 80) / 6)


def test_missed_cells_lower_sensitivity_and_intervals_are_exact_binomial():
    labels, scores, patients = cohort(VALIDATION)
    rule = choose_rule(patient_table(scores, patients, 0.5, labels), 0.5)
    labels, scores, patients = cohort(TEST, missed={"C15": 25, "C10": 20})  # every parasitized cell of two patients missed
    s = screen_scores(scores, patients, rule, labels, reps=200).summary
    assert s["sensitivity"] == 0.5 and s["specificity"] == 1.0
    assert s["intervals"]["sensitivity"] == pytest.approx(proportion_interval(2, 4))
    lo, hi = s["intervals"]["sensitivity"]
    assert 0 < lo < 0.5 < hi < 1
    assert proportion_interval(0, 10)[0] == 0.0 and proportion_interval(10, 10)[1] == 1.0


def test_no_healthy_patient_says_what_cannot_be_computed():
    labels, scores, patients = cohort(VALIDATION)
    rule = choose_rule(patient_table(scores, patients, 0.5, labels), 0.5)
    only_infected = {k: v for k, v in TEST.items() if v[0] > 0}
    labels, scores, patients = cohort(only_infected)
    result = screen_scores(scores, patients, rule, labels, reps=100)
    s = result.summary
    assert s["specificity"] is None and s["auc"] is None and s["intervals"]["specificity"] is None
    assert s["sensitivity"] == 1.0
    assert any("No healthy patient" in n and "n/a" in n for n in result.notes)
    assert "specificity n/a" in result.table()


def test_rule_without_healthy_validation_patients_is_a_stated_heuristic():
    labels, scores, patients = cohort({"C1": (30, 70), "C2": (50, 50)}, false_positive={"C1": 7})
    rule = choose_rule(patient_table(scores, patients, 0.5, labels), 0.5)
    assert "heuristic" in rule.chosen_on
    assert rule.cutoff == pytest.approx(2 * 7 / 120)


def test_single_patient_gets_a_verdict_and_a_note():
    labels, scores, patients = cohort({"C7": (20, 80)})
    result = screen_scores(scores, patients, any_cell_rule(0.5), labels, reps=50)
    assert [r["verdict"] for r in result.patients] == [True]
    assert any("Only one patient" in n for n in result.notes)


def test_unlabelled_cells_get_verdicts_only():
    _, scores, patients = cohort({"C1": (30, 70), "C4": (0, 100)})
    result = screen_scores(scores, patients, any_cell_rule(0.5), None, reps=50)
    assert [r["verdict"] for r in result.patients] == [True, False]
    assert "sensitivity" not in result.summary and "no labels" in result.notes[0]


def test_grouping_by_name_or_mapping_and_its_errors(tmp_path):
    names = ["C33P1thinF_IMG_20150619_114756a_cell_179.png", "C1_thinF_IMG_20150604_104722_cell_9.png"]
    assert group_patients(names) == ["C33", "C1"]
    with pytest.raises(MalariaError, match="1 of the 3 cells have no patient key"):
        group_patients([*names, "cell_1.png"])
    with pytest.raises(MalariaError, match="do not cover 1 of the 2 cells"):
        group_patients(names, {names[0]: "C33"})
    with pytest.raises(MalariaError, match="one score per cell"):
        patient_table(np.array([0.5]), ["C1", "C2"], 0.5)


# ---------------------------------------------------------------- the command, on a smoke-trained model


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_root):
    from malaria_lib.split import make_split
    from malaria_lib.train import train

    root = tmp_path_factory.mktemp("screen")
    make_split(synthetic_root, root / "split", "patient", (0.5, 0.25, 0.25), seed=3)
    result = train("malarianet", root / "split", root / "run", "smoke", epochs=1, verbose=0)
    return root, result.best_model


def test_training_stores_the_rule_and_screen_lists_every_patient(trained, capsys):
    root, model = trained
    card = json.loads(model.with_suffix(".json").read_text())
    rule = card["screening"]  # the default rule: a binomial test against healthy validation cells' false positives
    assert rule["statistic"] == "binomial" and 0 < rule["false_positive_rate"] < 1
    assert "validation patients" in rule["chosen_on"]
    assert main(["screen", "--model", str(model), "--split", str(root / "split"), "--json", "--bootstrap", "50"]) == 0
    result = json.loads(capsys.readouterr().out)
    test_rows = [r.split(",") for r in (root / "split" / "manifest.csv").read_text().splitlines()[1:] if r.endswith(",test")]
    assert result["summary"]["cells"] == len(test_rows)
    assert len(result["patients"]) == result["summary"]["patients"] >= 2
    for row in result["patients"]:
        assert set(row) >= {"patient", "cells", "fraction", "fraction_ci", "labelled_fraction", "verdict", "p_healthy"}
        assert row["why"].startswith(f"{row['called_parasitized']} of {row['cells']} cells called parasitized")
        assert row["why"].endswith("infected" if row["verdict"] else "healthy")
    assert sum(r["cells"] for r in result["patients"]) == len(test_rows)
    assert main(["evaluate", "--model", str(model), "--split", str(root / "split"), "--json", "--bootstrap", "50"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["patients"]["patients"] == result["patients"]


def test_screen_bad_inputs(trained, tmp_path, capsys):
    root, model = trained
    cells = sorted((root / "split" / "test" / "Uninfected").iterdir())[:4]
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, path in enumerate(cells):
        shutil.copy(path, flat / f"cell_{i}.png")  # names without a patient key
    assert main(["screen", "--model", str(model), "--data", str(flat)]) == 3
    assert "have no patient key" in capsys.readouterr().err
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("C1,not a list\n")
    assert main(["screen", "--model", str(model), "--data", str(flat), "--patients", str(bad_csv)]) == 3
    assert "not in NIH's format" in capsys.readouterr().err
    partial = tmp_path / "partial.csv"
    partial.write_text("C9P1thinF,['cell_0.png', 'cell_1.png'],,,\n")
    assert main(["screen", "--model", str(model), "--data", str(flat), "--patients", str(partial)]) == 3
    assert "do not cover 2 of the 4 cells" in capsys.readouterr().err
    full = tmp_path / "full.csv"
    full.write_text("C9P1thinF,['cell_0.png', 'cell_1.png', 'cell_2.png', 'cell_3.png'],,,\n")
    assert main(["screen", "--model", str(model), "--data", str(flat), "--patients", str(full), "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert [r["patient"] for r in result["patients"]] == ["C9"] and any("Only one patient" in n for n in result["notes"])
    assert main(["screen", "--model", str(model), "--data", str(tmp_path / "missing")]) == 3
    assert "does not exist" in capsys.readouterr().err


def test_dev_zip_screen_lists_every_test_patient(dev_data, tmp_path, capsys):
    """Real cells: a briefly trained model screens the patients of a patient-level test split of the dev zip."""
    from malaria_lib.split import make_split
    from malaria_lib.train import train

    make_split(dev_data, tmp_path / "split", "patient", (0.7, 0.15, 0.15), seed=1337)
    run = train("malarianet", tmp_path / "split", tmp_path / "run", "smoke", epochs=1, max_train_images=800, verbose=0)
    csvs = sorted(str(p) for p in dev_data.glob("patientid_cellmapping_*.csv"))
    assert main(["screen", "--model", str(run.best_model), "--split", str(tmp_path / "split"), "--patients", *csvs,
                 "--json", "--bootstrap", "100"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = [r.split(",") for r in (tmp_path / "split" / "manifest.csv").read_text().splitlines()[1:]]
    test_patients = {r[-2] for r in rows if r[-1] == "test"}
    assert len(test_patients) >= 5
    assert [r["patient"] for r in result["patients"]] == sorted(test_patients, key=lambda p: int(p[1:]))
    for row in result["patients"]:
        assert 0.0 <= row["fraction"] <= 1.0 and isinstance(row["verdict"], bool)
        assert row["infected"] == (row["labelled_parasitized"] > 0)
    s = result["summary"]
    assert s["healthy"] >= 1 and s["infected"] >= 1
    assert s["cells"] == sum(1 for r in rows if r[-1] == "test")


def _copy_model(model: Path, target: Path, card: dict | str | None) -> Path:
    shutil.copy(model, target)
    if card is not None:
        target.with_suffix(".json").write_text(card if isinstance(card, str) else json.dumps(card))
    return target


def test_screen_changes_a_card_only_when_asked(trained, tmp_path, capsys):
    root, model = trained
    card = json.loads(model.with_suffix(".json").read_text())
    card.pop("screening")
    copy = _copy_model(model, tmp_path / "m.keras", card)
    before = copy.with_suffix(".json").read_bytes()
    args = ["screen", "--model", str(copy), "--split", str(root / "split"), "--json", "--bootstrap", "20"]
    assert main(args) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert copy.with_suffix(".json").read_bytes() == before and any("for this run only" in n for n in notes)
    assert main(args + ["--store-rule"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert "screening" in json.loads(copy.with_suffix(".json").read_text()) and any("stored in" in n for n in notes)


def test_a_card_that_cannot_be_read_is_an_error_naming_it(trained, tmp_path, capsys):
    root, model = trained
    image = str(next((root / "split" / "test" / "Parasitized").iterdir()))
    for i, broken in enumerate(("{not json", json.dumps({"input_size": 96}))):
        copy = _copy_model(model, tmp_path / f"m{i}.keras", broken)
        for command in (["evaluate", "--split", str(root / "split")], ["screen", "--split", str(root / "split")],
                        ["predict", image]):
            assert main([command[0], "--model", str(copy), *command[1:]]) == 3
            assert f"The model card {copy.with_suffix('.json')} cannot be read" in capsys.readouterr().err
    bare = _copy_model(model, tmp_path / "bare.keras", None)  # no card at all: defaults, and a word
    assert main(["predict", image, "--model", str(bare)]) == 0
    assert "no model card" in capsys.readouterr().err
