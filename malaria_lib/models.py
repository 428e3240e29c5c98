"""The networks the tutorials compare (the two tutorials' and ours), ImageNet-pretrained backbones (`pretrained`),
and a registry to build them by name.

All models take float pixels in [0, 1] (the input pipeline rescales by 1/255 first) and
return a 2-class softmax: index 0 = Parasitized, 1 = Uninfected (alphabetical, as
``image_dataset_from_directory`` orders the class folders). Builders never compile: each
tutorial's training recipe (optimizer, loss, learning rate) is applied by the training code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers

from malaria_lib.errors import UsageError
from malaria_lib.pretrained import BACKBONES, pretrained_model

NUM_CLASSES = 2


def tutorial_a(input_size: int = 128) -> keras.Model:
    """Tutorial A's Keras 2 network, layer for layer, so its results can be reproduced.

    Most of its 8,417,634 parameters (at 128x128) sit in the Flatten -> Dense(128) layer,
    which is why it overfits easily; we keep it unchanged as a faithful baseline.
    """
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="tutorial_a")


def tutorial_b(input_size: int = 125) -> keras.Model:
    """Tutorial B's network, layer for layer (1,900,098 parameters at 125x125).

    Four valid-padded conv/pool blocks shrink the map to 5x5 before a dropout-regularised
    Dense(512) head; kept unchanged as the second faithful baseline.
    """
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = inputs
    for filters in (64, 64, 128, 128):
        x = layers.Conv2D(filters, 3, padding="valid", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(512, activation="relu")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="tutorial_b")


def _conv_bn_relu(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    """Conv without bias (BatchNorm's shift replaces it), then BatchNorm and ReLU."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


@keras.saving.register_keras_serializable(package="malaria_lib")
class CellStandardization(layers.Layer):
    """Each cell's channels brought to mean 0 and standard deviation 1 over the cell's own pixels.

    The stain's colour and brightness differ from slide to slide, that is from patient to patient;
    a network can learn them as a shortcut that fails on a new patient. Measured over the cell only
    (pixels whose brightest channel exceeds `background`; the black surround stays 0), so a small
    cell is not judged by how much black surrounds it. Part of the model, so every later use of the
    saved model (evaluation, export, the explanations) gets the same input.
    """

    def __init__(self, background: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.background = background  # above augmentation's brightened black (<= 0.15), below stained chromatin

    def call(self, images):
        ops = keras.ops
        # compared on the 0-255 scale, where the cut (51 for 0.2) is exact in float16 too: at 0.2, float16's
        # 0.19995 would count pixels of exactly 51/255 as cell in the float16 TF Lite file, moving scores by 0.05
        mask = ops.cast(ops.max(images, axis=-1, keepdims=True) * 255.0 > self.background * 255.0, images.dtype)
        count = ops.maximum(ops.sum(mask, axis=(1, 2), keepdims=True), 1.0)
        mean = ops.sum(images * mask, axis=(1, 2), keepdims=True) / count
        variance = ops.sum(ops.square(images - mean) * mask, axis=(1, 2), keepdims=True) / count
        return (images - mean) / ops.sqrt(variance + 1e-5) * mask

    def get_config(self) -> dict:
        return {**super().get_config(), "background": self.background}


def malarianet(input_size: int = 96, standardize: bool = False) -> keras.Model:
    """Our compact CNN: small, fast on a 2-core CPU, and built to generalise to new patients.

    BatchNorm speeds and stabilises training; global average pooling replaces the huge
    Flatten->Dense head of the tutorials (few parameters, less overfitting to one patient's
    staining); 96x96 input keeps the FLOPs low while parasites (ring forms, a few pixels
    wide on ~130 px cells) remain visible.
    """
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    # float32 even under a mixed_float16 policy (a GPU's full profile): sums over ~9,000 pixels and a division by a
    # standard deviation lose too much in float16, and TF Lite cannot convert the layer's float16 Max
    x = CellStandardization(name="cell_standardization", dtype="float32")(inputs) if standardize else inputs
    for filters in (16, 32, 64):
        x = _conv_bn_relu(x, filters)
        x = _conv_bn_relu(x, filters)
        x = layers.MaxPooling2D(2)(x)
    x = _conv_bn_relu(x, 128)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="malarianet")


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model, its default input size, and which tutorial it reproduces."""

    name: str
    builder: Callable[[int], keras.Model]
    input_size: int
    description: str
    faithful_to: str | None = None
    pretrained: bool = False  # a keras.applications backbone: takes weights, trains in two stages


def _backbone(name: str) -> Callable[..., keras.Model]:
    def build(input_size: int, weights: str | None = None) -> keras.Model:
        return pretrained_model(name, input_size, weights)
    return build


MODELS: dict[str, ModelSpec] = {
    "tutorial_a": ModelSpec(
        "tutorial_a", tutorial_a, 128,
        "Tutorial A's Keras 2 CNN: 3 convs, Flatten, Dense(128); 8.4M parameters.",
        faithful_to="tutorial A",
    ),
    "tutorial_b": ModelSpec(
        "tutorial_b", tutorial_b, 125,
        "Tutorial B's CNN: 4 conv/pool blocks, Dropout(0.5), Dense(512); 1.9M parameters.",
        faithful_to="tutorial B",
    ),
    "malarianet": ModelSpec(
        "malarianet", malarianet, 96,
        "Our compact Conv-BatchNorm-ReLU CNN with global average pooling, for CPU training.",
        faithful_to=None,
    ),
    "mobilenet_v3_small": ModelSpec(
        "mobilenet_v3_small", _backbone("mobilenet_v3_small"), 96,
        "MobileNetV3-Small from keras.applications (ImageNet weights) with a new head; the light backbone.",
        pretrained=True,
    ),
    "resnet50": ModelSpec(
        "resnet50", _backbone("resnet50"), 128,
        "ResNet-50 from keras.applications (ImageNet weights) with a new head: NIH's backbone; for a GPU.",
        pretrained=True,
    ),
}
assert set(BACKBONES) <= set(MODELS)

DEFAULT_MODEL = "malarianet"


def build_model(name: str, input_size: int | None = None, standardize: bool = False,
                weights: str | None = None) -> keras.Model:
    """Build a registered model by name, at its default input size unless one is given.

    `standardize` puts a CellStandardization layer first; only our network takes it (the tutorials
    stay as they were published). `weights` ("imagenet", a file, or None/"none": random) only for the
    pretrained backbones.
    """
    spec = MODELS.get(name)
    if spec is None:
        known = ", ".join(sorted(MODELS))
        raise UsageError(f"Unknown model {name!r}; choose one of: {known}.")
    size = spec.input_size if input_size is None else input_size
    if spec.pretrained:
        if standardize:
            raise UsageError(f"{name} is fed as its ImageNet weights expect; it does not standardize its cells.")
        return spec.builder(size, weights)
    if weights not in (None, "none"):
        raise UsageError(f"Only the pretrained backbones ({', '.join(BACKBONES)}) take weights; {name} starts from "
                         "random weights.")
    if standardize:
        if name != "malarianet":
            raise UsageError(f"Only malarianet can standardize its cells; {name} is kept as its tutorial built it.")
        return spec.builder(size, standardize=True)
    return spec.builder(size)


def float32_copy(model: keras.Model) -> keras.Model:
    """The same network with every layer computing in float32: a mixed_float16 model made fit for export.

    A model trained under mixed precision keeps float32 weights but computes in float16; TF Lite's converter
    cannot take some of its float16 ops, and a file meant for phones gains nothing from them. The copy has the
    same weights, so its scores differ from the mixed model's only by float16 rounding. A float32 model is
    returned as it is.
    """
    def policy_name(layer: keras.Layer) -> str:
        return getattr(layer.dtype_policy, "name", "float32")

    if not any(policy_name(layer).startswith("mixed") for layer in model.layers):
        return model

    def float32(config):
        if isinstance(config, dict):
            if config.get("class_name") == "DTypePolicy" and str(config.get("config", {}).get("name", "")).startswith(
                    "mixed"):
                return {**config, "config": {**config["config"], "name": "float32"}}
            return {key: float32(value) for key, value in config.items()}
        if isinstance(config, list):
            return [float32(value) for value in config]
        return "float32" if isinstance(config, str) and config.startswith("mixed_") else config

    copy = model.__class__.from_config(float32(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def describe_models(names: list[str] | None = None) -> list[dict]:
    """One row per registered model, or per model in NAMES (name, input size, parameter count, description)."""
    rows = []
    for spec in (MODELS[name] for name in (names or MODELS)):
        rows.append({
            "name": spec.name,
            "input_size": spec.input_size,
            "params": spec.builder(spec.input_size).count_params(),
            "description": spec.description,
        })
    return rows


# The settings that decide what a layer computes; names and dtypes do not, so they are left out.
_SETTINGS = ("filters", "kernel_size", "strides", "padding", "activation", "use_bias", "units", "rate", "pool_size",
             "background", "epsilon", "momentum")


def architecture(model: keras.Model) -> list[dict]:
    """Each layer of a network as its kind, its computing settings, output shape and parameter count.

    Why: the chapters write their networks out in full, as a reader would; comparing this description with the
    library's network shows the two are the same network, layer by layer, whatever the layers are called.
    """
    rows = []
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        config = layer.get_config()
        settings = {key: tuple(value) if isinstance(value, list) else value
                    for key, value in config.items() if key in _SETTINGS}
        rows.append({"layer": type(layer).__name__, **settings, "output": tuple(layer.output.shape[1:]),
                     "params": layer.count_params()})
    return rows


def architecture_differences(model: keras.Model, reference: keras.Model) -> list[str]:
    """Where `model` differs from `reference` (empty when they are the same network); one line per difference."""
    mine, theirs = architecture(model), architecture(reference)
    if len(mine) != len(theirs):
        return [f"{len(mine)} layers instead of {len(theirs)}"]
    differences = []
    for index, (row, expected) in enumerate(zip(mine, theirs, strict=True), start=1):
        for key in sorted(set(row) | set(expected)):
            if row.get(key) != expected.get(key):
                differences.append(f"layer {index} ({expected['layer']}): {key} {row.get(key)} instead of "
                                   f"{expected.get(key)}")
    return differences
