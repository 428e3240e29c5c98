"""Tests for malaria_lib.explain: activations read with Keras, drawn with keract, and Grad-CAM."""

from __future__ import annotations

import keras
import matplotlib
import numpy as np
import pytest
from keras import layers
from matplotlib.figure import Figure

from malaria_lib import explain
from malaria_lib.errors import MalariaError
from malaria_lib.models import build_model

matplotlib.use("Agg")

SIZES = {"tutorial_a": 32, "tutorial_b": 125, "malarianet": 32}


@pytest.fixture(scope="module")
def small_models() -> dict[str, keras.Model]:
    keras.utils.set_random_seed(0)
    return {name: build_model(name, input_size=size) for name, size in SIZES.items()}


def _image(size: int, seed: int = 0, height: int | None = None) -> np.ndarray:
    return np.random.default_rng(seed).random((height or size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("name", list(SIZES))
def test_layer_activations_every_conv_and_pool_in_order(small_models, name):
    model = small_models[name]
    acts = explain.layer_activations(model, _image(SIZES[name]))
    expected = [layer for layer in model.layers if isinstance(layer, layers.Conv2D | layers.MaxPooling2D)]
    assert list(acts) == [layer.name for layer in expected]
    for layer in expected:
        assert acts[layer.name].shape == (1, *layer.output.shape[1:])
    assert all(isinstance(a, np.ndarray) for a in acts.values())


def test_layer_activations_match_a_direct_forward_pass(small_models):
    model = small_models["tutorial_a"]
    image = _image(32, seed=3)
    acts = explain.layer_activations(model, image, layer_types=(layers.Dense,))
    assert list(acts) == [layer.name for layer in model.layers if isinstance(layer, layers.Dense)]
    np.testing.assert_allclose(list(acts.values())[-1], model.predict(image[None], verbose=0), rtol=1e-5, atol=1e-6)


def test_layer_activations_refuses_a_wrong_size(small_models):
    with pytest.raises(MalariaError, match="32x32"):
        explain.layer_activations(small_models["tutorial_a"], _image(40))


def test_show_activations_writes_one_keract_png_per_layer(small_models, tmp_path, capsys):
    acts = explain.layer_activations(small_models["tutorial_a"], _image(32))
    saved = explain.show_activations(acts, save_dir=tmp_path / "acts", fig_size=(3, 3))
    assert [p.name for p in saved] == [f"{i}_{name}.png" for i, name in enumerate(acts)]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in saved)
    assert sorted(p.name for p in (tmp_path / "acts").iterdir()) == sorted(p.name for p in saved)
    assert capsys.readouterr().out == ""  # keract's prints are swallowed


def test_show_activations_returns_figures_without_showing(small_models, capsys):
    import matplotlib.pyplot as plt

    acts = explain.layer_activations(small_models["tutorial_a"], _image(32))
    acts = dict(list(acts.items())[:2])
    figures = explain.show_activations(acts, fig_size=(3, 3))
    assert len(figures) == 2 and all(isinstance(f, Figure) for f in figures)
    assert [f._suptitle.get_text() for f in figures] == list(acts)
    assert len(figures[0].axes) == 36 + 1  # 32 channels on a 6x6 grid, plus keract's colour bar
    assert plt.get_fignums() == []  # nothing left open in pyplot
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name", list(SIZES))
def test_grad_cam_shape_and_range_for_every_model(small_models, name):
    size = SIZES[name]
    count = 1 if name == "tutorial_b" else 3
    images = np.stack([_image(size, seed=i) for i in range(count)])
    heatmaps = explain.grad_cam(small_models[name], images)
    assert heatmaps.shape == (count, size, size)
    assert heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    assert np.isfinite(heatmaps).all()


def test_grad_cam_finds_the_last_feature_map(small_models):
    assert isinstance(explain.last_feature_map(small_models["tutorial_a"]), layers.MaxPooling2D)
    assert isinstance(explain.last_feature_map(small_models["tutorial_b"]), layers.MaxPooling2D)
    assert isinstance(explain.last_feature_map(small_models["malarianet"]), layers.ReLU)


def _top_left_model(height: int = 16, width: int = 24) -> keras.Model:
    """A network whose Parasitized score sees only the top-left quadrant of the image."""
    mask = np.zeros((1, height, width, 1), np.float32)
    mask[:, : height // 2, : width // 2] = 1.0
    inputs = keras.Input((height, width, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = layers.Lambda(lambda t: t * mask, name="focus")(x)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    for name in ("conv", "features"):
        kernel, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([np.full_like(kernel, 0.1), np.zeros_like(bias)])
    kernel, bias = model.layers[-1].get_weights()
    kernel[:, 0], kernel[:, 1] = 1.0, -1.0  # the features are evidence for class 0 (Parasitized)
    model.layers[-1].set_weights([kernel, bias])
    return model


def test_grad_cam_mass_lies_where_the_model_looks():
    model = _top_left_model()
    images = np.stack([_image(24, seed=i, height=16) for i in range(2)])
    heatmaps = explain.grad_cam(model, images)
    assert explain.last_feature_map(model).name == "features"
    assert heatmaps.shape == (2, 16, 24)
    for heat in heatmaps:
        assert heat[:8, :12].sum() / heat.sum() > 0.85
    # the evidence against Parasitized (class 1 here) is nowhere positive, so its map is empty
    assert explain.grad_cam(model, images, class_index=1).max() == 0.0


def test_grad_cam_uses_logits_so_confident_cells_still_get_a_map():
    model = _top_left_model()
    bright = np.full((1, 16, 24, 3), 1.0, np.float32)
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * 100, bias])  # P(Parasitized) saturates to exactly 1.0
    assert model.predict(bright, verbose=0)[0, 0] == 1.0
    assert explain.grad_cam(model, bright).max() == pytest.approx(1.0)


def test_grad_cam_named_layer_and_unknown_layer(small_models):
    model = small_models["tutorial_a"]
    heat = explain.grad_cam(model, _image(32)[None], layer_name=model.layers[1].name)
    assert heat.shape == (1, 32, 32)
    with pytest.raises(MalariaError, match="no layer named"):
        explain.grad_cam(model, _image(32)[None], layer_name="nope")


def test_overlay_heatmap_blends_into_rgb_uint8():
    image = np.zeros((8, 10, 3), np.float32)
    heat = np.zeros((8, 10), np.float32)
    heat[0, 0] = 1.0
    out = explain.overlay_heatmap(image, heat, alpha=0.5)
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] > 50 and out[0, 0, 2] == 0  # jet's top is dark red
    assert out[5, 5, 2] > 50 and out[5, 5, 0] == 0  # jet's bottom is dark blue
    np.testing.assert_array_equal(explain.overlay_heatmap(image, heat, alpha=0.0), 0)
    with pytest.raises(MalariaError):
        explain.overlay_heatmap(image, heat[:4])


def test_show_grad_cam_figure(tmp_path):
    images = np.stack([_image(12, seed=i) for i in range(3)])
    heatmaps = np.random.default_rng(1).random((3, 12, 12))
    fig = explain.show_grad_cam(images, heatmaps, ["a", "b", "c"], save=tmp_path / "cam.png")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["a", "b", "c"]
    assert (tmp_path / "cam.png").is_file()
