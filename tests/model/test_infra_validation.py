"""Infrastructure validation on the session's fine-tuned model: a real `bentoml serve` of the
packaged copy answers test texts as the model does in process; a damaged copy never gets that far."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tuneops.components import registry
from tuneops.components.config import InfraValidationConfig, ServingConfig
from tuneops.components.paths import prediction_log_dir
from tuneops.serving.infra_validation import validate_serving


def _package(finetuned_dir: Path, demo_splits, run_id: str) -> registry.ModelRelease:
    reference = demo_splits.train.head(50).assign(prediction=demo_splits.labels[0])
    return registry.package_model(finetuned_dir, {"run_id": run_id, "gate": "promote"}, reference)


def _log_state() -> dict[str, int]:
    directory = prediction_log_dir()
    return {path.name: path.stat().st_size for path in directory.rglob("*") if path.is_file()} if directory.exists() else {}


def test_the_packaged_model_serves_the_test_texts_as_in_process(finetuned_dir, finetuned, demo_splits,
                                                                  tmp_path) -> None:
    release = _package(finetuned_dir, demo_splits, "infra-ok")
    production_log = _log_state()
    texts = demo_splits.test["text"].head(6).tolist()
    expected = finetuned.predict_proba(texts)
    result = validate_serving(release.tag, texts, expected, finetuned.labels, finetuned.task,
                              InfraValidationConfig(requests=6), ServingConfig(torch_threads=1), tmp_path)
    assert result.passed, result.message
    assert len(result.latencies_ms) == 6 and result.p95_ms > 0
    assert "6 test inputs answered as in process" in result.message
    # The check's own predictions are logged inside its output folder, not in the production log.
    assert list((tmp_path / "home" / "predictions").glob("*.jsonl"))
    assert _log_state() == production_log
    assert Path(result.server_log).is_file()

    # The same server, judged against other "in-process" probabilities, is a mismatch: the check compares.
    shifted = np.roll(expected, 1, axis=1)
    wrong = validate_serving(release.tag, texts[:1], shifted, finetuned.labels, finetuned.task,
                             InfraValidationConfig(requests=1), ServingConfig(torch_threads=1), tmp_path / "again")
    assert not wrong.passed and "request 1:" in wrong.message, wrong.message


def test_a_damaged_packaged_model_fails_before_any_server_starts(finetuned_dir, finetuned, demo_splits,
                                                                tmp_path) -> None:
    release = _package(finetuned_dir, demo_splits, "infra-damaged")
    weights = release.path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    texts = demo_splits.test["text"].head(2).tolist()
    result = validate_serving(release.tag, texts, finetuned.predict_proba(texts), finetuned.labels, finetuned.task,
                              InfraValidationConfig(requests=2), ServingConfig(), tmp_path)
    assert not result.passed
    assert "does not verify" in result.message and "checksum" in result.message, result.message
    assert not (tmp_path / "server.log").exists()
    registry.remove_model(release.tag)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_model_that_verifies_but_does_not_load_fails_as_soon_as_the_service_says_so(
        finetuned_dir, finetuned, demo_splits, tmp_path) -> None:
    # Weights that are garbage from the start: their checksums are recorded as packaged, so the
    # copy verifies, and only loading it in the server shows the problem.
    broken = tmp_path / "broken-model"
    shutil.copytree(finetuned_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file" * 100)
    release = _package(broken, demo_splits, "infra-broken")
    texts = demo_splits.test["text"].head(2).tolist()
    result = validate_serving(release.tag, texts, finetuned.predict_proba(texts), finetuned.labels, finetuned.task,
                              InfraValidationConfig(requests=2, startup_timeout_s=600), ServingConfig(), tmp_path)
    assert not result.passed
    assert "did not start serving: not ready:" in result.message, result.message
    # Answered by the service's own reason, long before the 600 s start-up allowance.
    assert result.startup_s < 300
    registry.remove_model(release.tag)
