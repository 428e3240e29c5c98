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
    return {name: spec.builder(spec.input_size) for name, spec in models.MODELS.items()}


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
    assert set(models.MODELS) == {"tutorial_a", "tutorial_b", "malarianet"}
    for key, spec in models.MODELS.items():
        assert spec.name == key
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.name = "other"  # frozen dataclass
    assert models.MODELS["malarianet"].faithful_to is None
    assert models.MODELS["tutorial_a"].faithful_to is not None


def test_describe_models_returns_all_three():
    rows = models.describe_models()
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"tutorial_a", "tutorial_b", "malarianet"}
    for row in rows:
        assert set(row) == {"name", "input_size", "params", "description"}
        assert row["description"]
    assert by_name["tutorial_a"]["params"] == 8_417_634
    assert by_name["tutorial_b"]["params"] == 1_900_098
    assert by_name["malarianet"]["input_size"] == 96
