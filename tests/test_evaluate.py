"""evaluate and predict: metrics and intervals, the stored threshold, and every bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from malaria_lib.artifacts import read_card
from malaria_lib.cli import main
from malaria_lib.errors import PARTIAL, MalariaError
from malaria_lib.evaluate import evaluate_scores
from malaria_lib.metrics import bootstrap_intervals, choose_threshold
from malaria_lib.split import make_split
from malaria_lib.train import train


def test_perfect_scores_give_exact_metrics():
    labels = np.array([0, 0, 1, 1, 0, 1])  # 0 = Parasitized
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.3])
    result = evaluate_scores(labels, scores, ["C1", "C1", "C2", "C2", "C3", "C3"], 0.5, reps=200)
    assert all(result.metrics[m] == 1.0 for m in ("accuracy", "sensitivity", "specificity", "precision", "f1", "mcc", "auc"))
    assert result.confusion == {"tp": 3, "fn": 0, "fp": 0, "tn": 3}
    assert [p["accuracy"] for p in result.per_patient] == [1.0, 1.0, 1.0]
    assert result.n_patients == 3


def test_known_confusion_and_intervals_contain_the_estimate():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = np.where(labels == 0, rng.uniform(0.3, 1.0, 400), rng.uniform(0.0, 0.7, 400))
    patients = [f"C{i % 20}" for i in range(400)]
    result = evaluate_scores(labels, scores, patients, 0.5, reps=300)
    y = labels == 0
    pred = scores >= 0.5
    assert result.metrics["sensitivity"] == pytest.approx(np.sum(pred & y) / np.sum(y))
    assert result.metrics["specificity"] == pytest.approx(np.sum(~pred & ~y) / np.sum(~y))
    for name in ("accuracy", "sensitivity", "specificity", "auc"):
        low, high = result.intervals[name]
        assert low <= result.metrics[name] <= high and high - low < 0.3


def test_one_class_reports_what_still_means_something():
    labels = np.zeros(10, int)
    scores = np.linspace(0.1, 0.95, 10)
    result = evaluate_scores(labels, scores, ["C1"] * 10, 0.5, reps=100)
    assert result.metrics["auc"] is None and result.metrics["specificity"] is None and result.metrics["mcc"] is None
    assert result.metrics["sensitivity"] == pytest.approx(0.5)
    assert any("cannot be computed" in n for n in result.notes)
    assert bootstrap_intervals(np.ones(4, int), np.ones(4), ["a"] * 4, 0.5, reps=50)["auc"] is None


def test_threshold_is_chosen_on_validation_scores():
    y = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.30, 0.35, 0.4, 0.1, 0.15, 0.2])  # a model that scores low but separates well
    threshold = choose_threshold(y, scores)
    assert threshold == pytest.approx((0.35 + 0.15) / 2)  # midway between the class medians
    assert 0.2 < choose_threshold(y, scores, "youden") <= 0.30
    assert choose_threshold(y, scores, "fixed") == 0.5
    assert choose_threshold(np.ones(3, int), np.array([0.1, 0.2, 0.3])) == 0.5  # one class only


def test_median_threshold_ignores_a_few_outlying_cells_that_move_youden():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(500, int), np.zeros(500, int)]
    scores = np.r_[rng.uniform(0.6, 1.0, 500), rng.uniform(0.0, 0.4, 500)]
    clean = choose_threshold(y, scores)
    scores[:5] = 0.05  # five parasitized cells the network misses entirely (or mislabelled ones)
    assert abs(choose_threshold(y, scores) - clean) < 0.01
    assert 0.4 <= clean <= 0.6


def test_unknown_threshold_rule_is_refused():
    with pytest.raises(MalariaError, match="Unknown threshold rule 'best'"):
        choose_threshold(np.array([1, 0]), np.array([0.9, 0.1]), "best")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_root):
    root = tmp_path_factory.mktemp("evaluate")
    make_split(synthetic_root, root / "split", "patient", (0.6, 0.2, 0.2), seed=1)
    result = train("malarianet", root / "split", root / "run", "smoke", epochs=1, verbose=0)
    return root, result.best_model


def test_training_stores_a_model_card_with_the_threshold(trained):
    _, model = trained
    card = read_card(model)
    assert card["input_size"] == 96 and card["resize"] == "area" and 0 < card["threshold"] < 1
    assert "validation" in card["threshold_from"]


def test_evaluate_cli_json_on_split_and_on_folder(trained, synthetic_root, capsys):
    root, model = trained
    assert main(["evaluate", "--model", str(model), "--split", str(root / "split"), "--json", "--bootstrap", "100"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "sensitivity", "specificity", "auc", "n_images", "n_patients", "intervals", "confusion"):
        assert key in result
    test_rows = [r for r in (root / "split" / "manifest.csv").read_text().splitlines()[1:] if r.endswith(",test")]
    assert result["n_images"] == len(test_rows)
    assert main(["evaluate", "--model", str(model), "--data", str(synthetic_root), "--json", "--bootstrap", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 120


def test_evaluate_bad_inputs(trained, tmp_path, capsys):
    root, model = trained
    assert main(["evaluate", "--model", str(tmp_path / "none.keras"), "--split", str(root / "split")]) == 3
    assert "does not exist" in capsys.readouterr().err
    corrupt = tmp_path / "bad.keras"
    corrupt.write_bytes(b"not a zip at all")
    assert main(["evaluate", "--model", str(corrupt), "--split", str(root / "split")]) == 3
    assert "cannot be read" in capsys.readouterr().err
    (tmp_path / "empty" / "cell_images" / "Parasitized").mkdir(parents=True)
    assert main(["evaluate", "--model", str(model), "--data", str(tmp_path / "empty")]) == 3
    assert "holds no PNG" in capsys.readouterr().err
    one = tmp_path / "one" / "cell_images" / "Uninfected"
    one.mkdir(parents=True)
    for path in list((root / "split" / "test" / "Uninfected").iterdir())[:5]:
        shutil.copy(path, one / path.name)
    assert main(["evaluate", "--model", str(model), "--data", str(tmp_path / "one"), "--json", "--bootstrap", "50"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["auc"] is None and result["sensitivity"] is None and result["specificity"] is not None


def test_predict_scores_good_files_and_reports_bad_ones(trained, tmp_path, capsys):
    root, model = trained
    good = sorted((root / "split" / "test" / "Parasitized").iterdir())[:3]
    (tmp_path / "broken.png").write_bytes(good[0].read_bytes()[:100])
    (tmp_path / "text.png").write_text("hello")
    from PIL import Image

    Image.open(good[1]).convert("L").resize((300, 200)).save(tmp_path / "gray_big.png")
    args = ["predict", *map(str, good), str(tmp_path / "broken.png"), str(tmp_path / "text.png"),
            str(tmp_path / "gray_big.png"), str(tmp_path / "missing.png"), "--model", str(model), "--json"]
    assert main(args) == PARTIAL, "some files could not be scored: the exit status says so"
    captured = capsys.readouterr()
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads(captured.out)}
    assert all(rows[p.name]["label"] in ("Parasitized", "Uninfected") for p in good)
    assert 0.0 <= rows["gray_big.png"]["probability"] <= 1.0
    assert rows["broken.png"]["error"] and rows["text.png"]["error"] == "not an image"
    assert rows["missing.png"]["error"] == "no such file"
    assert "broken.png: cannot be scored" in captured.err
    assert main(["predict", str(tmp_path / "text.png"), "--model", str(model)]) == 3
    assert "None of the 1 file(s) could be scored" in capsys.readouterr().err
    assert main(["predict", str(good[0]), "--model", str(model)]) == 0


def test_export_tflite_files_load_and_agree_with_keras(trained, tmp_path, capsys):
    root, model = trained
    assert main(["export", "--model", str(model), "--split", str(root / "split"), "--out", str(tmp_path / "x"),
                 "--json"]) == 0
    rows = {r["format"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"keras", "tflite float16", "tflite int8"}
    # The smoke model is barely trained (scores sit near the threshold), so compare scores, not accuracy;
    # accuracy within 1 point is measured on the dev zip (see the export benchmark).
    assert rows["tflite float16"]["max_score_change"] < 0.01
    assert rows["tflite int8"]["max_score_change"] < 0.1
    for kind in ("tflite float16", "tflite int8"):
        assert rows[kind]["bytes"] < rows["keras"]["bytes"]
    assert rows["tflite int8"]["bytes"] < rows["tflite float16"]["bytes"]
    from malaria_lib.errors import MalariaError
    from malaria_lib.export import TFLiteModel

    (tmp_path / "junk.tflite").write_bytes(b"junk")
    with pytest.raises(MalariaError, match="not a valid TensorFlow Lite model"):
        TFLiteModel(tmp_path / "junk.tflite")


def test_a_fresh_process_loads_a_saved_network_with_its_custom_layer(trained):
    """`malaria evaluate` in a new interpreter: nothing else has imported the module that registers
    CellStandardization, so loading must bring it in itself."""
    import subprocess
    import sys

    root, model = trained
    result = subprocess.run([sys.executable, "-m", "malaria_lib", "evaluate", "--model", str(model), "--split",
                             str(root / "split"), "--json", "--bootstrap", "20"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["n_images"] > 0


def test_predict_names_a_hostile_file_and_scores_the_others(trained, tmp_path, capsys):
    from test_fetch import huge_header

    root, model = trained
    good = sorted((root / "split" / "test" / "Parasitized").iterdir())[:2]
    bomb = tmp_path / "C1P1thinF_IMG_1_cell_bomb.png"
    bomb.write_bytes(huge_header(good[0].read_bytes()))
    assert main(["predict", str(good[0]), str(bomb), str(good[1]), "--model", str(model)]) == PARTIAL
    captured = capsys.readouterr()
    assert "cell_bomb.png: cannot be scored" in captured.err and "pixels" in captured.err
    assert captured.out.count("P(Parasitized)=") == 2


def test_evaluate_and_screen_on_a_folder_name_a_broken_file_and_score_the_others(trained, synthetic_root, tmp_path,
                                                                                  capsys):
    _, model = trained
    folder = tmp_path / "data"
    shutil.copytree(synthetic_root / "cell_images", folder / "cell_images")
    victim = sorted((folder / "cell_images" / "Uninfected").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:60])  # the PNG header survives, the pixels do not
    total = sum(1 for _ in (folder / "cell_images").rglob("*.png"))
    assert main(["evaluate", "--model", str(model), "--data", str(folder), "--json", "--bootstrap", "20"]) == PARTIAL
    result = json.loads(capsys.readouterr().out)
    assert result["n_images"] == total - 1 and any(victim.name in note for note in result["notes"])
    assert len(result["unreadable"]) == 1 and victim.name in result["unreadable"][0]
    assert main(["screen", "--model", str(model), "--data", str(folder), "--json", "--bootstrap", "20"]) == PARTIAL
    screened = json.loads(capsys.readouterr().out)
    assert screened["summary"]["cells"] == total - 1 and any(victim.name in note for note in screened["notes"])
    assert len(screened["unreadable"]) == 1 and victim.name in screened["unreadable"][0]
