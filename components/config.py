"""The one pipeline config: a pydantic model with a section per stage, loaded from YAML and
checked once, at the edge. Defaults give the embedded demo run."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneops.components.errors import ConfigError

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
PACKAGED_EFFICIENTNET = "packaged:efficientnet-lite0"
TEXT_TASK = "text-classification"
IMAGE_TASK = "image-classification"
# Digits of the embedded image demo: enough for a model well above the floor in a few CPU minutes.
IMAGE_DEMO_ROWS = 1200
DEMO_GROUP_COLUMNS = ["product_category", "region"]
# data.max_bytes: 2 GB of table is millions of rows, more than a CPU fine-tunes on in a day.
DEFAULT_MAX_DATA_BYTES = 2_000_000_000


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
    image_column: str = Field(
        "image", min_length=1, description="image tasks, table inputs: the column of image paths (relative to the file)"
    )
    label_column: str = Field("label", min_length=1)
    group_columns: list[str] | None = Field(None, description="slice/fairness columns; unset = none (demo: its own)")
    labels: list[str] | None = Field(None, description="declared label set; unset = inferred from train")
    validation_fraction: float | None = Field(
        None, gt=0.0, le=0.4,
        description="share of train held out for early stopping; unset = 10%, more when a class would get too few",
    )
    test_fraction: float = Field(0.15, gt=0.0, le=0.5)
    max_rows: int | None = Field(None, ge=30, description="stratified subsample of the data, for quick runs")
    demo_rows: int = Field(3600, ge=300, le=200_000)
    split_seed: int = Field(42, ge=0)
    # Checked before anything is read: a 2 GB CSV of texts is already several GB in pandas, and
    # a path at the wrong file (a disk image, a log) should be refused, not read until memory ends.
    max_bytes: int = Field(
        DEFAULT_MAX_DATA_BYTES, ge=1,
        description="largest data source read: a table file, a saved dataset's files, or the input files "
                    "(images) that one folder or table names; larger is refused before reading",
    )

    @model_validator(mode="after")
    def _distinct_names(self) -> "DataConfig":
        # Repeats would become duplicate columns or classes: an internal error or a class counted twice.
        if self.labels is not None:
            repeated = _first_repeat(self.labels)
            if repeated is not None:
                raise ValueError(f"data.labels lists {repeated!r} more than once")
            if len(self.labels) < 2:
                raise ValueError("data.labels must declare at least 2 distinct labels")
        groups = self.group_columns or []
        repeated = _first_repeat(groups)
        if repeated is not None:
            raise ValueError(f"data.group_columns lists {repeated!r} more than once")
        if self.label_column in groups:
            raise ValueError(f"data.group_columns names the label column {self.label_column!r} "
                             "(data.label_column); a group must be another column")
        return self

    @property
    def groups(self) -> list[str]:
        """The group columns; unset on the demo = the text demo's own (PipelineConfig sets [] for
        a task whose demo has none)."""
        if self.group_columns is None and self.path is None:
            return list(DEMO_GROUP_COLUMNS)
        return list(self.group_columns or [])


def _first_repeat(values: list[str]) -> str | None:
    """The first value of ``values`` seen before, or None when all are distinct."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


Severity = Literal["block", "warn", "off"]


class ValidationConfig(Section):
    """Data validation (Great Expectations) run before any model work; see docs/validation.md.

    Every check has a severity: ``block`` stops the run, ``warn`` is reported and kept in the
    run record, ``off`` skips it. ``severity`` starts from the defaults below; a config only
    names the checks it changes.
    """

    on_failure: Literal["block", "warn"] = Field(
        "block", description="block: a failed blocking expectation stops the run (exit 1); warn: report only"
    )
    severity: dict[str, Severity] = Field(
        # Defaults: block what would make training or evaluation wrong or meaningless; warn
        # about what a model survives (imbalance has class_weights, groups only feed slices).
        default_factory=lambda: {
            "split_not_empty": "block",
            "columns_present": "block",
            "text_is_string": "block",
            "text_not_null": "block",
            "text_not_blank": "block",
            "text_length": "block",
            "text_html_entities": "warn",
            "text_mojibake": "block",
            "text_control_characters": "block",
            "label_not_null": "block",
            "label_not_float": "block",
            "label_single_type": "block",
            "label_in_set": "block",
            "label_variants": "warn",
            "class_count": "block",
            "min_examples_per_class": "block",
            "class_imbalance": "warn",
            "label_set_unchanged": "block",
            "duplicates": "block",
            "leakage": "block",
            "group_not_mostly_null": "warn",
            "image_decodes": "block",
            "image_pixels": "block",
            "image_size": "block",
            "image_mode": "warn",
        },
        description="per-check severity (block / warn / off); unnamed checks keep their default",
    )
    # GX's data docs pages draw their tables with bootstrap, jQuery and vega loaded from CDNs: with
    # no network they are blank. summary.html shows every check offline, so they are opt-in.
    data_docs: bool = Field(
        False, description="also build Great Expectations' data docs (they need network access to render)"
    )
    min_examples_per_class: int = Field(20, ge=1, description="in train")
    max_classes: int = Field(1000, ge=2, description="more distinct labels than this is not a classification target")
    min_text_chars: int = Field(1, ge=0)
    max_text_chars: int = Field(10_000, ge=1, description="longer cells usually mean a broken quote in the file")
    # Real corpora hold the odd merged or empty message (SMS Spam: one 14,457-character cell in
    # 2,000); such rows are reported and training truncates them, but one must not stop a run.
    max_length_issue_rate: float = Field(
        0.01, ge=0.0, le=1.0, description="share of a split allowed outside min/max_text_chars"
    )
    max_duplicate_rate: float = Field(0.05, ge=0.0, le=1.0, description="repeated texts within one split")
    # Real corpora repeat short texts ("Great product!"), so a few shared rows are normal; more
    # than 2% of a held-out split shared with train inflates its metrics noticeably.
    max_leakage_rate: float = Field(0.02, ge=0.0, le=1.0, description="validation/test rows whose text is in train")
    max_class_imbalance: float = Field(20.0, ge=1.0, description="largest / smallest class count in train")
    max_group_null_rate: float = Field(0.2, ge=0.0, le=1.0)
    max_encoding_issue_rate: float = Field(0.01, ge=0.0, le=1.0, description="per encoding check and split")
    # Image limits. The pixel count is read from the file header before any decoding, so a
    # decompression bomb (a small PNG of 30000x30000 pixels) is refused without being expanded.
    max_image_pixels: int = Field(40_000_000, ge=1, description="width x height of one image")
    max_image_bytes: int = Field(50_000_000, ge=1, description="size of one image file")
    min_image_side: int = Field(8, ge=1, description="pixels; smaller images carry too little to classify")
    max_image_side: int = Field(20_000, ge=1, description="pixels, either side")

    @field_validator("severity", mode="after")
    @classmethod
    def _known_checks(cls, value: dict[str, str]) -> dict[str, str]:
        defaults = cls.model_fields["severity"].default_factory()  # type: ignore[misc]
        unknown = [name for name in value if name not in defaults]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(defaults), n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (checks are: {', '.join(defaults)})"
            raise ValueError(f"unknown check {unknown[0]!r}{hint}")
        return {**defaults, **value}


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
    tie_tolerance: float = Field(
        0.01, ge=0, le=1,
        description="a candidate is only 'better' when the paired interval of its lead clears this margin",
    )
    bootstrap_samples: int = Field(200, ge=0, le=10_000, description="resamples behind the probes' intervals")


class SearchConfig(Section):
    """An optional budgeted hyperparameter search (Optuna) over the recipe's main settings, judged
    on the validation split; see docs/training.md. Off unless ``trials`` is set: each trial is a
    fine-tune, minutes each on a CPU."""

    trials: int = Field(0, ge=0, le=200, description="fine-tunes to try; 0 = no search")
    timeout_seconds: float | None = Field(None, gt=0, description="stop starting trials after this long")
    learning_rate: tuple[float, float] = Field((1e-5, 2e-4), description="log-uniform range")
    epochs: tuple[float, float] = Field((1.0, 8.0), description="uniform range (early stopping still applies)")
    class_weights: list[Literal["none", "balanced"]] = Field(default_factory=lambda: ["none", "balanced"])
    pruning: bool = Field(True, description="stop a trial early when its validation score trails the median")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> "SearchConfig":
        for name in ("learning_rate", "epochs"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be a range [low, high] with 0 < low <= high")
        if not self.class_weights:
            raise ValueError("class_weights must name at least one choice")
        return self


class TrainingConfig(Section):
    """Fine-tuning settings (tuneops.components.training.finetune). See docs/training.md for what each one does."""

    # Unset settings below are decided by the recipe from the data and the model before training
    # (components/training/recipe.py, docs/training.md); a value given here always wins.
    epochs: float | None = Field(None, gt=0, le=100, description="unset = enough optimizer steps for the data size")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int | None = Field(
        None, ge=1, le=4096,
        description="examples per optimizer step, in total over all processes and accumulation micro-batches; "
                    "unset = 16 for small data, 32 otherwise",
    )
    grad_accum_steps: int = Field(
        1, ge=1, le=1024, description="split each step's batch into this many micro-batches (less memory)"
    )
    learning_rate: float | None = Field(None, gt=0, le=1, description="unset = 5e-5, or 5e-4 with an adapter")
    weight_decay: float = Field(0.01, ge=0, le=1)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the gradient norm; unset = no clipping")
    max_length: int | None = Field(
        None, ge=8, le=8192, description="unset = the 95th percentile of the train inputs' lengths, capped by the model"
    )
    seed: int = Field(42, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    image_size: int | None = Field(
        None, ge=32, le=1024, description="images: side of the square model input; unset = from the data, up to the model's"
    )
    freeze_stages: int | None = Field(
        None, ge=0, le=64, description="images: freeze the stem and the first K stages; unset = the recipe decides"
    )
    augment: list[Literal["flip", "crop", "jitter"]] = Field(
        default_factory=lambda: ["flip", "crop", "jitter"],
        description="images: light random changes of training batches (horizontal flip, resized crop, brightness/"
                    "contrast jitter); [] or false = none. Drop flip for handed content (digits, text, arrows)",
    )
    dropout: float | None = Field(None, ge=0, lt=1, description="override every dropout of the model; unset = keep")
    freeze_embeddings: bool = False
    freeze_layers: int = Field(0, ge=0)
    adapter: Literal["none", "lora", "ia3"] = "none"
    adapter_target_modules: list[str] | None = Field(None, description="unset = peft's defaults for the model")
    lora_r: int = Field(8, ge=1, le=512)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    class_weights: Literal["auto", "none", "balanced"] = Field(
        "auto", description="auto = balanced when the largest class is 1.5x the smallest or more"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    eval_every_steps: int | None = Field(None, ge=1, description="unset = once per epoch")
    early_stopping_metric: Literal["macro_f1", "accuracy", "loss"] = "macro_f1"
    early_stopping_patience: int | None = Field(2, ge=1, description="evaluations without improvement; unset = never stop")
    early_stopping_min_delta: float = Field(0.0, ge=0)
    checkpoint_every_steps: int = Field(50, ge=1)
    num_workers: int | None = Field(None, ge=0, le=64, description="data loader workers; unset = 0 on CPU, 2 per GPU")
    threads: int | None = Field(None, ge=1, le=512, description="CPU threads per process; unset = cores / processes")
    processes: int = Field(1, ge=1, le=64, description="data-parallel processes on this machine")
    peak_tflops: float | None = Field(None, gt=0, description="GPU peak for MFU when the GPU is not in the table")
    search: SearchConfig = Field(default_factory=SearchConfig)

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_switch(cls, value: Any) -> Any:
        # true / false switch every augmentation on or off.
        if isinstance(value, bool):
            return ["flip", "crop", "jitter"] if value else []
        return value

    @model_validator(mode="after")
    def _search_in_one_process(self) -> "TrainingConfig":
        if self.search.trials and self.processes > 1:
            raise ValueError("search.trials runs its trials in one process: set processes to 1, or trials to 0")
        return self


class BehaviouralCase(Section):
    kind: Literal["invariance", "directional", "minimum"]
    name: str
    texts: list[str] = Field(min_length=1)
    expected: str | None = Field(None, description="minimum: the label each text must get")
    perturbation: str | None = Field(None, description="invariance/directional: what is applied")
    direction: str | None = Field(None, description="directional: the label whose score must not fall")
    min_pass_rate: float | None = Field(None, ge=0, le=1, description="unset = gate.min_behavioural_pass_rate")
    min_tested: int | None = Field(
        None, ge=1, description="fewer inputs tested: the case is reported but does not gate; unset = it always gates"
    )

    @model_validator(mode="after")
    def _fields_for_kind(self) -> "BehaviouralCase":
        needed = {"minimum": ["expected"], "directional": ["perturbation", "direction"], "invariance": ["perturbation"]}
        missing = [name for name in needed[self.kind] if not getattr(self, name)]
        if missing:
            raise ValueError(f"behavioural case {self.name!r} ({self.kind}) needs {' and '.join(missing)}")
        return self


class EvaluationConfig(Section):
    bootstrap_samples: int = Field(200, ge=0, le=10_000)
    min_slice_support: int = Field(30, ge=1)
    length_buckets: list[int] = Field(default_factory=lambda: [40, 80, 160])
    # 500 training rows are enough for the drift tests and keep evaluate() near a minute on CPU.
    drift_sample_rows: int = Field(500, ge=50)
    behavioural: list[BehaviouralCase] | None = Field(None, description="your own cases; unset = the built-in ones")
    # The demo's hand-written review cases ("The charger broke after two days") say nothing about a
    # user's tweets or tickets, and a gate must never fail a model on another domain's examples.
    demo_cases: bool | None = Field(
        None, description="the demo's directional / minimum review cases; unset = on for the embedded demo only"
    )
    builtin_invariance: bool = Field(True, description="typo / casing / name-swap checks on test texts")
    flip_invariance: bool | None = Field(
        None, description="image task: a built-in mirror-invariance check; unset = on when training.augment flips "
                          "(training on mirrored images says a mirror keeps the label)",
    )
    class_minimum_pass_rate: float | None = Field(
        0.5, ge=0, le=1,
        description="image task: each class's test images must get their label at this rate; unset = no such check",
    )
    behavioural_sample_rows: int = Field(80, ge=5, description="test texts perturbed per built-in check")
    # A pass rate on a handful of inputs is noise: on 2,000 VADER tweets the name-swap check found
    # 4 tweets with a name and rejected a 0.751 macro-F1 model for 3/4.
    builtin_min_tested: int = Field(
        20, ge=1, description="a built-in check that finds fewer inputs to test is reported, not gated"
    )
    min_fairness_class_support: int = Field(
        10, ge=1, description="a group joins a class's fairness gap only with this many true examples of it"
    )
    calibration_bins: int = Field(15, ge=2, le=100)
    evidently_reports: bool = Field(True, description="write the Evidently classification and per-group pages")
    seed: int = Field(0, ge=0)


class InfraValidationConfig(Section):
    """Before the champion pointer moves, the packaged model is served by a real ``bentoml serve``
    on 127.0.0.1 and must answer test inputs as it does in process, in time (TFX's InfraValidator)."""

    enabled: bool = Field(True, description="off: promote on the metrics alone")
    requests: int = Field(8, ge=1, le=200, description="test inputs sent, one request each")
    # One input per request to a warm CPU service takes tens of ms (benchmarks/bench_serving.py);
    # seconds means a model or service that cannot serve in production.
    max_p95_latency_ms: float = Field(2000.0, gt=0, description="p95 of those requests' latency, or the model is refused")
    # Cold start on a busy 2-core machine: bentoml imports, torch loads the weights, one warm-up pass.
    startup_timeout_s: float = Field(240.0, gt=0, le=3600, description="until /readyz must answer 200")


class GateConfig(Section):
    metric: Literal["macro_f1", "accuracy", "weighted_f1"] = "macro_f1"
    tolerance: float = Field(0.01, ge=0, le=1)
    max_slice_drop: float = Field(0.05, ge=0, le=1)
    max_fairness_gap: float = Field(0.25, ge=0, le=1)
    min_behavioural_pass_rate: float = Field(0.8, ge=0, le=1)
    require_beat_baseline: bool = True
    fairness_metrics: list[Literal["equalized_odds_difference", "demographic_parity_difference"]] = Field(
        # Demographic parity also moves with honest differences in label rates between groups
        # (a perfect classifier can fail it), so by default it is reported but does not gate.
        default_factory=lambda: ["equalized_odds_difference"],
        description="gaps held to max_fairness_gap (one-vs-rest per class, max over classes)",
    )
    infra_validation: InfraValidationConfig = Field(default_factory=InfraValidationConfig)


class ServingConfig(Section):
    """The BentoML service (serving/service.py, docs/serving.md). ``tuneops serve`` hands this
    section to the served process as JSON in ``TUNEOPS_SERVING_CONFIG``."""

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    adaptive_batching: bool = Field(True, description="off: each request is one forward pass (for comparison)")
    # 32 texts of review length are one CPU forward pass of ~0.1 s for MiniLM; larger batches
    # add latency and barely add throughput on CPU (benchmarks/bench_serving.py).
    max_batch_size: int = Field(32, ge=2, le=1024, description="texts per forward pass")
    # BentoML's batcher does not wait this long to fill a batch (its window adapts to measured
    # batch times); it is the deadline past which a queued request is shed with 503. Shedding at
    # tens of ms would turn any burst on a CPU into errors, so the default allows a deep queue.
    max_latency_ms: int = Field(5000, ge=10, le=600_000, description="queue deadline before a 503")
    max_items: int = Field(64, ge=1, le=10_000, description="texts per request; more is a 400")
    max_text_chars: int = Field(2000, ge=1, le=1_000_000, description="characters per text; longer is a 400")
    # Both at most validation's defaults (50 MB, 40M pixels), which bound the model's own reads.
    max_image_bytes: int = Field(10_000_000, ge=1, description="bytes per image (decoded from base64); more is a 4xx")
    max_image_pixels: int = Field(40_000_000, ge=1, description="width x height per image, read before decoding")
    max_request_bytes: int | None = Field(
        None, ge=1024, description="request body cap (413 above); unset = what max_items inputs need, at most 64 MiB"
    )
    log_text: Literal["text", "hash"] = Field("text", description="hash: the prediction log keeps sha256, not text")
    keep_images: bool = Field(
        False, description="image task: also keep each served image once, as predictions/images/<sha256>.<format>, "
                           "to label and retrain on; off = the log keeps its hash and descriptors only",
    )
    auth_token_env: str = Field(
        "TUNEOPS_API_TOKEN", min_length=1, description="env var with the bearer token; unset/empty = no auth"
    )
    workers: int = Field(1, ge=1, le=64, description="server processes; torch already uses every core in one")
    # On a machine shared with other busy processes, torch's default (one thread per core)
    # stalls in its thread barriers; 1 thread is then faster and steadier (docs/serving.md).
    torch_threads: int = Field(0, ge=0, le=256, description="intra-op threads for inference; 0 = torch's default")
    # A batch is sorted by length and run in passes of this many texts: on a CPU the cost is
    # proportional to padded tokens, and passes of ~16 pad less than one pass of 32 at no loss
    # of speed per text; a GPU wants the whole batch in one pass.
    forward_batch_size: int = Field(
        0, ge=0, le=4096, description="texts per forward pass; 0 = 16 on CPU (8 with the int8 graph), the whole batch on GPU"
    )
    # Checked at packaging time against the test set, never assumed (components/int8_serving.py).
    int8: bool = Field(
        True, description="text models on CPU: serve an int8 ONNX Runtime graph when packaging finds it as good as fp32"
    )
    int8_max_f1_drop: float = Field(
        0.005, ge=0, le=1, description="the int8 graph is used only if its test macro-F1 is at most this below fp32's"
    )
    runtime: Literal["auto", "torch"] = Field(
        "auto", description="auto = the packaged int8 graph where packaging accepted it, else torch; torch = always fp32"
    )
    request_timeout_s: int = Field(60, ge=1, le=3600)
    reload_check_s: float = Field(1.0, gt=0, le=3600, description="how often the champion pointer is checked")


class MonitoringConfig(Section):
    """The monitoring loop and scheduled retraining (docs/monitoring.md)."""

    drift_threshold: float = Field(0.5, gt=0, le=1, description="drifted share of monitored columns")
    min_metric: float = Field(0.6, ge=0, le=1, description="gate.metric on labelled feedback below this: retrain")
    min_rows: int = Field(50, ge=1, description="fewer predictions since the last run: wait for more")
    # Drift tests and embeddings of a few thousand rows are stable and take seconds on a CPU.
    max_rows: int = Field(5000, ge=50, description="newest predictions compared per run")
    feedback_path: str | None = Field(None, description="labelled rows (text, label) used to score and retrain")
    min_feedback_rows: int = Field(30, ge=1, description="fewer labelled feedback rows: not scored")
    monitor_cron: str = Field("0 * * * *", min_length=9, description="monitor deployment schedule (UTC)")
    retrain_cron: str = Field("0 3 * * 1", min_length=9, description="retrain deployment schedule (UTC)")


class TrackingConfig(Section):
    """Experiment tracking and model registry (docs/tracking.md). Used only when the environment
    names a tracking server (``MLFLOW_TRACKING_URI``, MLflow's own convention); without it nothing
    is logged."""

    experiment: str = Field("tuneops", min_length=1, description="MLflow experiment the runs go to")
    tags: dict[str, str] = Field(default_factory=dict, description="extra tags set on every tracked run")
    registered_model: str = Field(
        "tuneops-classifier", min_length=1, description="registered model each packaged model becomes a version of"
    )
    # A tracking server that is down must cost a run seconds, not MLflow's default of minutes of retries.
    request_timeout_s: float = Field(10.0, gt=0, le=600, description="per request to the tracking server")


class PipelineConfig(Section):
    """Every setting of a tuneops run. ``PipelineConfig()`` is the embedded demo."""

    task: Literal["text-classification", "image-classification"] = TEXT_TASK
    data: DataConfig = Field(default_factory=DataConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _defaults_for_task_and_data(self) -> "PipelineConfig":
        demo = self.data.path is None
        if self.task == IMAGE_TASK:
            if "candidates" not in self.selection.model_fields_set:
                self.selection.candidates = [PACKAGED_EFFICIENTNET]
            if demo and "demo_rows" not in self.data.model_fields_set:
                self.data.demo_rows = IMAGE_DEMO_ROWS
            # The digits demo has no group columns.
            if demo and self.data.group_columns is None:
                self.data.group_columns = []
        if self.evaluation.flip_invariance is None:
            # Flipping training images asserts that a mirror keeps the label: hold the model to it.
            # Digits or text, where it does not, drop flip from the augmentation and lose the check.
            self.evaluation.flip_invariance = self.task == IMAGE_TASK and "flip" in self.training.augment
        if self.evaluation.demo_cases is None:
            # The demo's review cases are text, for the text demo only.
            self.evaluation.demo_cases = demo and self.task == TEXT_TASK
        return self

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


# A config is a few kB; anything this large is a wrong path.
MAX_CONFIG_BYTES = 1_000_000


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config: file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"config: {path} is a directory, not a YAML file")
    if not path.is_file():
        # A FIFO or device would block the read or never end it.
        raise ConfigError(f"config: {path} is not a regular file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config: {path} is {path.stat().st_size:,} bytes; a config file is at most "
                          f"{MAX_CONFIG_BYTES:,}")
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


_TOP_LEVEL_KEYS = ("task",)


def _apply_override(raw: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"config: --set expects section.key=value, got {override!r}")
    dotted, _, text = override.partition("=")
    keys = [k.strip() for k in dotted.split(".")]
    # Top-level settings that are not sections (``task``) are set by their own name.
    top_level = len(keys) == 1 and keys[0] in _TOP_LEVEL_KEYS
    if (len(keys) < 2 and not top_level) or not all(keys):
        raise ConfigError(f"config: --set expects section.key=value (or task=...), got {override!r}")
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
