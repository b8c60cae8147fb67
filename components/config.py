"""The one pipeline config: a pydantic model with a section per stage, loaded from YAML and
checked once, at the edge. Defaults give the embedded demo run."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.errors import ConfigError

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
DEMO_GROUP_COLUMNS = ["product_category", "region"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    path: str | None = Field(
        None, description="CSV, TSV, JSONL, Parquet file or saved HF dataset dir; unset = embedded demo"
    )
    test_path: str | None = Field(None, description="held-out test file; unset = stratified split of path")
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "hf"] = "auto"
    text_column: str = Field("text", min_length=1)
    label_column: str = Field("label", min_length=1)
    group_columns: list[str] | None = Field(None, description="slice/fairness columns; unset = none (demo: its own)")
    labels: list[str] | None = Field(None, description="declared label set; unset = inferred from train")
    validation_fraction: float = Field(0.1, gt=0.0, le=0.4)
    test_fraction: float = Field(0.15, gt=0.0, le=0.5)
    max_rows: int | None = Field(None, ge=30, description="stratified subsample of the data, for quick runs")
    demo_rows: int = Field(3600, ge=300, le=200_000)
    split_seed: int = Field(42, ge=0)

    @model_validator(mode="after")
    def _demo_groups(self) -> "DataConfig":
        if self.group_columns is None and self.path is None:
            self.group_columns = list(DEMO_GROUP_COLUMNS)
        if self.labels is not None and len(set(self.labels)) < 2:
            raise ValueError("data.labels must declare at least 2 distinct labels")
        return self

    @property
    def groups(self) -> list[str]:
        return list(self.group_columns or [])


Severity = Literal["block", "warn", "off"]


class ValidationConfig(Section):
    on_failure: Literal["block", "warn"] = Field(
        "block", description="block: a failed blocking expectation stops the run (exit 1)"
    )
    severity: dict[str, Severity] = Field(default_factory=dict, description="per-expectation override")
    min_examples_per_class: int = Field(20, ge=1)
    min_text_chars: int = Field(1, ge=0)
    max_text_chars: int = Field(10_000, ge=1)
    max_duplicate_rate: float = Field(0.05, ge=0.0, le=1.0)
    max_leakage_rate: float = Field(0.0, ge=0.0, le=1.0)
    max_class_imbalance: float = Field(20.0, ge=1.0, description="largest / smallest class count")
    max_group_null_rate: float = Field(0.2, ge=0.0, le=1.0)
    max_encoding_issue_rate: float = Field(0.01, ge=0.0, le=1.0)


class SelectionConfig(Section):
    candidates: list[str] = Field(
        default_factory=lambda: [PACKAGED_MINILM, f"{PACKAGED_MINILM}@layers=3"],
        min_length=1,
        description="hub ids, local dirs, 'packaged:all-MiniLM-L6-v2', 'champion'; '@layers=K' keeps K layers",
    )
    include_champion: bool = True
    max_params: int | None = Field(None, ge=1)
    max_latency_ms: float | None = Field(None, gt=0)
    budget_seconds: float = Field(180.0, gt=0)
    probe_rows: int = Field(800, ge=50)
    probe_finetune_steps: int = Field(0, ge=0, description="optional short fine-tune per candidate")
    allow_pickle: bool = False
    objective: Literal["macro_f1", "accuracy"] = "macro_f1"


class TrainingConfig(Section):
    epochs: float = Field(3.0, gt=0, le=100)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(32, ge=1, le=4096)
    grad_accum_steps: int = Field(1, ge=1, le=1024)
    learning_rate: float = Field(1e-4, gt=0, le=1)
    weight_decay: float = Field(0.01, ge=0, le=1)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_length: int = Field(128, ge=8, le=8192)
    seed: int = Field(42, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    freeze_embeddings: bool = False
    freeze_layers: int = Field(0, ge=0)
    adapter: Literal["none", "lora"] = "none"
    lora_r: int = Field(8, ge=1, le=512)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = "none"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    eval_every_steps: int | None = Field(None, ge=1, description="unset = once per epoch")
    early_stopping_patience: int | None = Field(2, ge=1)
    checkpoint_every_steps: int = Field(50, ge=1)
    num_workers: int = Field(0, ge=0, le=64)


class BehaviouralCase(Section):
    kind: Literal["invariance", "directional", "minimum"]
    name: str
    texts: list[str] = Field(min_length=1)
    expected: str | None = Field(None, description="minimum: the label each text must get")
    perturbation: str | None = Field(None, description="invariance/directional: what is applied")
    direction: str | None = Field(None, description="directional: the label whose score must not fall")


class EvaluationConfig(Section):
    bootstrap_samples: int = Field(200, ge=0, le=10_000)
    min_slice_support: int = Field(30, ge=1)
    length_buckets: list[int] = Field(default_factory=lambda: [40, 80, 160])
    drift_sample_rows: int = Field(1000, ge=50)
    behavioural: list[BehaviouralCase] | None = Field(None, description="unset = built-in cases for the demo")


class GateConfig(Section):
    metric: Literal["macro_f1", "accuracy", "weighted_f1"] = "macro_f1"
    tolerance: float = Field(0.01, ge=0, le=1)
    max_slice_drop: float = Field(0.05, ge=0, le=1)
    max_fairness_gap: float = Field(0.25, ge=0, le=1)
    min_behavioural_pass_rate: float = Field(0.8, ge=0, le=1)
    require_beat_baseline: bool = True


class ServingConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    max_batch_size: int = Field(32, ge=1, le=1024)
    max_latency_ms: int = Field(50, ge=1, le=60_000)
    max_items: int = Field(64, ge=1)
    max_text_chars: int = Field(2000, ge=1)
    log_text: Literal["text", "hash"] = "text"
    auth_token_env: str = "TUNEOPS_API_TOKEN"


class MonitoringConfig(Section):
    drift_threshold: float = Field(0.5, gt=0, le=1, description="drifted share of monitored columns")
    min_metric: float = Field(0.6, ge=0, le=1)
    min_rows: int = Field(50, ge=1)
    feedback_path: str | None = None
    monitor_cron: str = "0 * * * *"
    retrain_cron: str = "0 3 * * 1"


class PipelineConfig(Section):
    """Every setting of a tuneops run. ``PipelineConfig()`` is the embedded demo."""

    task: Literal["text-classification"] = "text-classification"
    data: DataConfig = Field(default_factory=DataConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    def config_hash(self) -> str:
        """A short, stable hash of every setting, written into the lineage of each model."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# Paths in a config file are relative to that file; paths given with --set are relative to the cwd.
_PATH_KEYS = (("data", "path"), ("data", "test_path"), ("monitoring", "feedback_path"))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a YAML config (or the defaults), apply ``section.key=value`` overrides, validate.

    Raises ConfigError with one line naming the problem.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
        _resolve_relative_paths(raw, Path(path).resolve().parent)
    for override in overrides or []:
        _apply_override(raw, override)
    return validate_config(raw)


def validate_config(raw: dict[str, Any]) -> PipelineConfig:
    """Validate a plain dict into a PipelineConfig, turning pydantic errors into one line."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError("config: " + "; ".join(_describe(e) for e in error.errors())) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config: file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"config: {path} is a directory, not a YAML file")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config: {path} is not UTF-8 text") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"config: {path} is not valid YAML{at}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config: {path} must hold a mapping of sections, not a {type(loaded).__name__}")
    return loaded


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> None:
    for section, key in _PATH_KEYS:
        block = raw.get(section)
        if isinstance(block, dict) and isinstance(block.get(key), str) and "://" not in block[key]:
            value = Path(block[key]).expanduser()
            if not value.is_absolute():
                block[key] = str(base / value)


def _apply_override(raw: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"config: --set expects section.key=value, got {override!r}")
    dotted, _, text = override.partition("=")
    keys = [k.strip() for k in dotted.split(".")]
    if len(keys) < 2 or not all(keys):
        raise ConfigError(f"config: --set expects section.key=value, got {override!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config: --set {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {location}{_suggestion(error['loc'])}"
    given = error.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r})"
    return f"{location}: {error['msg']}{shown}"


def _suggestion(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = PipelineConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    valid = ", ".join(model.model_fields)
    return f" (did you mean {close[0]}?)" if close else f" (valid keys: {valid})"
