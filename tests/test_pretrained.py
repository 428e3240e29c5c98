"""Pretrained backbones without internet: input scaling, weights from a file and from a 127.0.0.1 download, the two
training stages (and a resume between them), and every downstream command on a trained backbone."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from malaria_lib import pretrained
from malaria_lib.cli import main
from malaria_lib.errors import NetworkError, UsageError
from malaria_lib.models import MODELS, build_model
from malaria_lib.pretrained import BACKBONES, ImageNetScaling, backbone_layers, set_stage, stage_of

SIZE = 64  # small cells keep these tests quick; the recipes' sizes are tested by the smoke series


def _backbone_weights(name: str, size: int = SIZE) -> keras.Model:
    """The backbone alone (a keras.applications network of the same kind) with recognisable weights."""
    spec = BACKBONES[name]
    app = getattr(keras.applications, spec.application)(input_shape=(size, size, 3), include_top=False,
                                                         weights=None, **dict(spec.kwargs))
    rng = np.random.default_rng(0)
    for weight in app.weights:  # recognisable values, variances kept positive
        weight.assign(np.abs(rng.normal(size=weight.shape)).astype(weight.dtype) * 0.01)
    return app


def _legacy_h5(app: keras.Model, path: Path) -> Path:
    """The format of Keras' own ImageNet files (a legacy HDF5 weights file, matched layer by layer in order)."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, app)
    return path


def _same_backbone(model: keras.Model, app: keras.Model) -> bool:
    mine = [w.numpy() for layer in backbone_layers(model) for w in layer.weights]
    theirs = [w.numpy() for layer in app.layers[1:] for w in layer.weights]
    return len(mine) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True))


def test_weight_table_is_keras_own():
    """Our download table names the files and hashes Keras publishes, so `imagenet` shares Keras' cache."""
    from keras.src.applications import mobilenet_v3, resnet

    mobile, res = BACKBONES["mobilenet_v3_small"], BACKBONES["resnet50"]
    assert mobile.weights_url == mobilenet_v3.BASE_WEIGHT_PATH + mobile.weights_file
    assert mobile.weights_md5 == mobilenet_v3.WEIGHTS_HASHES["small_224_1.0_float"][1]
    assert res.weights_url == resnet.BASE_WEIGHTS_PATH + res.weights_file
    assert res.weights_md5 == resnet.WEIGHTS_HASHES["resnet50"][1]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_backbone_sees_its_imagenet_input(name):
    """Our pipeline gives [0, 1]; the backbone's first layer must get what its ImageNet weights were trained on."""
    x = np.random.default_rng(1).random((2, SIZE, SIZE, 3)).astype("float32")
    model = build_model(name, SIZE)
    scaled = keras.Model(model.input, model.get_layer("imagenet_scaling").output)(x).numpy()
    if name == "resnet50":  # caffe: BGR, ImageNet means subtracted, 0-255
        expected = keras.applications.resnet50.preprocess_input(x * 255.0)
    else:  # MobileNetV3's own preprocessing layer, which we leave out and replace: [-1, 1]
        own = keras.applications.MobileNetV3Small(input_shape=(SIZE, SIZE, 3), include_top=False, weights=None)
        rescaling = next(layer for layer in own.layers if isinstance(layer, keras.layers.Rescaling))
        expected = keras.Model(own.input, rescaling.output)(x * 255.0).numpy()
    np.testing.assert_allclose(scaled, expected, rtol=1e-5, atol=1e-4)
    assert np.ptp(scaled) > 1.5  # not a constant


def test_scaling_layer_survives_saving(tmp_path):
    layer_model = keras.Sequential([keras.Input((4, 4, 3)), ImageNetScaling("caffe")])
    layer_model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(2).random((1, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(again(x), layer_model(x), rtol=1e-6)


@pytest.mark.parametrize("fmt", ["legacy.h5", "weights.h5"])
def test_weights_from_a_local_file(tmp_path, fmt):
    """The offline route: the backbone's weights in a file, given with --weights PATH."""
    app = _backbone_weights("mobilenet_v3_small")
    path = tmp_path / f"w.{fmt}"
    _legacy_h5(app, path) if fmt == "legacy.h5" else app.save_weights(path)
    assert _same_backbone(build_model("mobilenet_v3_small", SIZE, weights=str(path)), app)
    assert not _same_backbone(build_model("mobilenet_v3_small", SIZE, weights=None), app)


def test_a_weights_file_of_another_network_is_refused_in_one_sentence(tmp_path):
    other = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    other.save_weights(tmp_path / "other.weights.h5")
    with pytest.raises(Exception, match="does not fit mobilenet_v3_small") as info:
        build_model("mobilenet_v3_small", SIZE, weights=str(tmp_path / "other.weights.h5"))
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="no such file"):
        build_model("mobilenet_v3_small", SIZE, weights=str(tmp_path / "missing.h5"))


@pytest.fixture()
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1, and its base URL."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_imagenet_weights_download_is_hash_checked_and_cached(tmp_path, served, monkeypatch):
    folder, base = served
    app = _backbone_weights("mobilenet_v3_small")
    weights = _legacy_h5(app, folder / "mnv3.h5")
    md5 = hashlib.md5(weights.read_bytes()).hexdigest()
    spec = dataclasses.replace(BACKBONES["mobilenet_v3_small"], weights_file="mnv3.h5", weights_url=base + "mnv3.h5",
                               weights_md5=md5)
    monkeypatch.setitem(BACKBONES, "mobilenet_v3_small", spec)
    monkeypatch.setattr(pretrained, "CACHE_DIR", str(tmp_path / "keras"))
    model = build_model("mobilenet_v3_small", SIZE, weights="imagenet")
    assert _same_backbone(model, app)
    cached = tmp_path / "keras" / "models" / "mnv3.h5"
    assert cached.read_bytes() == weights.read_bytes()
    weights.unlink()  # the second time comes from the cache
    assert _same_backbone(build_model("mobilenet_v3_small", SIZE, weights="imagenet"), app)

    # a tampered download: one clear sentence, and nothing of it used
    cached.unlink()
    (folder / "mnv3.h5").write_bytes(b"not the weights")
    with pytest.raises(NetworkError, match="damaged") as info:
        build_model("mobilenet_v3_small", SIZE, weights="imagenet")
    assert "\n" not in str(info.value)


def test_no_internet_is_one_sentence_and_exit_status_4(tmp_path, monkeypatch, capsys, synthetic_root):
    spec = dataclasses.replace(BACKBONES["mobilenet_v3_small"], weights_url="http://127.0.0.1:9/nothing.h5",
                               weights_file="nothing.h5")
    monkeypatch.setitem(BACKBONES, "mobilenet_v3_small", spec)
    monkeypatch.setattr(pretrained, "CACHE_DIR", str(tmp_path / "keras"))
    with pytest.raises(NetworkError, match="--weights PATH, or train from scratch with --weights none"):
        pretrained.imagenet_weights("mobilenet_v3_small")
    from malaria_lib.split import make_split

    make_split(synthetic_root, tmp_path / "split", "patient", (0.6, 0.2, 0.2), seed=1)
    code = main(["train", "--model", "mobilenet_v3_small", "--profile", "smoke", "--weights", "imagenet",
                 "--split", str(tmp_path / "split"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 4 and "Cannot download the ImageNet weights for mobilenet_v3_small" in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_or_misplaced_weights_and_models_are_refused(tmp_path, capsys):
    split = str(tmp_path / "nowhere")
    for argv, words in ((["--model", "malarianet", "--weights", "imagenet"], "Only the pretrained backbones"),
                        (["--model", "resnet50", "--profile", "cpu"], "trains only in the full profile"),
                        (["--model", "mobilenet_v3_small", "--weights", str(tmp_path / "x.h5")], "no such file")):
        assert main(["train", *argv, "--split", split, "--out", str(tmp_path / "run")]) == 2
        assert words in capsys.readouterr().err


def test_stages_choose_what_trains():
    model = build_model("mobilenet_v3_small", SIZE)
    head = set_stage(model, "head")
    assert head == 576 * 2 + 2  # the new Dense layer only
    assert stage_of(json.loads(json.dumps(keras.saving.serialize_keras_object(model)))) == "head"
    fine = set_stage(model, "fine_tune", "expanded_conv_9")
    trainable = [layer for layer in backbone_layers(model) if layer.trainable]
    assert trainable[0].name.startswith("expanded_conv_9") and fine > head
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)  # inference mode kept
    assert stage_of(keras.saving.serialize_keras_object(model)) == "fine_tune"
    everything = set_stage(model, "all")
    # from scratch everything trains: what is left are batch normalisation's running statistics
    assert all(w.path.endswith(("moving_mean", "moving_variance")) for w in model.non_trainable_weights)
    assert everything > fine and stage_of(keras.saving.serialize_keras_object(model)) == "all"
    # and its running statistics keep up with a short training (MobileNetV3's own momentum is 0.999)
    norms = [layer for layer in backbone_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.momentum == pretrained.FROM_SCRATCH_BN_MOMENTUM for layer in norms)
    with pytest.raises(UsageError, match="no layer named"):
        set_stage(model, "fine_tune", "no_such_block")


# ---------------------------------------------------------------- training in two stages, and what follows


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory, synthetic_root):
    """mobilenet_v3_small trained with weights from a file: one epoch on the head, one fine-tuning."""
    from malaria_lib.split import make_split
    from malaria_lib.train import train

    root = tmp_path_factory.mktemp("backbone")
    make_split(synthetic_root, root / "split", "patient", (0.6, 0.2, 0.2), seed=1)
    weights = _legacy_h5(_backbone_weights("mobilenet_v3_small", 96), root / "w.h5")
    run = train("mobilenet_v3_small", root / "split", root / "run", "smoke", weights=str(weights), verbose=0,
                max_train_images=64)
    return root, weights, run


def test_two_stages_train_the_head_then_the_top_blocks(two_stage):
    import zipfile

    root, weights, run = two_stage
    settings = json.loads((root / "run" / "settings.json").read_text())
    assert settings["recipe"]["weights"] == str(weights) and settings["recipe"]["frozen_epochs"] == 1
    assert settings["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert len(run.history["epoch"]) == 2
    with zipfile.ZipFile(root / "run" / "last.keras") as archive:
        assert stage_of(json.loads(archive.read("config.json"))) == "fine_tune"
    card = json.loads((root / "run" / "best.json").read_text())
    assert card["model"] == "mobilenet_v3_small" and card["input_size"] == 96 and "screening" in card


def test_a_run_stopped_after_the_head_stage_resumes_into_fine_tuning(two_stage, tmp_path):
    """A kill between the stages: the head-stage checkpoint resumes, recompiled for fine-tuning, with the same
    weights as the run that was never interrupted (CPU, one seed)."""
    from malaria_lib.train import train

    root, weights, run = two_stage
    head_only = train("mobilenet_v3_small", root / "split", tmp_path / "head", "smoke", weights=str(weights),
                      verbose=0, max_train_images=64, epochs=1)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for name in ("history.csv", "last.keras", "best.keras", "random_state.json"):
        shutil.copy(head_only.out_dir / name, resumed / name)
    settings = json.loads((root / "run" / "settings.json").read_text())
    (resumed / "settings.json").write_text(json.dumps(settings, indent=1))
    again = train("mobilenet_v3_small", root / "split", resumed, "smoke", weights=str(weights), verbose=0,
                  max_train_images=64)
    assert again.history["loss"][0] == run.history["loss"][0]
    np.testing.assert_allclose(again.history["loss"], run.history["loss"], rtol=1e-6)
    for a, b in zip(keras.saving.load_model(resumed / "last.keras").weights,
                    keras.saving.load_model(root / "run" / "last.keras").weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_every_command_handles_a_backbone(two_stage, tmp_path, capsys):
    from malaria_lib.artifacts import load_model
    from malaria_lib.explain import grad_cam
    from malaria_lib.pipeline import read_part

    root, _, run = two_stage
    model, split = str(run.best_model), str(root / "split")
    assert main(["evaluate", "--model", model, "--split", split, "--json", "--bootstrap", "20"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert 0 <= evaluated["accuracy"] <= 1 and evaluated["patients"]["summary"]["patients"] >= 1
    assert main(["screen", "--model", model, "--split", split, "--bootstrap", "20"]) == 0
    assert "Rule: infected when" in capsys.readouterr().out
    test_cells = read_part(split, "test").paths[:3]
    assert main(["predict", *test_cells, "--model", model, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    network = load_model(model)
    images = np.random.default_rng(3).random((2, 96, 96, 3)).astype("float32")
    heat = grad_cam(network, images)
    assert heat.shape == (2, 96, 96) and np.isfinite(heat).all()
    assert main(["export", "--model", model, "--split", split, "--out", str(tmp_path / "tflite"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["format"] for row in rows} == {"keras", "tflite float16", "tflite int8"}
    assert all(0 <= row["accuracy"] <= 1 for row in rows)
    assert MODELS["mobilenet_v3_small"].pretrained
