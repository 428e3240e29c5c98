"""ImageNet-pretrained backbones from `keras.applications`, with a new head for the two cell classes.

Why pretrained: the first layers of a network trained on a million photographs detect edges, colour blobs and
textures, which cells have too; a new head, and later the top blocks, learn what is specific to parasites from far
fewer cells than a network trained from scratch needs (chapter 10).

Each backbone is fed the way it was trained: our pipeline gives pixels in [0, 1], so a first layer
(`ImageNetScaling`) maps them to what the backbone's ImageNet weights expect, the same arithmetic as its own
`preprocess_input` (a test checks it). The backbone's layers are part of the model itself (not one nested layer),
so Grad-CAM finds its last feature map and the model card, export and evaluation treat it like any other network.

Weights: "imagenet" (downloaded once by `keras.utils.get_file` into Keras' cache, checked against the hash Keras
publishes; the same file Keras' own applications use), a local file (PATH: the route behind a firewall), or
"none" (random, trained from scratch).
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from .errors import MalariaError, NetworkError, UsageError

WEIGHT_CHOICES = ("imagenet", "none")  # or a path to a weights file
HEAD = "head_"  # the layers a backbone model adds on top start with this; the rest (but the input scaling) is backbone
CACHE_DIR: str | None = None  # None: Keras' own cache ($KERAS_HOME or ~/.keras), shared with keras.applications
FROM_SCRATCH_BN_MOMENTUM = 0.9  # batch normalisation's running averages when a backbone trains from random weights
DOWNLOAD_TIMEOUT = 60  # seconds without a byte before a weights download gives up (Keras' own download has none)


@keras.saving.register_keras_serializable(package="malaria_lib")
class ImageNetScaling(layers.Layer):
    """Pixels in [0, 1] to the input a backbone's ImageNet weights were trained on.

    mode "tf": [-1, 1] (MobileNet, EfficientNet without their own rescaling); "caffe": 0-255, RGB to BGR, the
    ImageNet mean per channel subtracted (ResNet-50, VGG-16): `keras.applications.imagenet_utils.preprocess_input`
    applied to pixels * 255.
    """

    CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe"):
            raise ValueError(f"unknown ImageNet scaling {mode!r}")
        self.mode = mode

    def call(self, images):
        if self.mode == "tf":
            return images * 2.0 - 1.0
        bgr = keras.ops.flip(images, axis=-1) * 255.0
        return bgr - keras.ops.convert_to_tensor(self.CAFFE_MEAN_BGR, dtype=images.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


@dataclass(frozen=True)
class Backbone:
    """A keras.applications network and where its ImageNet weights (without the top) come from."""

    name: str
    application: str  # attribute of keras.applications
    scaling: str  # ImageNetScaling mode
    weights_file: str
    weights_url: str
    weights_md5: str  # as published in keras/src/applications (tests/test_pretrained.py checks they agree)
    kwargs: tuple = ()  # more keyword arguments for the application

    def build(self, inputs: keras.KerasTensor, weights: str | None) -> keras.Model:
        application = getattr(keras.applications, self.application)
        return application(input_tensor=inputs, include_top=False, weights=weights, **dict(self.kwargs))


_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"
BACKBONES: dict[str, Backbone] = {
    "mobilenet_v3_small": Backbone(
        "mobilenet_v3_small", "MobileNetV3Small", "tf",
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        _KERAS_WEIGHTS + "mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        "d3e8ec802a04aa4fc771ee12a9a9b836", (("include_preprocessing", False),)),
    "resnet50": Backbone(
        "resnet50", "ResNet50", "caffe",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_WEIGHTS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626"),
}


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def imagenet_weights(name: str, cache_dir: str | Path | None = None) -> Path:
    """The ImageNet weights file of backbone NAME, downloaded into Keras' cache (~/.keras/models) unless there.

    Offline, or when the download is damaged, one sentence says what to do: a local file with --weights PATH, or
    --weights none.
    """
    backbone = BACKBONES[name]
    cache_dir = cache_dir if cache_dir is not None else CACHE_DIR
    if cache_dir is not None:  # Keras falls back to /tmp/.keras for a folder that does not exist yet
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT):
            path = keras.utils.get_file(backbone.weights_file, backbone.weights_url, cache_subdir="models",
                                        file_hash=backbone.weights_md5, hash_algorithm="md5",
                                        cache_dir=None if cache_dir is None else str(cache_dir))
    except ValueError as exc:  # Keras: the hash does not match
        raise NetworkError(f"The ImageNet weights for {name} downloaded from {backbone.weights_url} are damaged "
                           f"({exc}); try again, or give a checked copy with --weights PATH.") from None
    except Exception as exc:  # Keras wraps URL errors in a bare Exception ("URL fetch failure ...")
        raise NetworkError(f"Cannot download the ImageNet weights for {name} from {backbone.weights_url} ({exc}); "
                           f"without internet, fetch {backbone.weights_file} elsewhere and give it with --weights "
                           "PATH, or train from scratch with --weights none.") from None
    return Path(path)


def resolve_weights(name: str, weights: str | None) -> str | None:
    """'imagenet' -> the cached file (downloaded if needed), 'none'/None -> None, a path -> that path, checked."""
    if weights in (None, "none"):
        return None
    if weights == "imagenet":
        return str(imagenet_weights(name))
    path = Path(weights)
    if not path.is_file():
        raise UsageError(f"--weights {weights}: no such file; give 'imagenet', 'none' or the path of a weights file.")
    return str(path)


def pretrained_model(name: str, input_size: int, weights: str | None = None, num_classes: int = 2,
                     dropout: float = 0.2) -> keras.Model:
    """Backbone NAME (from keras.applications, weights: None, 'imagenet' or a file) with a new head: global average
    pooling, dropout and a softmax over the cell classes. The backbone starts frozen (stage 1 of the recipe)."""
    if name not in BACKBONES:
        raise UsageError(f"Unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}.")
    backbone = BACKBONES[name]
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    scaled = ImageNetScaling(backbone.scaling, name="imagenet_scaling")(inputs)
    source = resolve_weights(name, weights)
    try:
        features = backbone.build(scaled, source)
    except (ValueError, OSError) as exc:
        if source is None:
            raise
        raise MalariaError(f"The weights file {source} does not fit {name} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:160]}); give {backbone.weights_file} or a file saved from "
                           f"this network.") from None
    features.trainable = False
    x = layers.GlobalAveragePooling2D(name=HEAD + "pool")(features.output)
    x = layers.Dropout(dropout, name=HEAD + "dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name=HEAD + "dense")(x)
    return keras.Model(inputs, outputs, name=name)


def backbone_layers(model: keras.Model) -> list[keras.Layer]:
    """The layers of a pretrained model that came from the backbone, bottom to top."""
    return [layer for layer in model.layers if not layer.name.startswith(HEAD)
            and not isinstance(layer, (layers.InputLayer, ImageNetScaling))]


def set_stage(model: keras.Model, stage: str, fine_tune_from: str | None = None) -> int:
    """Which layers train, by stage of the recipe; returns the number of trainable weights.

    "head": only the new head (the backbone frozen). "fine_tune": also the backbone's layers from the first one
    whose name starts with FINE_TUNE_FROM upward, except batch normalisation, which stays frozen and so in inference
    mode (Keras' transfer-learning guide: updating its statistics on small batches of cells would undo what the
    backbone learned). "all": every layer, batch normalisation included (training from scratch).
    """
    backbone = backbone_layers(model)
    if stage == "all":
        start = 0
    elif stage == "head":
        start = len(backbone)
    elif stage == "fine_tune":
        start = next((i for i, layer in enumerate(backbone) if layer.name.startswith(fine_tune_from or "")), None)
        if start is None or not fine_tune_from:
            raise UsageError(f"{model.name} has no layer named {fine_tune_from!r}* to fine-tune from.")
    else:
        raise ValueError(f"unknown stage {stage!r}")
    for i, layer in enumerate(backbone):
        layer.trainable = i >= start and (stage == "all" or not isinstance(layer, layers.BatchNormalization))
        if stage == "all" and isinstance(layer, layers.BatchNormalization):
            # from scratch the running statistics must follow the weights within a few thousand steps: MobileNetV3's
            # momentum of 0.999 leaves them so far behind that the network scores like a coin at inference
            # (measured: 95% training accuracy, 54% validation after 6 epochs on the dev subset)
            layer.momentum = min(layer.momentum, FROM_SCRATCH_BN_MOMENTUM)
    return sum(int(keras.ops.size(w)) for w in model.trainable_weights)


def stage_of(config: dict) -> str:
    """The stage a saved pretrained model was in, from its config (layers' trainable flags): "head" when no backbone
    layer trains, "all" when its batch normalisation trains too, else "fine_tune"."""
    rows = [(layer["class_name"], layer["config"].get("trainable") is True)  # layers without weights may omit it
            for layer in config["config"]["layers"] if not layer["config"]["name"].startswith(HEAD)]
    if not any(trainable for _, trainable in rows):
        return "head"
    return "all" if any(trainable for kind, trainable in rows if kind == "BatchNormalization") else "fine_tune"
