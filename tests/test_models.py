"""Tests for malaria_lib.models: faithful tutorial architectures, outputs, registry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from keras import layers

from malaria_lib import models
from malaria_lib.errors import MalariaError


@pytest.fixture(scope="module")
def built() -> dict:
    """Build each registered model once at its default size (building is the slow part)."""
    return {name: spec.builder(spec.input_size) for name, spec in models.MODELS.items() if not spec.pretrained}


def _signature(model) -> list[tuple]:
    """Layer types with the hyper-parameters that define the tutorial architectures."""
    sig = []
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        if isinstance(layer, layers.Conv2D):
            sig.append(("Conv2D", layer.filters, tuple(layer.kernel_size), layer.padding,
                        layer.activation.__name__))
        elif isinstance(layer, layers.MaxPooling2D):
            sig.append(("MaxPooling2D", tuple(layer.pool_size)))
        elif isinstance(layer, layers.Dense):
            sig.append(("Dense", layer.units, layer.activation.__name__))
        elif isinstance(layer, layers.Dropout):
            sig.append(("Dropout", layer.rate))
        else:
            sig.append((type(layer).__name__,))
    return sig


def test_tutorial_a_exact_param_count(built):
    assert built["tutorial_a"].count_params() == 8_417_634


def test_tutorial_b_exact_param_count(built):
    assert built["tutorial_b"].count_params() == 1_900_098


def test_tutorial_a_layer_sequence(built):
    model = built["tutorial_a"]
    assert model.input_shape == (None, 128, 128, 3)
    assert _signature(model) == [
        ("Conv2D", 32, (3, 3), "same", "relu"),
        ("Conv2D", 32, (3, 3), "same", "relu"),
        ("MaxPooling2D", (2, 2)),
        ("Conv2D", 64, (3, 3), "same", "relu"),
        ("MaxPooling2D", (2, 2)),
        ("Flatten",),
        ("Dense", 128, "relu"),
        ("Dense", 2, "softmax"),
    ]


def test_tutorial_b_layer_sequence(built):
    model = built["tutorial_b"]
    assert model.input_shape == (None, 125, 125, 3)
    blocks = []
    for filters in (64, 64, 128, 128):
        blocks += [("Conv2D", filters, (3, 3), "valid", "relu"), ("MaxPooling2D", (2, 2))]
    assert _signature(model) == blocks + [
        ("Flatten",),
        ("Dropout", 0.5),
        ("Dense", 512, "relu"),
        ("Dense", 2, "softmax"),
    ]


@pytest.mark.parametrize("name", ["tutorial_a", "tutorial_b", "malarianet"])
def test_output_is_two_class_softmax(built, name):
    model = built[name]
    assert model.name == name
    size = models.MODELS[name].input_size
    assert model.input_shape == (None, size, size, 3)
    assert model.output_shape == (None, 2)
    x = np.random.default_rng(0).random((3, size, size, 3), dtype=np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, 2)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_malarianet_is_compact(built):
    params = built["malarianet"].count_params()
    assert params < 500_000
    assert params < built["tutorial_b"].count_params()


def test_builders_do_not_compile(built):
    for model in built.values():
        assert not model.compiled


def test_build_model_default_and_custom_size():
    assert models.DEFAULT_MODEL in models.MODELS
    model = models.build_model("malarianet", input_size=64)
    assert model.input_shape == (None, 64, 64, 3)
    assert model.output_shape == (None, 2)


def test_build_model_unknown_name_lists_known_models():
    with pytest.raises(MalariaError) as info:
        models.build_model("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message
    for name in ("tutorial_a", "tutorial_b", "malarianet"):
        assert name in message


def test_registry_specs_are_consistent():
    assert set(models.MODELS) == {"tutorial_a", "tutorial_b", "malarianet", "mobilenet_v3_small", "resnet50"}
    assert {name for name, spec in models.MODELS.items() if spec.pretrained} == {"mobilenet_v3_small", "resnet50"}
    for key, spec in models.MODELS.items():
        assert spec.name == key
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.name = "other"  # frozen dataclass
    assert models.MODELS["malarianet"].faithful_to is None
    assert models.MODELS["tutorial_a"].faithful_to is not None


def test_describe_models_returns_every_model_or_those_asked_for():
    rows = models.describe_models()
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == set(models.MODELS)
    assert by_name["mobilenet_v3_small"]["params"] == 940_274 and by_name["resnet50"]["params"] == 23_591_810
    assert [r["name"] for r in models.describe_models(["malarianet", "tutorial_a"])] == ["malarianet", "tutorial_a"]
    for row in rows:
        assert set(row) == {"name", "input_size", "params", "description"}
        assert row["description"]
    assert by_name["tutorial_a"]["params"] == 8_417_634
    assert by_name["tutorial_b"]["params"] == 1_900_098
    assert by_name["malarianet"]["input_size"] == 96


def _cells(seed: int = 0) -> np.ndarray:
    """Round 'cells' on black, with a dark spot: enough structure for the standardization to act on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    inside = ((yy - 16) ** 2 + (xx - 16) ** 2 < 13 ** 2)[..., None]
    images = np.clip(rng.normal([0.8, 0.55, 0.6], 0.05, (4, 32, 32, 3)), 0.3, 1.0) * inside
    images[:, 12:15, 14:17] = [0.45, 0.25, 0.55]
    return images.astype(np.float32)


def test_cell_standardization_ignores_the_stain_and_keeps_the_background_black():
    layer = models.CellStandardization()
    cells = _cells()
    out = np.asarray(layer(cells))
    inside = cells.max(axis=-1) > 0.2
    assert np.allclose(out[~inside], 0.0)
    assert np.allclose(out[inside].reshape(4, -1, 3).mean(axis=1), 0.0, atol=1e-4)
    assert np.allclose(out[inside].reshape(4, -1, 3).std(axis=1), 1.0, atol=0.01)
    # another slide: each channel of the cell scaled and shifted (a bluer, darker stain) gives the same input
    restained = np.where(inside[..., None], cells * np.float32([0.7, 0.9, 1.1]) + np.float32([0.0, 0.05, -0.02]), 0.0)
    assert np.allclose(np.asarray(layer(restained.astype(np.float32))), out, atol=0.02)
    assert not np.allclose(restained, cells, atol=0.05)


def test_standardized_malarianet_saves_loads_and_exports(tmp_path):
    import keras

    from malaria_lib.export import TFLiteModel, export_tflite

    keras.utils.set_random_seed(0)
    model = models.build_model("malarianet", 32, standardize=True)
    assert model.layers[1].name == "cell_standardization"
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    cells = _cells(1)
    assert np.allclose(loaded.predict(cells, verbose=0), model.predict(cells, verbose=0), atol=1e-6)
    paths = export_tflite(tmp_path / "m.keras", tmp_path / "export", cells)
    # pixels as files give them (k/255), some exactly at the 0.2 cut (51/255): float16 must draw the same mask
    cells = np.round(cells * 255) / 255
    cells[:, 2:12, 2:12] = 51 / 255
    cells = cells.astype(np.float32)
    float16 = TFLiteModel(paths["float16"]).scores(cells)
    change = np.abs(float16 - model.predict(cells, verbose=0)[:, 0]).max()
    assert change < 0.0005, change
    # int8 keeps the standardization in float32 (in 8 bits it ruined a trained network's scores)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(paths["int8"]))
    tensors = [t for t in interpreter.get_tensor_details() if "cell_standardization" in t["name"]]
    assert tensors and not any(t["dtype"] == np.int8 for t in tensors)
    assert any(t["dtype"] == np.int8 for t in interpreter.get_tensor_details())  # the rest is quantized
    assert np.all(np.isfinite(TFLiteModel(paths["int8"]).scores(cells)))


def test_only_our_network_standardizes():
    with pytest.raises(MalariaError, match="Only malarianet"):
        models.build_model("tutorial_b", standardize=True)


def test_architecture_differences_finds_what_a_literal_port_changed():
    import keras

    from malaria_lib.models import architecture, architecture_differences

    def tutorial_a_written_out(strides: int) -> keras.Model:
        conv = {"padding": "same", "activation": "relu", "strides": strides}
        return keras.Sequential([
            keras.Input((128, 128, 3)), layers.Conv2D(32, 3, **conv), layers.Conv2D(32, 3, **conv),
            layers.MaxPooling2D(2), layers.Conv2D(64, 3, **conv), layers.MaxPooling2D(2), layers.Flatten(),
            layers.Dense(128, activation="relu"), layers.Dense(2, activation="softmax")])

    build_model = models.build_model
    library = build_model("tutorial_a")
    assert architecture_differences(tutorial_a_written_out(1), library) == []
    literal = architecture_differences(tutorial_a_written_out(3), library)
    assert "layer 1 (Conv2D): strides (3, 3) instead of (1, 1)" in literal
    assert any(line.startswith("layer 7 (Dense): params") for line in literal)
    assert architecture_differences(build_model("tutorial_b"), library) == ["12 layers instead of 8"]
    rows = architecture(build_model("malarianet", standardize=True))
    assert rows[0]["layer"] == "CellStandardization" and sum(r["params"] for r in rows) == 147_250
