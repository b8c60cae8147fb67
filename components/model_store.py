"""BentoML's model store on disk: saving a model atomically, and telling whole models from leftovers.

BentoML's ``bentoml.models.create`` builds a model in a temporary directory under /tmp and then
copies it into ``models/<name>/<version>/``. A process killed during that copy leaves a directory
without ``model.yaml`` in the store, on which BentoML's own listing fails, and the temporary copy
in /tmp. Here a model is built aside instead, in ``<BENTOML_HOME>/tuneops-staging/<version>/``
(beside the store, so on its file system, and outside every folder BentoML reads), flushed to disk
with its ``model.yaml``, and moved into the store with one ``os.rename``: the store holds the whole
model or nothing of it.

While it builds, the builder holds an exclusive lock on ``<version>.lock`` beside its folder
(``files.file_lock``). The kernel drops that lock when the builder dies, however it dies, so a
build folder whose lock is free was abandoned. ``scan`` returns the whole models and the leftovers
(abandoned builds, and store entries without a readable ``model.yaml``, which BentoML's own save
leaves when it is cut short); ``remove_leftovers`` deletes the leftovers and never a build in
progress.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tuneops.components.errors import StageError
from tuneops.components.files import atomic_write_text, file_lock, fsync_directory

STAGING_DIR = "tuneops-staging"
MODEL_YAML = "model.yaml"
LOCK_SUFFIX = ".lock"
# BentoML resolves ``name:latest`` through this file in the model's name folder.
LATEST_FILE = "latest"


@dataclass(frozen=True)
class Leftover:
    """Something in the store's folders that is not a whole model: where it is, and why not."""

    path: Path
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"path": str(self.path), "reason": self.reason}


@dataclass
class StagedModel:
    """A model being built aside. Its files go into ``path``; ``metadata`` may still change inside
    the ``build`` block, since ``model.yaml`` is written from it when the build is committed."""

    tag: str
    path: Path
    labels: dict[str, str]
    metadata: dict[str, Any]


def store_dir() -> Path:
    """BentoML's model store folder (``$BENTOML_HOME/models``)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.model_store_dir.get())


def staging_dir() -> Path:
    """Where models are built before they move into the store."""
    return store_dir().parent / STAGING_DIR


@contextlib.contextmanager
def build(name: str, labels: dict[str, str], metadata: dict[str, Any]) -> Iterator[StagedModel]:
    """Build a new model ``name:<new version>`` aside; when the block ends normally, write its
    ``model.yaml``, flush everything to disk and rename it into the store. An exception removes
    the build; a killed process leaves it, as a leftover that ``remove_leftovers`` deletes."""
    import bentoml

    tag = bentoml.Tag(name).make_new_version()
    staging = staging_dir()
    lock = staging / f"{tag.version}{LOCK_SUFFIX}"
    folder = staging / str(tag.version)
    # The lock is taken before the folder exists, so a folder without a held lock is abandoned.
    with file_lock(lock):
        try:
            folder.mkdir()
            staged = StagedModel(tag=str(tag), path=folder, labels=dict(labels), metadata=metadata)
            yield staged
            _commit(staged, store_dir() / name, str(tag.version))
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # nothing left once committed (renamed away)
            lock.unlink(missing_ok=True)


def scan(name: str) -> tuple[list[Any], list[Leftover]]:
    """The whole models named ``name`` (BentoML ``Model`` objects) and every leftover: store
    entries that are not readable models, and abandoned builds. Builds in progress are neither."""
    models, leftovers = [], []
    folder = store_dir() / name
    entries = sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []
    for entry in entries:
        model, problem = load_entry(entry)
        if model is not None:
            models.append(model)
        else:
            leftovers.append(Leftover(entry, problem))
    for build_folder in _build_folders():
        # Checked again after the lock: a build that just finished has moved its folder away.
        if not _build_in_progress(build_folder) and build_folder.is_dir():
            leftovers.append(Leftover(build_folder, "abandoned build: the process that worked in it ended "
                                                    "before it was done"))
    return models, leftovers


def load_entry(path: Path) -> tuple[Any | None, str]:
    """The BentoML model in the store entry ``path``, or None and why it is not one."""
    from bentoml._internal.models.model import Model

    if not (path / MODEL_YAML).is_file():
        return None, f"no {MODEL_YAML}: a save into the store that did not finish"
    try:
        return Model.from_path(path), ""
    except Exception as error:  # a truncated model.yaml fails in yaml, attrs or BentoML itself
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None, f"unreadable {MODEL_YAML} ({first})"


def remove(entry: Path) -> None:
    """Delete the store entry ``entry`` (a model's folder) so that no reader ever sees half of it:
    it is renamed out of the store first, then deleted; a crash in between leaves a build folder
    without a lock, which ``remove_leftovers`` deletes."""
    staging = staging_dir()
    staging.mkdir(parents=True, exist_ok=True)
    doomed = staging / f"{entry.name}-removed-{secrets.token_hex(4)}"
    _rename(entry, doomed)
    fsync_directory(entry.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def remove_leftovers(name: str) -> list[Leftover]:
    """Delete every leftover ``scan`` reports (and stray lock files); returns what was removed."""
    _, leftovers = scan(name)
    removed = []
    staging = staging_dir()
    for leftover in leftovers:
        if leftover.path.parent == staging:
            # Under its lock: a build cannot be both in progress and removed.
            with file_lock(_lock_of(leftover.path), wait=False) as free:
                if not free:
                    continue
                shutil.rmtree(leftover.path, ignore_errors=True)
                _lock_of(leftover.path).unlink(missing_ok=True)
        else:
            shutil.rmtree(leftover.path, ignore_errors=True)
        removed.append(leftover)
    if staging.is_dir():
        for lock in staging.glob(f"*{LOCK_SUFFIX}"):
            folder = lock.with_suffix("")
            with file_lock(lock, wait=False) as free:
                if free and not folder.exists():
                    lock.unlink(missing_ok=True)
    return removed


def _commit(staged: StagedModel, name_folder: Path, version: str) -> None:
    from bentoml._internal.models.model import ModelContext, ModelInfo, ModelOptions
    from bentoml._internal.tag import Tag

    # What ``bentoml.models.create`` records for a model saved without a framework.
    info = ModelInfo(tag=Tag.from_taglike(staged.tag), module="", labels=staged.labels, options=ModelOptions(),
                     metadata=staged.metadata, context=ModelContext(framework_name="", framework_versions={}),
                     signatures={}, api_version="v1")
    with open(staged.path / MODEL_YAML, "w", encoding="utf8") as handle:
        info.dump(handle)
    # On disk before the rename: after a power cut the store must not hold a named but empty model.
    for path in staged.path.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_directory(staged.path)
    name_folder.mkdir(parents=True, exist_ok=True)
    _rename(staged.path, name_folder / version)
    fsync_directory(name_folder)
    atomic_write_text(name_folder / LATEST_FILE, version)


def _rename(source: Path, target: Path) -> None:
    """``os.rename``, atomic on one file system; a one-line StageError across two."""
    try:
        os.rename(source, target)
    except OSError as error:
        if error.errno == errno.EXDEV:
            raise StageError(f"model store: {staging_dir()} and {store_dir()} are on different file systems; "
                             "a model cannot be moved in or out of the store atomically") from None
        raise


def _build_folders() -> list[Path]:
    staging = staging_dir()
    return sorted(path for path in staging.iterdir() if path.is_dir()) if staging.is_dir() else []


def _lock_of(build_folder: Path) -> Path:
    return build_folder.with_name(build_folder.name + LOCK_SUFFIX)


def _build_in_progress(build_folder: Path) -> bool:
    lock = _lock_of(build_folder)
    if not lock.exists():
        return False  # its builder took the lock before making the folder: this one is gone
    with file_lock(lock, wait=False) as free:
        return not free
