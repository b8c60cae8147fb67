"""The command line for scripts: --version, -o json, the config's schema and effective value,
runs listed and shown, --debug after the command, shell completion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tuneops.components.config import PipelineConfig
from tuneops.flows.cli import app, global_flags_first

from tests.e2e.helpers import cli_environment

runner = CliRunner()


def tuneops(*args: str, home: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneops.flows.cli", *args], capture_output=True, text=True,
                          env=cli_environment(home), timeout=timeout)


def test_version_and_completion_options() -> None:
    from importlib import metadata

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"tuneops {metadata.version('tuneops')}\n"
    assert "--install-completion" in runner.invoke(app, ["--help"]).output


def test_the_schema_is_the_configs_and_validates_its_own_defaults() -> None:
    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema == PipelineConfig.model_json_schema()
    assert {"data", "training", "gate", "serving", "monitoring"} <= set(schema["properties"])
    gate = schema["$defs"]["GateConfig"]["properties"]
    assert "infra_validation" in gate


def test_config_show_applies_every_override_and_refuses_a_wrong_key_in_one_line() -> None:
    shown = runner.invoke(app, ["config", "show", "--set", "training.epochs=3", "--set", "task=image-classification"])
    assert shown.exit_code == 0, shown.output
    effective = yaml.safe_load(shown.stdout)
    assert effective["training"]["epochs"] == 3 and effective["task"] == "image-classification"
    # The effective config is a valid config as it stands: it loads back to the same model.
    assert PipelineConfig.model_validate(effective) == PipelineConfig.model_validate(
        json.loads(runner.invoke(app, ["config", "show", "-o", "json", "--set", "training.epochs=3",
                                       "--set", "task=image-classification"]).stdout))
    wrong = runner.invoke(app, ["config", "show", "--set", "training.epoch=3"])
    assert wrong.exit_code == 2 and wrong.output.count("\n") == 1
    assert "unknown key training.epoch (did you mean epochs?)" in wrong.output


def test_global_flags_move_in_front_of_the_command_but_not_past_a_double_dash() -> None:
    assert global_flags_first(["run", "--set", "a=b", "--debug"]) == ["--debug", "run", "--set", "a=b"]
    assert global_flags_first(["--debug", "models", "--debug"]) == ["--debug", "models"]
    assert global_flags_first(["runs", "--", "--debug"]) == ["runs", "--", "--debug"]


def test_debug_after_the_command_shows_the_traceback(tmp_path: Path) -> None:
    result = tuneops("config", "show", "--set", "training.epoch=3", "--debug", home=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and result.stderr.rstrip().splitlines()[-1].startswith("error: config:")


def test_a_tiny_run_as_json_then_listed_and_shown(tmp_path: Path) -> None:
    settings = ["--set", "data.max_rows=300", "--set", "training.max_steps=6", "--set", "training.batch_size=16",
                "--set", "selection.candidates=[packaged:all-MiniLM-L6-v2@layers=1]",
                "--set", "evaluation.bootstrap_samples=20", "--set", "gate.infra_validation.enabled=false"]
    result = tuneops("run", *settings, "-o", "json", home=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # stdout is the one document; progress went to stderr
    assert summary["status"] in ("promoted", "rejected") and summary["run_id"]

    listed = tuneops("runs", "-o", "json", home=tmp_path, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [run["run_id"] for run in json.loads(listed.stdout)] == [summary["run_id"]]
    shown = tuneops("runs", "show", summary["run_id"], home=tmp_path, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"run {summary['run_id']}: {summary['status']}" in shown.stdout and "stages: load_data completed" in shown.stdout
    as_json = tuneops("runs", "show", summary["run_id"], "-o", "json", home=tmp_path, timeout=120)
    assert json.loads(as_json.stdout)["run_id"] == summary["run_id"]
    models = tuneops("models", "-o", "json", home=tmp_path, timeout=120)
    assert [model["tag"] for model in json.loads(models.stdout)] == [summary["model_tag"]]
    missing = tuneops("runs", "show", "20250101-120000-a1b2c3", home=tmp_path, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("error: run: no run '20250101-120000-a1b2c3'")

    # No traffic yet: the monitor's one JSON document says so, about the champion it would watch.
    monitored = tuneops("monitor", "--no-trigger", "-o", "json", home=tmp_path, timeout=300)
    assert monitored.returncode == 0, monitored.stderr[-3000:]
    report = json.loads(monitored.stdout)
    promoted = summary["status"] == "promoted"
    assert report["status"] == ("too_little_traffic" if promoted else "no_champion"), report
    assert report["rows"] == 0 and report["champion_tag"] == (summary["model_tag"] if promoted else None)


def test_validate_and_status_as_json(tmp_path: Path) -> None:
    validated = tuneops("validate", "--set", "data.max_rows=300", "-o", "json", home=tmp_path, timeout=300)
    assert validated.returncode == 0, validated.stderr[-2000:]
    report = json.loads(validated.stdout)
    assert report["passed"] is True and report["results"] and report["rows"]["train"] > 0
    status = tuneops("status", "-o", "json", home=tmp_path, timeout=120)
    services = json.loads(status.stdout)
    assert [service["name"] for service in services] == ["postgres", "prefect-server", "prefect-worker", "evidently-ui", "serving"]
    assert all(service["state"] == "not started" for service in services)


def test_the_config_reference_in_the_docs_is_the_one_the_code_generates() -> None:
    from tuneops.flows.config_reference import config_reference

    generated = config_reference(PipelineConfig.model_json_schema(), PipelineConfig().model_dump(mode="json"))
    assert runner.invoke(app, ["config", "reference"]).stdout == generated
    documented = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
    assert documented == generated, "docs/config.md is stale: `tuneops config reference > docs/config.md`"
    # Every key of every section is in it, nested ones by their dotted names.
    for key in ("data.max_bytes", "training.learning_rate", "gate.infra_validation.max_p95_latency_ms",
                "serving.max_request_bytes", "monitoring.monitor_cron"):
        assert f"| `{key}` |" in generated, key
