"""The int8 serving path, on the session's fine-tuned MiniLM: exported, quantised, checked against
the fp32 model on the demo test split, and served only where the check passed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tuneops.components.int8_serving import INT8_GRAPH, MANIFEST_KEY, ONNX_INT8, TORCH, choose_serving_runtime
from tuneops.components.metrics import classification_metrics
from tuneops.components.predictor import MANIFEST, Predictor


@pytest.fixture
def model_copy(finetuned_dir, tmp_path):
    """The session model copied, since the choice writes into the model's folder."""
    return shutil.copytree(finetuned_dir, tmp_path / "model")


def _test_rows(demo_splits):
    test = demo_splits.test
    return test["text"].tolist(), test["label"].astype(str).tolist()


def _calibration(demo_splits):
    return demo_splits.train["text"].head(64).tolist()


def _fp32_macro_f1(predictor, inputs, truth):
    return classification_metrics(truth, predictor.predict_proba(inputs), predictor.labels)["macro_f1"]


def test_an_int8_graph_as_good_as_fp32_is_packaged_and_served(model_copy, demo_splits):
    predictor = Predictor.from_dir(model_copy, device="cpu")
    inputs, truth = _test_rows(demo_splits)
    fp32_f1 = _fp32_macro_f1(predictor, inputs, truth)
    choice = choose_serving_runtime(predictor, model_copy, inputs, truth, fp32_f1, max_f1_drop=0.005,
                                    calibration_texts=_calibration(demo_splits), min_speedup=0.0)

    assert choice.runtime == ONNX_INT8, choice.reason
    assert fp32_f1 - choice.int8_macro_f1 <= 0.005 and choice.fp32_macro_f1 == pytest.approx(fp32_f1)
    assert choice.int8_speedup > 0
    assert json.loads((model_copy / MANIFEST).read_text())[MANIFEST_KEY]["runtime"] == ONNX_INT8
    # The encoder's MatMul weights in int8 (a quarter of their fp32 size); the embedding table
    # (half of MiniLM's bytes) stays fp32.
    assert (model_copy / INT8_GRAPH).stat().st_size < 0.75 * (model_copy / "model.safetensors").stat().st_size

    served = Predictor.from_dir(model_copy, device="cpu", runtime="packaged")
    assert served.runner is not None and Predictor.from_dir(model_copy, device="cpu").runner is None
    int8, fp32 = served.predict_proba(inputs), predictor.predict_proba(inputs)
    assert int8.shape == fp32.shape and np.allclose(int8.sum(axis=1), 1.0, atol=1e-4)
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.95
    assert np.abs(int8 - fp32).max() < 0.2
    # Calibrated scales: a text's answer is the same alone as in a batch of others (what serving's
    # batcher does to it), so the service answers as this process does.
    alone = np.vstack([served.predict_proba([text]) for text in inputs[:12]])
    assert np.abs(alone - int8[:12]).max() < 1e-4
    # Embeddings (monitoring's drift) still come from the model itself.
    assert served.embed(inputs[:4]).shape == predictor.embed(inputs[:4]).shape


def test_an_int8_graph_that_loses_accuracy_is_not_used_and_says_why(model_copy, demo_splits):
    predictor = Predictor.from_dir(model_copy, device="cpu")
    inputs, truth = _test_rows(demo_splits)
    # A tolerance no quantised model can meet: int8 would have to beat fp32 by a whole point.
    choice = choose_serving_runtime(predictor, model_copy, inputs, truth, 0.9, max_f1_drop=-1.0,
                                    calibration_texts=_calibration(demo_splits), min_speedup=0.0)

    assert choice.runtime == TORCH and "below" in choice.reason and choice.int8_macro_f1 is not None
    assert not (model_copy / INT8_GRAPH).exists()
    assert json.loads((model_copy / MANIFEST).read_text())[MANIFEST_KEY]["runtime"] == TORCH
    assert Predictor.from_dir(model_copy, device="cpu", runtime="packaged").runner is None


def test_int8_can_be_switched_off(model_copy, demo_splits):
    predictor = Predictor.from_dir(model_copy, device="cpu")
    inputs, truth = _test_rows(demo_splits)
    choice = choose_serving_runtime(predictor, model_copy, inputs, truth, 0.9, max_f1_drop=0.005,
                                    calibration_texts=[], enabled=False)
    assert (choice.runtime, choice.reason) == (TORCH, "serving.int8 is false")
    assert not (model_copy / INT8_GRAPH).exists()
