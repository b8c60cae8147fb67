"""The model the service is serving, and how it changes to a newly promoted champion.

Switching is a reload inside the running process, not a restart: a watcher thread stats the
champion pointer file (``$TUNEOPS_HOME/champion.json``) every ``reload_check_s`` seconds, which
costs one ``stat`` call. When the file changes and names another model, the same thread verifies
that model (file checksums), loads it and runs one prediction with it, all while requests keep
being served by the current model. Only then is the ``current`` reference replaced, a single
assignment: a batch already running finishes on the model it started with, the next batch uses
the new one, and no request waits or fails. If the new model does not verify or load, the
service keeps the current one, logs why, and does not retry that tag until the pointer changes.

Starting never fails on a model: a service that crashed at start-up would be restarted into the
same crash, and nothing would say why. When the champion does not verify or load (weights damaged
after promotion), the holder serves the most recent previous champion that does, walking the
pointer's history as ``tuneops rollback`` would but without moving the pointer. When nothing
loads (no champion yet, every candidate damaged), the holder is not ready, ``readiness`` says
why, and the watcher tries again whenever the pointer changes and every ``RETRY_UNREADY_S``.

A pinned model (``tuneops serve --model TAG``, or a bento built for one tag) is never switched;
if it does not load, it is retried every ``RETRY_UNREADY_S``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

from tuneops.components import champion_pointer, registry
from tuneops.components.errors import StageError, TuneopsError, one_line
from tuneops.components.predictor import Predictor
from tuneops.components.tasks.base import Task
from tuneops.components.tasks.registry import get_task
from tuneops.serving.schemas import Readiness

logger = logging.getLogger("tuneops.serving")

# A holder with nothing to serve tries again this often even when the pointer has not changed:
# the model store may be filled or repaired under the same tag (a volume mounted late, a model
# copied back). A try verifies checksums, one read of the weights; twice a minute costs little.
RETRY_UNREADY_S = 30.0
# A reason is shown in /readyz and in 503 answers; an error quoting a path or a list stays readable.
_MAX_REASON_CHARS = 500
NO_CHAMPION = ("no champion model to serve: promote one with `tuneops promote TAG` "
               "or serve one with `tuneops serve --model TAG`")


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


def load_model(tag: str, runtime: str = "packaged") -> LoadedModel:
    """Verify the packaged model ``tag`` and load it for inference, checked by one prediction.

    ``runtime``: "packaged" serves the int8 graph where packaging accepted it, "torch" never does.
    """
    release = registry.verify_model(tag)
    predictor = Predictor.from_dir(release.model_dir, runtime=runtime)
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
                 task_name: str | None = None, runtime: str = "packaged") -> None:
        self.pinned_tag = pinned_tag
        self.runtime = runtime
        # The task whose requests the service accepts (its schema is fixed at start-up); a model
        # of another task cannot answer them. None: whichever task the first model has.
        self.task_name = task_name
        self.check_interval_s = check_interval_s
        self._on_swap = on_swap
        self._on_swap_failure = on_swap_failure
        self._current: LoadedModel | None = None
        # Why the champion is not what is served (or why nothing is); None when it is.
        self._problem: str | None = None
        self._pointer_signature: tuple | None = None
        self._rejected_tag: str | None = None
        self._next_retry = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> LoadedModel:
        """The model to use for the next batch (read once per batch: it may change between)."""
        current = self._current
        if current is None:
            raise StageError(f"no model is loaded: {self._problem or 'not started'}")
        return current

    @property
    def ready(self) -> bool:
        return self._current is not None

    def readiness(self) -> Readiness:
        """Whether a model is served, which, and the reason when it is none or not the champion."""
        current, problem = self._current, self._problem
        return Readiness(current is not None, current.tag if current else None, problem or "")

    def start(self) -> Readiness:
        """Load what there is to serve and start following the pointer; never raises. Without a
        loadable model the holder is not ready, ``readiness`` says why, and it keeps trying."""
        try:
            self.load_initial()
        except Exception as error:  # the service must come up and say why it cannot serve
            self._not_ready(error)
        self.start_watching()
        return self.readiness()

    def load_initial(self) -> LoadedModel:
        """Load the pinned model or the champion, or, if the champion does not verify or load,
        the most recent previous champion that does (the pointer is not moved). StageError or
        ConfigError in one line when nothing loads."""
        if self.pinned_tag:
            return self._serve(self._checked(load_model(self.pinned_tag, self.runtime)), None)
        self._pointer_signature = _signature(champion_pointer.pointer_path())
        tag = registry.champion_tag()
        if tag is None:
            raise StageError(NO_CHAMPION)
        try:
            loaded = self._checked(load_model(tag, self.runtime))
        except Exception as error:  # whatever the failure, an earlier champion may still serve
            problem = f"champion {tag} not loaded: {one_line(error, _MAX_REASON_CHARS)}"
            fallback = self._previous_champion(tag)
            if fallback is None:
                raise StageError(f"{problem}; no previous champion loads either") from None
            self._rejected_tag = tag
            logger.error("%s; serving the previous champion %s", problem, fallback.tag)
            return self._serve(fallback, f"{problem}; serving the previous champion {fallback.tag}")
        self._rejected_tag = None
        logger.info("serving champion %s", loaded.tag)
        return self._serve(loaded, None)

    def start_watching(self) -> None:
        """Start the background thread that follows the champion, or retries a pinned model that
        did not load (nothing to do for a loaded pinned model)."""
        if self._thread is not None or (self.pinned_tag and self.ready):
            return
        self._thread = threading.Thread(target=self._watch, name="tuneops-champion-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def check_now(self) -> bool:
        """One check of the pointer; loads and swaps in a new champion, or, with nothing served
        yet, tries to load one. True if the served model changed."""
        if self._current is None:
            return self._retry()
        if self.pinned_tag:
            return False
        signature = _signature(champion_pointer.pointer_path())
        if signature == self._pointer_signature:
            return False
        self._pointer_signature = signature
        try:
            tag = registry.champion_tag()
        except TuneopsError as error:
            logger.error("champion pointer unreadable, keeping %s: %s", self.current.tag, error)
            return False
        if tag == self.current.tag and self._problem:
            # Back on the model already served (a rollback to it): it is the champion again.
            logger.info("%s is the champion again", tag)
            self._problem = self._rejected_tag = None
        if tag is None or tag == self.current.tag or tag == self._rejected_tag:
            return False
        previous = self.current.tag
        try:
            loaded = self._checked(load_model(tag, self.runtime))
        except Exception as error:  # any failure to load must leave the service serving
            self._rejected_tag = tag
            self._problem = f"champion {tag} not loaded: {one_line(error, _MAX_REASON_CHARS)}; still serving {previous}"
            logger.error("new champion %s not loaded, still serving %s: %s", tag, previous, error)
            if self._on_swap_failure:
                self._on_swap_failure(tag, str(error))
            return False
        self._rejected_tag = None
        self._serve(loaded, None)
        logger.info("switched from %s to new champion %s", previous, loaded.tag)
        if self._on_swap:
            self._on_swap(previous, loaded.tag)
        return True

    def _retry(self) -> bool:
        """With nothing served: load again when the pointer changed or the retry time came."""
        signature = None if self.pinned_tag else _signature(champion_pointer.pointer_path())
        if signature == self._pointer_signature and time.monotonic() < self._next_retry:
            return False
        try:
            loaded = self.load_initial()
        except Exception as error:  # still nothing to serve; the next change or retry may fix it
            self._not_ready(error)
            return False
        logger.info("ready: serving %s", loaded.tag)
        return True

    def _not_ready(self, error: BaseException) -> None:
        problem = one_line(error, _MAX_REASON_CHARS)
        if problem != self._problem:  # once per distinct reason, not once per retry
            logger.error("not ready: %s", problem)
        self._problem = problem
        self._next_retry = time.monotonic() + RETRY_UNREADY_S

    def _serve(self, loaded: LoadedModel, problem: str | None) -> LoadedModel:
        # The reason first: a reader that sees the new model must not see the old reason with it.
        self._problem = problem
        self._current = loaded
        return loaded

    def _previous_champion(self, failed: str) -> LoadedModel | None:
        """The most recent previous champion that verifies and loads, or None."""
        tried = {failed}
        for tag in registry.previous_champions():
            if tag in tried:
                continue
            tried.add(tag)
            try:
                return self._checked(load_model(tag, self.runtime))
            except Exception as error:  # damaged or deleted too: go further back
                logger.warning("previous champion %s not loaded either: %s", tag, one_line(error, _MAX_REASON_CHARS))
        return None

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
