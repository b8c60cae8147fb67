"""Is a candidate checkpoint usable, and how big is it, before any compute: its files alone are
read (config, the task's processor files, safetensors headers), a hub id is fetched only when the
user is online, pickle weights are refused unless allowed, remote code is never run."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuneops.components.checkpoints import (
    CheckpointSpec,
    cached_hub_snapshot,
    feature_width,
    local_path,
    parse_spec,
    resolve_source,
)
from tuneops.components.errors import ConfigError

if TYPE_CHECKING:
    from tuneops.components.tasks.base import Task


# Float tensors are parameters; integer tensors in a checkpoint are buffers (e.g. position ids),
# and so are batch norm's running statistics (float, in every convolutional vision model).
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_FLOAT_BUFFER_SUFFIXES = (".running_mean", ".running_var")
# Transformer blocks are numbered children of a list named like this in every encoder family
# tuneops can drop layers from (BERT/RoBERTa ``encoder.layer.N``, DistilBERT ``transformer.layer.N``).
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
# The head a classification model loads as ``classifier`` (BERT's, EfficientNet's, ViT's...).
# ResNet's head is Sequential(Flatten, Linear): its weights are classifier.1.*.
_ONE_LAYER_HEAD = frozenset({"classifier.weight", "classifier.bias", "classifier.1.weight", "classifier.1.bias"})
_PICKLE_PATTERNS = ("pytorch_model*.bin", "model*.bin", "*.pt", "*.pth", "*.ckpt")
_OTHER_FRAMEWORK_PATTERNS = ("tf_model*.h5", "flax_model*.msgpack")
HUB_TIMEOUT_SECONDS = 5.0


class CandidateUnusable(Exception):
    """Raised inside inspection with the one-line reason a candidate cannot be used."""


@dataclass
class CheckpointInspection:
    """What tuneops learned about a candidate from its files alone, without running it."""

    spec: str
    usable: bool
    reason: str | None = None
    local_dir: str | None = None  # where ``from_pretrained`` loads from (a hub id is fetched first)
    model_type: str | None = None
    architecture: str | None = None
    parameters: int | None = None  # with the layers dropped and a classification head added
    layers: int | None = None  # transformer layers kept
    checkpoint_layers: int | None = None  # transformer layers in the checkpoint
    max_sequence_length: int | None = None
    weights: str | None = None  # "safetensors" or "pickle"
    notes: list[str] | None = None

    def loading_spec(self) -> CheckpointSpec:
        """The spec to load this candidate from its local files (a fetched hub id included)."""
        original = parse_spec(self.spec)
        return CheckpointSpec(text=original.text, source=str(self.local_dir), keep_layers=original.keep_layers)


def inspect_checkpoint(
    spec: CheckpointSpec | str,
    num_labels: int,
    task: "Task",
    champion_dir: Path | None = None,
    allow_pickle: bool = False,
) -> CheckpointInspection:
    """Check a candidate from its files: config, processor (the task's), architecture, weights,
    size, input length.

    Never raises for a bad candidate: the returned inspection says ``usable=False`` and why.
    A hub id is looked up in the local Hugging Face cache first; the hub itself is asked only
    when not offline (``HF_HUB_OFFLINE``), with a short timeout, so an offline machine never hangs.
    """
    text = spec.text if isinstance(spec, CheckpointSpec) else str(spec)
    try:
        parsed = spec if isinstance(spec, CheckpointSpec) else parse_spec(text)
        directory = _candidate_directory(parsed, champion_dir, allow_pickle, task)
        return _inspect_directory(parsed, directory, num_labels, allow_pickle, task)
    except (CandidateUnusable, ConfigError) as problem:
        reason = str(problem)
        # ConfigError messages start with "config: "; in a table row that prefix is noise.
        return CheckpointInspection(spec=text, usable=False, reason=reason.removeprefix("config: "))


def _candidate_directory(spec: CheckpointSpec, champion_dir: Path | None, allow_pickle: bool, task: "Task") -> Path:
    if spec.is_packaged:
        return Path(resolve_source(spec))
    if spec.source == "champion":
        if champion_dir is None:
            raise CandidateUnusable("no champion model exists yet (nothing has been promoted)")
        if not Path(champion_dir).is_dir():
            raise CandidateUnusable(f"champion model directory {champion_dir} does not exist")
        return Path(champion_dir)
    local = local_path(spec)
    if local is not None:
        if not local.exists():
            raise CandidateUnusable(f"directory {local} does not exist")
        if not local.is_dir():
            raise CandidateUnusable(f"{local} is a file; a checkpoint is a directory")
        return local
    return _fetch_from_hub(spec.source, spec.revision, allow_pickle, task.processor_files)


def hub_offline() -> bool:
    """True when the user (or the environment) has switched the Hugging Face hub off."""
    import os

    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags)


def _fetch_from_hub(repo_id: str, revision: str | None, allow_pickle: bool, processor_files: tuple[str, ...]) -> Path:
    """The local snapshot of a hub checkpoint at ``revision`` (None: the default branch): from the
    cache, else downloaded (config, the task's processor files, weights of an allowed format only).
    Raises CandidateUnusable with the reason it cannot be had."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise CandidateUnusable(f"not a local directory and not a valid Hugging Face hub id: {repo_id!r}") from None
    cached = cached_hub_snapshot(repo_id, revision)
    if cached is not None:
        return cached
    named = repo_id if revision is None else f"{repo_id} at revision {revision!r}"
    if hub_offline():
        raise CandidateUnusable(
            f"hub id {named} not reachable offline (HF_HUB_OFFLINE is set) and not in the local Hugging Face cache"
        )
    try:
        info = HfApi().model_info(repo_id, revision=revision, timeout=HUB_TIMEOUT_SECONDS)
    except RevisionNotFoundError:
        raise CandidateUnusable(f"hub id {repo_id} has no revision {revision!r} (branch, tag or commit)") from None
    except GatedRepoError:
        raise CandidateUnusable(f"hub id {repo_id} is gated: accept its terms and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise CandidateUnusable(f"hub id {repo_id} not found on the Hugging Face hub (or private)") from None
    except Exception as error:  # DNS, connect, timeout, proxy errors all mean the same to the user
        raise CandidateUnusable(
            f"hub id {repo_id} not reachable offline: cannot reach the Hugging Face hub ({first_line(error)})"
        ) from None
    # Only top-level files: many repos also carry ONNX / OpenVINO copies in sub-folders.
    names = [s.rfilename for s in info.siblings or [] if "/" not in s.rfilename]
    weights = _weights_format(names, allow_pickle)
    wanted = [n for n in names if n.endswith(".json") or n in processor_files or _matches(n, weights.patterns)]
    try:
        # By name, not by info.sha: the cache then records the ref (refs/<revision>), which later
        # look-ups of the same spec (training, lineage) resolve offline.
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=wanted))
    except Exception as error:
        raise CandidateUnusable(f"hub id {named}: download failed ({first_line(error)})") from None


@dataclass(frozen=True)
class _WeightsFound:
    kind: str  # "safetensors" or "pickle"
    patterns: tuple[str, ...]
    files: tuple[str, ...]


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(name, pattern) for pattern in patterns)


def _weights_format(names: list[str], allow_pickle: bool) -> _WeightsFound:
    safetensors = tuple(sorted(n for n in names if n.endswith(".safetensors")))
    if safetensors:
        return _WeightsFound("safetensors", ("*.safetensors",), safetensors)
    pickles = tuple(sorted(n for n in names if _matches(n, _PICKLE_PATTERNS) and n != "training_args.bin"))
    if pickles:
        if not allow_pickle:
            raise CandidateUnusable(
                f"only pickle weights ({', '.join(pickles)}): refused because loading pickle can run code; "
                "convert to safetensors or set selection.allow_pickle: true"
            )
        return _WeightsFound("pickle", _PICKLE_PATTERNS, pickles)
    others = [n for n in names if _matches(n, _OTHER_FRAMEWORK_PATTERNS)]
    if others:
        raise CandidateUnusable(f"only TensorFlow/Flax weights ({', '.join(others)}); tuneops loads PyTorch safetensors")
    raise CandidateUnusable("no weights file (expected model.safetensors)")


def _inspect_directory(spec: CheckpointSpec, directory: Path, num_labels: int, allow_pickle: bool,
                       task: "Task") -> CheckpointInspection:
    import json

    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    notes: list[str] = []
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CandidateUnusable(f"no config.json in {directory} (not a Hugging Face checkpoint directory)")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CandidateUnusable(f"config.json in {directory} is not valid JSON ({first_line(error)})") from None
    if not isinstance(raw, dict):
        raise CandidateUnusable(f"config.json in {directory} is not a JSON object")
    model_type = raw.get("model_type")
    if not model_type:
        raise CandidateUnusable("config.json has no model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        if raw.get("auto_map"):
            raise CandidateUnusable(
                f"model_type {model_type!r} needs the checkpoint's own code (auto_map); tuneops never runs remote code"
            )
        raise CandidateUnusable(f"model_type {model_type!r} is unknown to transformers {transformers.__version__}")
    architecture = task.architecture_for(model_type)
    if architecture is None:
        raise CandidateUnusable(f"architecture {model_type!r} has no {task.name} model in transformers")
    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
    except Exception as error:  # transformers raises ValueError/OSError/TypeError for bad configs
        raise CandidateUnusable(f"config.json cannot be loaded ({first_line(error)})") from None

    names = [path.name for path in directory.iterdir() if path.is_file()]
    weights = _weights_format(names, allow_pickle)
    if weights.kind == "pickle":
        notes.append("pickle weights, loaded because selection.allow_pickle is true")

    max_input_length = task.inspect_processor(directory, config, names)

    checkpoint_layers = _layer_count(config)
    layers = checkpoint_layers
    if spec.keep_layers is not None:
        if checkpoint_layers is None:
            raise CandidateUnusable(f"cannot drop layers: the number of layers of a {model_type!r} model is unknown")
        if spec.keep_layers > checkpoint_layers:
            raise CandidateUnusable(f"@layers={spec.keep_layers} but the checkpoint has only {checkpoint_layers} layers")
        layers = spec.keep_layers

    parameters = None
    if weights.kind == "safetensors":
        hidden = feature_width(config)
        # A checkpoint that already has a one-layer head (an ImageNet classifier, a champion's) gets
        # the head for these labels in its place: that one is counted, the old one is not.
        replaced = _ONE_LAYER_HEAD if hidden else frozenset()
        parameters = _safetensors_parameters([directory / name for name in weights.files], spec.keep_layers, replaced)
        if hidden:
            # The classification head for these labels: a hidden x labels matrix and a bias.
            parameters += int(hidden) * num_labels + num_labels
    else:
        notes.append("parameter count known only after loading (pickle weights)")

    return CheckpointInspection(
        spec=spec.text,
        usable=True,
        local_dir=str(directory),
        model_type=model_type,
        # The class tuneops will load, not the one the checkpoint was saved as (often a bare encoder).
        architecture=architecture,
        parameters=parameters,
        layers=layers,
        checkpoint_layers=checkpoint_layers,
        max_sequence_length=max_input_length,
        weights=weights.kind,
        notes=notes,
    )


def _layer_count(config) -> int | None:
    for name in ("num_hidden_layers", "n_layers", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _safetensors_parameters(files: list[Path], keep_layers: int | None, skip: frozenset[str] = frozenset()) -> int:
    """Count parameters from safetensors headers (a few KB read, no weights loaded), leaving out
    the tensors named in ``skip``."""
    import json
    import math
    import struct

    total = 0
    for file in files:
        try:
            with open(file, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > 100_000_000:  # a header is kilobytes; a huge value means a corrupt file
                    raise ValueError("header length out of range")
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error) as error:
            raise CandidateUnusable(f"{file.name} is not a valid safetensors file ({first_line(error)})") from None
        for name, entry in header.items():
            if name == "__metadata__" or name in skip or not isinstance(entry, dict) or entry.get("dtype") not in _FLOAT_DTYPES:
                continue
            if name.endswith(_FLOAT_BUFFER_SUFFIXES):
                continue
            layer = _LAYER_INDEX.search(name)
            if keep_layers is not None and layer and int(layer.group(1)) >= keep_layers:
                continue
            total += math.prod(entry.get("shape", []))
    return total


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
