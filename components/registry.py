"""The model registry: packaged models in BentoML's model store, and the champion pointer.

- ``package_model`` saves a trained model directory, its lineage and a reference sample of the
  training data as one BentoML model (``tuneops-classifier:<version>``). The model is built aside
  and renamed into the store whole (``model_store.build``), so a crash while packaging leaves no
  entry in the store, only a build folder that ``remove_partial_entries`` (``tuneops models
  --clean``) deletes; listing ignores and reports such leftovers instead of failing on them.
  Every file's size and SHA-256 go into the model's metadata, so a model damaged later is
  recognisable as incomplete.
- The champion, the model that serving uses, is named by one small JSON file,
  ``$TUNEOPS_HOME/champion.json``. ``set_champion`` verifies the model completely first (files,
  checksums, manifest), then replaces the file atomically (write a temporary file, fsync,
  ``os.replace``), so a reader sees either the old champion or the new one, never a mix, and a
  half-saved model can never become champion. The file keeps the previous champions for
  ``rollback``. Writers take an exclusive ``flock`` so two promotions cannot lose each other, and
  each reports the champion it replaced as read under that lock. A pointer file of the wrong
  shape (a hand edit) is a one-line StageError naming the file. ``champion_pointer`` keeps the
  file; this module decides what goes into it.

Import cost: bentoml is imported inside the functions, after ``configure_environment`` has
pointed ``BENTOML_HOME`` into ``$TUNEOPS_HOME``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from tuneops.components import champion_pointer, model_store
from tuneops.components.errors import ConfigError, StageError
from tuneops.components.files import atomic_write_text, file_sha256, plain_json
from tuneops.components.predictor import MANIFEST

MODEL_NAME = "tuneops-classifier"
# Models packaged before the manifest recorded a task are text classifiers.
DEFAULT_TASK = "text-classification"
REFERENCE_FILE = "reference.parquet"
LINEAGE_FILE = "lineage.json"
# Monitoring compares traffic with this sample; a few thousand rows give stable drift tests
# (Evidently's defaults are tuned for that size) while keeping the model small.
MAX_REFERENCE_ROWS = 5000
# Remembered previous champions; rollback walks back through them.
MAX_HISTORY = 20
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# What a saved processor leaves behind: a tokenizer's files, or an image processor's config.
_PROCESSOR_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json", "spiece.model",
                    "preprocessor_config.json")


@dataclass
class ModelRelease:
    """One packaged model: its tag, where its files are, and the lineage it was saved with."""

    tag: str
    path: Path
    metadata: dict[str, Any]
    labels: dict[str, str]
    created: datetime
    is_champion: bool = False
    promoted_at: str | None = field(default=None)
    # Set by set_champion and rollback: the champion the switch replaced, read under the pointer's
    # lock (so two concurrent promotions never both claim to have replaced the same one).
    previous_champion: str | None = field(default=None)

    @property
    def model_dir(self) -> Path:
        """The directory ``Predictor.from_dir`` loads (the BentoML model's own directory)."""
        return self.path

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.metadata.get("metrics") or {})

    @property
    def run_id(self) -> str | None:
        return self.metadata.get("run_id")

    @property
    def reference_path(self) -> Path:
        return self.path / REFERENCE_FILE

    def reference(self) -> pd.DataFrame:
        """The training-data sample saved with the model (inputs, label, prediction, groups)."""
        if not self.reference_path.exists():
            raise StageError(f"model {self.tag} has no reference sample ({REFERENCE_FILE})")
        return pd.read_parquet(self.reference_path)

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "path": str(self.path),
            "created": self.created.isoformat(),
            "is_champion": self.is_champion,
            "promoted_at": self.promoted_at,
            "labels": dict(self.labels),
            "metadata": {key: value for key, value in self.metadata.items() if key != "files"},
        }


def package_model(trained_dir: Path, metadata: dict[str, Any], reference: pd.DataFrame) -> ModelRelease:
    """Save ``trained_dir`` (written by ``Predictor.save``) with ``metadata`` and ``reference``
    as a new model in the BentoML store; it is not made champion (see ``set_champion``).

    ``metadata`` is the lineage: run_id, metrics, data_fingerprint, config_hash, base_checkpoint,
    labels, code_version, ... (anything JSON-able). ``reference`` is a sample of the training
    data with at least the input column of the model's task (``text``); more than
    MAX_REFERENCE_ROWS rows are sampled down. Raises StageError when the directory is not a
    complete model.
    """
    import bentoml

    trained_dir = Path(trained_dir)
    manifest = _check_model_dir(trained_dir)
    input_column = _input_column(manifest)
    if input_column not in reference.columns:
        raise StageError(f"package: the reference sample needs a {input_column!r} column, "
                         f"it has {list(reference.columns)}")
    if len(reference) > MAX_REFERENCE_ROWS:
        reference = reference.sample(MAX_REFERENCE_ROWS, random_state=0)
    lineage = bentoml_metadata(dict(metadata))
    lineage.setdefault("labels", manifest["labels"])
    lineage.update(bentoml_metadata({
        "label_map": {str(index): label for index, label in enumerate(manifest["labels"])},
        "max_length": manifest.get("max_length"),
        "base_checkpoint": lineage.get("base_checkpoint") or manifest.get("base_checkpoint"),
        "packaged_at": datetime.now(timezone.utc).isoformat(),
        "reference_rows": len(reference),
        "format": 1,
    }))
    bento_labels = {
        "project": "tuneops",
        "task": str(manifest.get("task", DEFAULT_TASK)),
        "run_id": str(lineage.get("run_id") or "none"),
        "gate": str(lineage.get("gate") or "none"),
    }
    payload = [path for path in sorted(trained_dir.iterdir()) if path.is_file()]
    with model_store.build(MODEL_NAME, labels=bento_labels, metadata=lineage) as staged:
        target = staged.path
        for source in payload:
            shutil.copy2(source, target / source.name)
        try:
            reference.reset_index(drop=True).to_parquet(target / REFERENCE_FILE, index=False)
        except (ValueError, TypeError, ImportError) as error:
            raise StageError(f"package: cannot write the reference sample as Parquet: {error}") from None
        atomic_write_text(target / LINEAGE_FILE, json.dumps(lineage, indent=2, sort_keys=True))
        # Recorded last, from the files as written (model.yaml comes when the build is committed):
        # what a complete copy of this model holds.
        staged.metadata["files"] = {
            path.name: {"size": path.stat().st_size, "sha256": file_sha256(path)}
            for path in sorted(target.iterdir()) if path.is_file()
        }
    return _release(bentoml.models.get(staged.tag))


def get_model(tag: str) -> ModelRelease:
    """The packaged model named ``tag`` (``name:version``, a bare version, or ``latest``)."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    full = normalise_tag(tag)
    try:
        model = bentoml.models.get(full)
    except NotFound:
        raise ConfigError(f"no model {tag!r} in the store; `tuneops models` lists them") from None
    except BentoMLException as error:
        name, _, version = full.partition(":")
        entry = model_store.store_dir() / name / version
        if version and entry.is_dir():
            _, problem = model_store.load_entry(entry)
            raise StageError(f"model {full} is a partial entry in the store ({entry}: {problem}); "
                             "`tuneops models --clean` removes it") from None
        raise ConfigError(f"model {tag!r}: {error}") from None
    if model.tag.name != MODEL_NAME:
        raise ConfigError(f"model {tag!r} is not a tuneops model (name must be {MODEL_NAME})")
    release = _release(model)
    state = champion_pointer.read()
    release.is_champion = state.get("tag") == release.tag
    release.promoted_at = state.get("promoted_at") if release.is_champion else None
    return release


def verify_model(tag: str) -> ModelRelease:
    """``get_model`` plus proof that the model is whole: every recorded file is present with the
    recorded size and SHA-256, and the manifest names its labels. StageError otherwise."""
    release = get_model(tag)
    files = release.metadata.get("files")
    if not isinstance(files, dict) or not files:
        raise StageError(f"model {release.tag} has no file list in its metadata; it was not saved by tuneops")
    for name, expected in files.items():
        path = release.path / name
        if not path.is_file():
            raise StageError(f"model {release.tag} is incomplete: {name} is missing")
        if path.stat().st_size != expected.get("size"):
            raise StageError(f"model {release.tag} is incomplete: {name} has the wrong size")
        if file_sha256(path) != expected.get("sha256"):
            raise StageError(f"model {release.tag} is damaged: {name} does not match its checksum")
    _check_model_dir(release.path)
    return release


def set_champion(tag: str) -> ModelRelease:
    """Make the model ``tag`` the champion, after verifying it; the previous champion is kept for
    ``rollback`` and returned as ``previous_champion`` (the tag itself when it already was the
    champion: promoting the current champion again changes nothing)."""
    release = verify_model(tag)
    with champion_pointer.lock():
        state = champion_pointer.read()
        release.previous_champion = state.get("tag")
        if state.get("tag") != release.tag:
            history = list(state.get("history", []))
            if state.get("tag"):
                history.append({"tag": state["tag"], "promoted_at": state.get("promoted_at")})
            champion_pointer.write({
                "tag": release.tag,
                "promoted_at": datetime.now(timezone.utc).isoformat(),
                "history": history[-MAX_HISTORY:],
            })
            state = champion_pointer.read()
    release.is_champion = True
    release.promoted_at = state.get("promoted_at")
    return release


def champion() -> ModelRelease | None:
    """The current champion, or None when no model was ever promoted.

    StageError when the pointer names a model that has since been deleted from the store.
    """
    state = champion_pointer.read()
    if not state.get("tag"):
        return None
    try:
        release = get_model(state["tag"])
    except ConfigError:
        raise StageError(
            f"the champion pointer names {state['tag']}, which is no longer in the model store; "
            "`tuneops promote TAG` or `tuneops rollback` fixes it"
        ) from None
    return release


def champion_model_dir() -> Path | None:
    """The champion's model directory (for ``Predictor.from_dir``), or None."""
    current = champion()
    return current.model_dir if current else None


def champion_tag() -> str | None:
    """The champion's tag as the pointer file says, without touching the model store."""
    return champion_pointer.read().get("tag")


def list_models() -> list[ModelRelease]:
    """Every packaged model, newest first, with ``is_champion`` set on the champion. Entries that
    are not whole models are left out (``partial_entries`` names them)."""
    models, _ = model_store.scan(MODEL_NAME)
    state = champion_pointer.read()
    releases = [_release(model) for model in models]
    for release in releases:
        release.is_champion = release.tag == state.get("tag")
        release.promoted_at = state.get("promoted_at") if release.is_champion else None
    return sorted(releases, key=lambda release: release.created, reverse=True)


def previous_champions() -> list[str]:
    """The earlier champions the pointer remembers, most recent first: the order ``rollback``
    tries them in. Only reads the pointer (the service falls back along it without moving it)."""
    history = champion_pointer.read().get("history", [])
    return [str(entry["tag"]) for entry in reversed(history) if isinstance(entry, dict) and entry.get("tag")]


def partial_entries() -> list[model_store.Leftover]:
    """What the model store's folders hold that is not a whole model: saves cut short by a crash
    and abandoned builds (never a build still in progress). ``list_models`` leaves them out."""
    return model_store.scan(MODEL_NAME)[1]


def remove_partial_entries() -> list[model_store.Leftover]:
    """Delete the ``partial_entries``; returns what was removed."""
    return model_store.remove_leftovers(MODEL_NAME)


def rollback() -> ModelRelease:
    """Make the previous champion the champion again (skipping any that was deleted or damaged
    since); ``previous_champion`` on the result is the champion it replaced. StageError when there
    is no previous champion to go back to."""
    with champion_pointer.lock():
        state = champion_pointer.read()
        history = list(state.get("history", []))
        skipped = []
        while history:
            previous = history.pop()
            try:
                release = verify_model(previous["tag"])
            except (ConfigError, StageError) as error:
                skipped.append(f"{previous['tag']} ({error})")
                continue
            champion_pointer.write({
                "tag": release.tag,
                "promoted_at": datetime.now(timezone.utc).isoformat(),
                "history": history,
            })
            release.is_champion = True
            release.promoted_at = champion_pointer.read().get("promoted_at")
            release.previous_champion = state.get("tag")
            return release
    unusable = f"; unusable: {', '.join(skipped)}" if skipped else ""
    raise StageError(f"no previous champion to roll back to{unusable}")


def remove_model(tag: str) -> None:
    """Delete the packaged model ``tag`` from the store (one that failed infrastructure
    validation: a model that cannot serve is not kept as a candidate). The champion never is."""
    release = get_model(tag)
    if release.tag == champion_tag():
        raise StageError(f"model {release.tag} is the champion; promote another one before removing it")
    model_store.remove(release.path)


def normalise_tag(tag: str) -> str:
    """``abc`` -> ``tuneops-classifier:abc``; ``name:version`` and ``latest`` as given."""
    tag = str(tag).strip()
    if not tag:
        raise ConfigError("model tag is empty")
    if ":" in tag:
        return tag
    if tag == MODEL_NAME:
        return f"{MODEL_NAME}:latest"
    return f"{MODEL_NAME}:{tag}"


def _release(model) -> ModelRelease:
    return ModelRelease(
        tag=str(model.tag),
        path=Path(model.path),
        metadata=dict(model.info.metadata or {}),
        labels=dict(model.info.labels or {}),
        created=model.creation_time,
    )


def _check_model_dir(directory: Path) -> dict[str, Any]:
    """The manifest of a complete model directory; StageError naming what is missing otherwise."""
    if not directory.is_dir():
        raise StageError(f"package: model directory {directory} does not exist")
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise StageError(f"package: {directory} has no {MANIFEST}; it was not written by Predictor.save")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise StageError(f"package: {manifest_path} is not valid JSON") from None
    labels = manifest.get("labels") if isinstance(manifest, dict) else None
    if not isinstance(labels, list) or len(labels) < 2:
        raise StageError(f"package: {manifest_path} does not list at least 2 labels")
    if not (directory / "config.json").is_file():
        raise StageError(f"package: {directory} has no config.json")
    if not any((directory / name).is_file() for name in _WEIGHT_FILES):
        raise StageError(f"package: {directory} has no safetensors weights")
    if not any((directory / name).is_file() for name in _PROCESSOR_FILES):
        raise StageError(f"package: {directory} has no processor files (tokenizer or image processor)")
    return manifest


def bentoml_metadata(value: Any) -> Any:
    """Metadata as BentoML's model.yaml accepts it: plain JSON types (``files.plain_json``) and
    not even None, so None and NaN entries of a mapping are left out and in a list become the
    string "null"."""
    return _without_none(plain_json(value))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return ["null" if item is None else _without_none(item) for item in value]
    return value


def _input_column(manifest: dict[str, Any]) -> str:
    """The column of the reference sample that holds the model's inputs (its task's)."""
    from tuneops.components.tasks.registry import get_task

    return get_task(str(manifest.get("task", DEFAULT_TASK))).input_column
