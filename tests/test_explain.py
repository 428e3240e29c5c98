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


def test_pick_examples_takes_each_outcome_most_confident_first():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1])  # 1 = Parasitized
    scores = np.array([0.9, 0.6, 0.2, 0.45, 0.1, 0.4, 0.8, 0.55, 0.99])
    picks = explain.pick_examples(y, scores, threshold=0.5, per_group=2)
    assert picks == [(8, "Parasitized, found"), (0, "Parasitized, found"),
                     (2, "Parasitized, missed"), (3, "Parasitized, missed"),
                     (4, "Uninfected, correct"), (5, "Uninfected, correct"),
                     (6, "Uninfected, false alarm"), (7, "Uninfected, false alarm")]
    # a group without members is simply absent
    assert [g for _, g in explain.pick_examples(y[:4], scores[:4], 0.5, per_group=1)] == [
        "Parasitized, found", "Parasitized, missed"]
    with pytest.raises(MalariaError, match="one score per cell"):
        explain.pick_examples(y, scores[:3], 0.5)


def test_compare_grad_cam_one_row_per_model_maps_resized(tmp_path):
    cells = np.stack([(_image(20, seed=i) * 255).astype(np.uint8) for i in range(3)])
    maps = {"a": np.random.default_rng(0).random((3, 8, 8)), "b": np.random.default_rng(1).random((3, 20, 20))}
    captions = {"a": ["P 0.1", "P 0.2", "P 0.3"], "b": ["x", "y", "z"]}
    fig = explain.compare_grad_cam(cells, maps, captions, titles=["one", "two", "three"], save=tmp_path / "c.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 9
    assert [ax.get_title() for ax in fig.axes[:3]] == ["one", "two", "three"]
    assert [fig.axes[3 + i].get_title() for i in range(3)] == captions["a"]
    assert [fig.axes[3 * r].get_ylabel() for r in range(3)] == ["cell", "a", "b"]
    assert fig.axes[3].get_images()[0].get_array().shape[:2] == (20, 20)
    assert (tmp_path / "c.png").is_file()
    with pytest.raises(MalariaError, match="one map per cell"):
        explain.compare_grad_cam(cells, {"a": maps["a"][:2]})


def test_heat_by_region_inside_edge_background():
    images = np.zeros((4, 50, 50, 3), np.uint8)
    images[:, 10:40, 10:40] = 180  # a 30x30 cell on black; edge band 2 px (0.04 x 50) either side
    heat = np.zeros((4, 50, 50), np.float32)
    heat[0, 20:30, 20:30] = 1.0  # the middle of the cell
    heat[1, 10:40, 10] = 1.0  # the cell's left column: its outline
    heat[2, 0:3, :] = 1.0  # the black top rows
    regions = explain.heat_by_region(images, heat)
    assert set(regions) == {"inside", "edge", "background", "area_inside", "area_edge", "area_background"}
    np.testing.assert_allclose([regions[r][0] for r in explain.REGIONS], [1, 0, 0])
    np.testing.assert_allclose([regions[r][1] for r in explain.REGIONS], [0, 1, 0])
    np.testing.assert_allclose([regions[r][2] for r in explain.REGIONS], [0, 0, 1])
    assert all(np.isnan(regions[r][3]) for r in explain.REGIONS)  # an empty map
    np.testing.assert_allclose(regions["area_inside"], 26 * 26 / 2500)
    np.testing.assert_allclose(regions["area_edge"], (34 * 34 - 26 * 26) / 2500)
    np.testing.assert_allclose(sum(regions[f"area_{r}"] for r in explain.REGIONS), 1.0)
    assert explain.cell_mask(images.astype(np.float32) / 255).sum() == 4 * 900


def test_heat_by_region_resizes_maps_and_checks_counts():
    images = np.zeros((2, 40, 40, 3), np.uint8)
    images[:, 8:32, 8:32] = 200
    small = np.zeros((2, 10, 10), np.float32)
    small[:, 4:6, 4:6] = 1.0  # the centre, at a quarter of the size
    regions = explain.heat_by_region(images, small)
    assert np.all(regions["inside"] > 0.99)
    with pytest.raises(MalariaError, match="one \\(H, W\\) map per image"):
        explain.heat_by_region(images, small[:1])
