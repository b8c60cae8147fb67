"""The int8 serving path of a text model: its graph exported to ONNX, its weights quantised to int8
by ONNX Runtime's dynamic quantisation, and run by ONNX Runtime.

Chosen at packaging time, never assumed: ``choose_serving_runtime`` builds the int8 graph beside
the weights, scores the test set with it and with the fp32 model, and keeps it only when its
macro-F1 is within ``max_f1_drop`` of the fp32 model's and it is faster on this machine. The
decision, with both figures, goes into the model's manifest and the run record; serving uses
the int8 graph only where the manifest says it passed (``Predictor.from_dir(runtime="packaged")``).

The MatMuls of the encoder (where its time goes) run in int8 with activation scales calibrated
once on training rows, so a text's answer does not depend on its batch (``export_int8``). Image
models stay in fp32: their time is in convolutions, which this path does not quantise.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneops.components.errors import one_line
from tuneops.components.metrics import classification_metrics

logger = logging.getLogger("tuneops.serving")

INT8_GRAPH = "model.int8.onnx"
MANIFEST_KEY = "serving_runtime"
ONNX_INT8 = "onnx-int8"
TORCH = "torch"
# The graph's inputs, in the order a BERT-style encoder takes them; a model without token types
# (RoBERTa, DistilBERT) exports without that input.
_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Rows timed, fp32 against int8, to see that int8 is faster on this machine.
_TIMED_ROWS = 32
# Training rows that fix the int8 activation scales: the ranges settle within a few dozen texts.
CALIBRATION_ROWS = 64
# Opset 17 has LayerNormalization as one operator, which ONNX Runtime runs fused.
_OPSET = 17


@dataclass(frozen=True)
class RuntimeChoice:
    """Which runtime serves the model, and the evidence: test macro-F1 of both, speed-up of int8."""

    runtime: str  # ONNX_INT8 or TORCH
    reason: str
    fp32_macro_f1: float | None = None
    int8_macro_f1: float | None = None
    int8_speedup: float | None = None
    max_f1_drop: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class OnnxClassifier:
    """An ONNX Runtime session over a model's graph: encoded inputs in, logits out."""

    def __init__(self, path: str | Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        # Serving already runs one forward pass at a time per process: spinning threads between
        # passes would only take CPU from tokenisation and HTTP.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [item.name for item in self.session.get_inputs()]

    def logits(self, batch: dict[str, Any]) -> np.ndarray:
        """Logits of one encoded batch (torch tensors or arrays, as ``task.model_inputs`` gives)."""
        feed = {name: np.asarray(batch[name].numpy() if hasattr(batch[name], "numpy") else batch[name],
                                 dtype=np.int64) for name in self.input_names}
        return self.session.run(None, feed)[0]


def export_int8(model, processor, path: str | Path, max_length: int, calibration_texts: list[str]) -> Path:
    """Export ``model`` (a transformers sequence classifier) to ONNX with dynamic batch and sequence
    axes and quantise its MatMuls to int8 into ``path``; the fp32 graph is not kept.

    Static quantisation: the activations' int8 scales are fixed once from ``calibration_texts``
    (training rows, each alone), so a text's answer does not depend on the other texts in its
    batch. Dynamic quantisation takes each batch's range instead, and then one text's
    probabilities moved by up to 0.05 with what it was batched with (measured), which a served
    model must not do. Weights get one scale per output channel: per-tensor scales flipped ~5% of
    a fine-tuned MiniLM's demo test answers.
    """
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    path = Path(path)
    sample = dict(processor(["an example", "another, longer example of a text"], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt"))
    names = [name for name in _TEXT_INPUTS if name in sample]

    class _Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.texts = iter(calibration_texts)

        def get_next(self):
            text = next(self.texts, None)
            if text is None:
                return None
            encoded = processor([str(text)], truncation=True, max_length=max_length, return_tensors="np")
            return {name: encoded[name].astype(np.int64) for name in names}

    fp32 = path.with_name(path.name + ".fp32.partial")
    partial = path.with_name(path.name + ".partial")
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model.eval(), ({name: sample[name] for name in names},), str(fp32),
                input_names=names, output_names=["logits"], opset_version=_OPSET, dynamo=False,
                dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in names}, "logits": {0: "batch"}},
            )
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its advice to run a pre-processing pass first: the export is already clean
        try:
            quantize_static(str(fp32), str(partial), _Calibration(), quant_format=QuantFormat.QOperator,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["MatMul"])
        finally:
            quiet.setLevel(level)
        partial.replace(path)
    finally:
        fp32.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return path


def choose_serving_runtime(predictor, model_dir: str | Path, inputs: list[Any], truth: list[str],
                           fp32_macro_f1: float, max_f1_drop: float, calibration_texts: list[str],
                           enabled: bool = True, min_speedup: float = 1.0) -> RuntimeChoice:
    """Build the int8 graph of ``predictor``'s model into ``model_dir`` and keep it only if it is
    as good (its macro-F1 on the test ``inputs`` within ``max_f1_drop`` of ``fp32_macro_f1``, the
    evaluation's figure for the same rows) and faster; records the choice in the model's manifest.
    ``calibration_texts``: training rows that fix the activations' int8 scales (``CALIBRATION_ROWS``
    are enough). Any failure of the export is reported and leaves the fp32 path. ``min_speedup``: how much
    faster than fp32 int8 must be, timed on a few test rows (tests set 0 to decide on accuracy)."""
    import torch

    model_dir = Path(model_dir)
    graph = model_dir / INT8_GRAPH
    if not enabled:
        return _record(predictor, model_dir, RuntimeChoice(TORCH, "serving.int8 is false"))
    if predictor.task.name != "text-classification":
        return _record(predictor, model_dir, RuntimeChoice(
            TORCH, "int8 serving is built for text models; image models serve in fp32"))
    if not predictor.device.startswith("cpu"):
        # The graph and its check are CPU work, and the speed-up is against CPU fp32: a model
        # trained on a GPU is checked where it was trained, so it serves in fp32 (or on a GPU).
        return _record(predictor, model_dir, RuntimeChoice(
            TORCH, f"the model was evaluated on {predictor.device}: the int8 CPU graph is checked on CPU runs only"))
    if not inputs:
        return _record(predictor, model_dir, RuntimeChoice(TORCH, "no test rows to check an int8 model on"))
    try:
        export_int8(predictor.model, predictor.processor, graph, predictor.max_length,
                    [str(text) for text in calibration_texts[:CALIBRATION_ROWS]])
        int8 = OnnxClassifier(graph, torch.get_num_threads())
        int8_probabilities = predictor.predict_proba(inputs, runner=int8)
    except Exception as error:  # an exporter or runtime failure must not fail the run: fp32 serves
        graph.unlink(missing_ok=True)
        return _record(predictor, model_dir, RuntimeChoice(TORCH, f"int8 export failed: {one_line(error, 300)}"))
    fp32_f1 = float(fp32_macro_f1)
    int8_f1 = classification_metrics(truth, int8_probabilities, predictor.labels)["macro_f1"]
    timed = inputs[:_TIMED_ROWS]
    speedup = _best_time(lambda: predictor.predict_proba(timed)) / _best_time(
        lambda: predictor.predict_proba(timed, runner=int8))
    figures = dict(fp32_macro_f1=fp32_f1, int8_macro_f1=int8_f1, int8_speedup=speedup, max_f1_drop=max_f1_drop)
    if fp32_f1 - int8_f1 > max_f1_drop:
        graph.unlink()
        choice = RuntimeChoice(TORCH, f"int8 test macro-F1 {int8_f1:.4f} is more than {max_f1_drop} below "
                                      f"fp32's {fp32_f1:.4f}", **figures)
    elif speedup <= min_speedup:
        graph.unlink()
        choice = RuntimeChoice(TORCH, f"int8 is not faster on this machine ({speedup:.2f}x fp32)", **figures)
    else:
        choice = RuntimeChoice(ONNX_INT8, f"int8 test macro-F1 {int8_f1:.4f} vs fp32 {fp32_f1:.4f}, "
                                          f"{speedup:.2f}x faster", **figures)
    return _record(predictor, model_dir, choice)


def _record(predictor, model_dir: Path, choice: RuntimeChoice) -> RuntimeChoice:
    """Write the choice into the model directory's manifest, where serving reads it."""
    predictor.update_manifest(model_dir, {MANIFEST_KEY: choice.to_json()})
    logger.info("serving runtime: %s (%s)", choice.runtime, choice.reason)
    return choice


def _best_time(call, repeats: int = 2) -> float:
    """The fastest of ``repeats`` calls after one warm-up: the least disturbed by other work."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def packaged_runner(model_dir: str | Path, manifest: dict[str, Any], device: str, threads: int) -> OnnxClassifier | None:
    """The int8 session of a packaged model when its manifest says int8 passed and it runs on CPU; else None."""
    choice = manifest.get(MANIFEST_KEY) or {}
    graph = Path(model_dir) / INT8_GRAPH
    if choice.get("runtime") != ONNX_INT8 or not device.startswith("cpu") or not graph.is_file():
        return None
    return OnnxClassifier(graph, threads)
