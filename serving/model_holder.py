"""The model the service is serving, and how it changes to a newly promoted champion.

Switching is a reload inside the running process, not a restart: a watcher thread stats the
champion pointer file (``$TUNEOPS_HOME/champion.json``) every ``reload_check_s`` seconds, which
costs one ``stat`` call. When the file changes and names another model, the same thread verifies
that model (file checksums), loads it and runs one prediction with it, all while requests keep
being served by the current model. Only then is the ``current`` reference replaced, a single
assignment: a batch already running finishes on the model it started with, the next batch uses
the new one, and no request waits or fails. If the new model does not verify or load, the
service keeps the current one, logs why, and does not retry that tag until the pointer changes.

A pinned model (``tuneops serve --model TAG``, or a bento built for one tag) is never switched.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable

from tuneops.components import registry
from tuneops.components.errors import StageError, TuneopsError
from tuneops.components.predictor import Predictor
from tuneops.components.tasks.base import Task
from tuneops.components.tasks.registry import get_task

logger = logging.getLogger("tuneops.serving")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to predict, with the tag it was loaded from."""

    tag: str
    predictor: Predictor


def served_task(pinned_tag: str | None) -> Task:
    """The task of the model this process is going to serve, from its manifest: the request
    schema depends on it and is fixed when the service module is imported, before any model loads.

    When there is no model to read yet, the default task; loading the model then fails with the
    one-line reason (no champion, unknown tag).
    """
    try:
        tag = pinned_tag or registry.champion_tag()
        if tag:
            return get_task(_task_name(Predictor.read_manifest(registry.get_model(tag).model_dir)))
    except (TuneopsError, OSError, ValueError):
        pass
    return get_task(registry.DEFAULT_TASK)


def _task_name(manifest: dict) -> str:
    return str(manifest.get("task", registry.DEFAULT_TASK))


def load_model(tag: str) -> LoadedModel:
    """Verify the packaged model ``tag`` and load it for inference, checked by one prediction."""
    release = registry.verify_model(tag)
    predictor = Predictor.from_dir(release.model_dir)
    # One forward pass, on the first usable input of the model's own reference sample (whatever
    # its task's inputs are; image files may be gone: then the task's own), proves the weights
    # load and run, and warms up the first real request.
    reference = release.reference()
    column = predictor.task.input_column
    values = reference[column].head(20) if column in reference.columns else []
    warmup = next((value for value in values if predictor.task.input_problem(value) is None), None)
    if warmup is None:
        warmup = predictor.task.warmup_input()
    if warmup is None:
        raise StageError(f"model {release.tag}: its reference sample has no {column!r} rows to warm up with")
    probabilities = predictor.predict_proba([warmup])
    if probabilities.shape != (1, len(predictor.labels)):
        raise StageError(f"model {release.tag} returned probabilities of shape {probabilities.shape}")
    return LoadedModel(release.tag, predictor)


class ModelHolder:
    """Holds the served model; with no pinned tag, follows the champion pointer in the background."""

    def __init__(self, pinned_tag: str | None = None, check_interval_s: float = 1.0,
                 on_swap: Callable[[str, str], None] | None = None,
                 on_swap_failure: Callable[[str, str], None] | None = None,
                 task_name: str | None = None) -> None:
        self.pinned_tag = pinned_tag
        # The task whose requests the service accepts (its schema is fixed at start-up); a model
        # of another task cannot answer them. None: whichever task the first model has.
        self.task_name = task_name
        self.check_interval_s = check_interval_s
        self._on_swap = on_swap
        self._on_swap_failure = on_swap_failure
        self._current: LoadedModel | None = None
        self._pointer_signature: tuple | None = None
        self._rejected_tag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> LoadedModel:
        """The model to use for the next batch (read once per batch: it may change between)."""
        if self._current is None:
            raise StageError("no model is loaded yet")
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    def load_initial(self) -> LoadedModel:
        """Load the pinned model or the champion; StageError/ConfigError in one line if neither works."""
        if self.pinned_tag:
            self._current = self._checked(load_model(self.pinned_tag))
            return self._current
        self._pointer_signature = _signature(registry.pointer_path())
        tag = registry.champion_tag()
        if tag is None:
            raise StageError("no champion model to serve: promote one with `tuneops promote TAG` "
                             "or serve one with `tuneops serve --model TAG`")
        self._current = self._checked(load_model(tag))
        logger.info("serving champion %s", self._current.tag)
        return self._current

    def start_watching(self) -> None:
        """Start the background thread that follows the champion (no-op for a pinned model)."""
        if self.pinned_tag or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="tuneops-champion-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def check_now(self) -> bool:
        """One check of the pointer; loads and swaps in a new champion. True if it swapped."""
        if self.pinned_tag:
            return False
        signature = _signature(registry.pointer_path())
        if signature == self._pointer_signature:
            return False
        self._pointer_signature = signature
        try:
            tag = registry.champion_tag()
        except TuneopsError as error:
            logger.error("champion pointer unreadable, keeping %s: %s", self.current.tag, error)
            return False
        if tag is None or tag == self.current.tag or tag == self._rejected_tag:
            return False
        previous = self.current.tag
        try:
            loaded = self._checked(load_model(tag))
        except Exception as error:  # any failure to load must leave the service serving
            self._rejected_tag = tag
            logger.error("new champion %s not loaded, still serving %s: %s", tag, previous, error)
            if self._on_swap_failure:
                self._on_swap_failure(tag, str(error))
            return False
        self._rejected_tag = None
        self._current = loaded
        logger.info("switched from %s to new champion %s", previous, loaded.tag)
        if self._on_swap:
            self._on_swap(previous, loaded.tag)
        return True

    def _checked(self, loaded: LoadedModel) -> LoadedModel:
        """``loaded``, if it is a model of the task this service answers; StageError otherwise."""
        name = loaded.predictor.task.name
        if self.task_name is None:
            self.task_name = name
        elif name != self.task_name:
            raise StageError(f"model {loaded.tag} is a {name} model; this service answers {self.task_name} "
                             "requests (restart it to serve the new model)")
        return loaded

    def _watch(self) -> None:
        while not self._stop.wait(self.check_interval_s):
            try:
                self.check_now()
            except Exception:  # the watcher must outlive any one bad check
                logger.exception("champion check failed")


def _signature(path) -> tuple | None:
    """What changes whenever the pointer is replaced (os.replace gives it a new inode)."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return (status.st_ino, status.st_mtime_ns, status.st_size)
