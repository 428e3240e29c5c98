"""Export a trained model for phones and small devices: TensorFlow Lite, float16 and int8.

The `.tflite` files run with LiteRT's interpreter (`ai-edge-litert`), because
`tf.lite.Interpreter` is deprecated in TF 2.21.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .artifacts import card_path, load_model, read_card
from .config import POSITIVE
from .errors import MalariaError, UsageError
from .models import CellStandardization, float32_copy
from .pipeline import load_images, read_part

KINDS = ("float16", "int8")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hide what native code writes straight to the process's stderr (file descriptor 2).

    The int8 calibrator prints its settings there and LiteRT announces its XNNPACK delegate;
    neither is something a user can act on. Errors still arrive as Python exceptions.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (some embedded interpreters): nothing to hide
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _quiet_conversion():
    """The converter's chatter off: Keras' signature listing (stdout), TF's INFO logs, native stderr."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        with contextlib.redirect_stdout(io.StringIO()), _native_stderr_silenced():
            yield
    finally:
        logger.setLevel(level)


def _converter(model: keras.Model, kind: str, representative: np.ndarray | None, scratch: Path) -> tf.lite.TFLiteConverter:
    if kind == "float16":
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        return converter
    if representative is None or len(representative) == 0:
        raise MalariaError("int8 export needs representative cells to calibrate; pass a split with a train part.")
    # int8 calibration goes through a SavedModel (Keras 3's model.export), as the TF docs advise.
    model.export(str(scratch / "saved"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(scratch / "saved"))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def batches():
        for image in representative:
            yield [image[None].astype(np.float32)]

    converter.representative_dataset = batches
    return converter


def _float_nodes(model: keras.Model, scratch: Path) -> list[str]:
    """Names of the TF Lite tensors computed by the model's CellStandardization layer (empty without one).

    That layer sums over every pixel of a cell and divides by a standard deviation: in 8 bits its
    intermediate values lose so much that a standardized network's int8 copy fell from 94.7% to 89.7%
    test accuracy (scores moved by up to 0.82). Kept in float32, the int8 file scored 94.3% (0.07).
    """
    names = [layer.name for layer in model.layers if isinstance(layer, CellStandardization)]
    if not names:
        return []
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tf.lite.TFLiteConverter.from_saved_model(str(scratch / "saved")).convert())
    return [t["name"] for t in interpreter.get_tensor_details() if any(n in t["name"] for n in names)]


def _int8_blob(model: keras.Model, representative: np.ndarray | None, scratch: Path) -> bytes:
    converter = _converter(model, "int8", representative, scratch)
    keep_float = _float_nodes(model, scratch)
    if not keep_float:
        return converter.convert()
    # TF Lite's documented way to leave chosen ops unquantized ("selective quantization") goes through its
    # quantization debugger; only the converted model is used, not the debugging statistics.
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=keep_float)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=converter.representative_dataset,
                                                         debug_options=options)
    return debugger.get_nondebug_quantized_model()


def export_tflite(model_path: str | Path, out_dir: str | Path, representative: np.ndarray | None = None,
                  kinds: tuple[str, ...] = KINDS) -> dict[str, Path]:
    """Write `<stem>_<kind>.tflite` for each kind (plus the model card) and return their paths.

    `representative`: a few hundred input images (float in [0, 1]) to calibrate int8 ranges.
    """

    model = float32_copy(load_model(model_path))  # a model trained in mixed precision exports in float32
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for kind in kinds:
        if kind not in KINDS:
            raise UsageError(f"Unknown export kind '{kind}'; choose from {', '.join(KINDS)}.")
        with tempfile.TemporaryDirectory() as scratch, _quiet_conversion():
            blob = (_int8_blob(model, representative, Path(scratch)) if kind == "int8"
                    else _converter(model, kind, representative, Path(scratch)).convert())
        path = out_dir / f"{Path(model_path).stem}_{kind}.tflite"
        path.write_bytes(blob)
        if card_path(model_path).is_file():
            shutil.copyfile(card_path(model_path), path.with_suffix(".json"))
        paths[kind] = path
    return paths


class TFLiteModel:
    """A `.tflite` file behind a small `predict` that matches Keras' for our use."""

    def __init__(self, path: str | Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path)
        if not path.is_file():
            raise MalariaError(f"The TensorFlow Lite file {path} does not exist; export the model first.")
        try:
            with _native_stderr_silenced():
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        except ValueError as exc:
            raise MalariaError(f"{path} is not a valid TensorFlow Lite model ({exc}); export it again.") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_size = int(self.input["shape"][1])
        self._batch = 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of float images in [0, 1]."""
        if self._batch != len(images):
            self.interpreter.resize_tensor_input(self.input["index"], [len(images), *self.input["shape"][1:]])
            with _native_stderr_silenced():  # the first allocation announces LiteRT's XNNPACK delegate
                self.interpreter.allocate_tensors()
            self._batch = len(images)
        self.interpreter.set_tensor(self.input["index"], images.astype(np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def scores(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """P(Parasitized) for every image."""
        parts = [self.predict(images[i:i + batch_size])[:, POSITIVE] for i in range(0, len(images), batch_size)]
        return np.concatenate(parts) if parts else np.zeros(0)


def compare_exports(model_path: str | Path, paths: dict[str, Path], split_dir: str | Path) -> list[dict]:
    """Size and test-split accuracy of the Keras model beside each exported file, at the model's threshold."""

    model = load_model(model_path)
    card = read_card(model_path, model)
    test = read_part(split_dir, "test")
    images = load_images(test.paths, int(model.input_shape[1]), card.get("resize", "bilinear")).astype(np.float32) / 255
    truth = test.labels == POSITIVE
    threshold = float(card.get("threshold", 0.5))
    reference = model.predict(images, verbose=0)[:, POSITIVE]
    rows = [{"format": "keras", "path": str(model_path), "bytes": Path(model_path).stat().st_size,
             "accuracy": float(np.mean((reference >= threshold) == truth)), "max_score_change": 0.0}]
    for kind, path in paths.items():
        scores = TFLiteModel(path).scores(images)
        rows.append({"format": f"tflite {kind}", "path": str(path), "bytes": path.stat().st_size,
                     "accuracy": float(np.mean((scores >= threshold) == truth)),
                     "max_score_change": float(np.max(np.abs(scores - reference)))})
    return rows


def measure_latency(predict: Callable[[np.ndarray], object], image: np.ndarray, runs: int = 100,
                    warmup: int = 10) -> dict:
    """Wall-clock time of `predict` on a batch of one image, in milliseconds, after `warmup` untimed calls.

    Returns the median (the figure to quote: robust to a busy machine's spikes), the 10th and
    90th percentiles and the mean over `runs` timed calls.
    """
    if runs < 1 or warmup < 0:
        raise MalariaError(f"Need at least one timed run and no negative warm-up; got runs={runs}, warmup={warmup}.")
    batch = np.asarray(image, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[None]
    for _ in range(warmup):
        predict(batch)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        predict(batch)
        times[i] = time.perf_counter() - start
    ms = times * 1000
    return {"median_ms": float(np.median(ms)), "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)), "mean_ms": float(ms.mean()), "runs": runs, "warmup": warmup}


def latency_table(model_path: str | Path, paths: dict[str, Path], image: np.ndarray, runs: int = 100,
                  warmup: int = 10, threads: int | None = None) -> list[dict]:
    """CPU latency per image at batch 1: the Keras model, then each exported `.tflite` file.

    Keras is timed through `predict_on_batch`, its fastest call for one small batch (`predict`
    adds a data pipeline per call); LiteRT runs with `threads` threads (None: its default).
    """

    model = load_model(model_path)
    rows = [{"format": "keras", **measure_latency(model.predict_on_batch, image, runs, warmup)}]
    for kind, path in paths.items():
        lite = TFLiteModel(path, threads=threads)
        rows.append({"format": f"tflite {kind}", **measure_latency(lite.predict, image, runs, warmup)})
    return rows
