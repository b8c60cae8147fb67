"""The optional budgeted hyperparameter search (``training.search``): a few real fine-tunes of the
recipe's learning rate, epochs and class weighting, judged on the validation split, through Optuna.

Trial 0 is always the recipe's own settings (``enqueue_trial``), so the search never picks
anything that scores worse on validation than what the recipe would have trained; the searched
ranges are widened to hold the recipe's values for that reason. Later trials are drawn by a seeded
TPE sampler; with ``pruning`` a trial whose validation score at an evaluation step trails the
median of earlier trials at that step is stopped there (Optuna's ``MedianPruner``, fed by the
engine's ``on_evaluation`` hook). Every trial is a full fine-tune in this process without
checkpoints, into its own scratch folder, removed when the trial ends; the final fine-tune then
runs with the chosen settings as any other run.

The trials' table goes to ``search.json`` and ``search.html`` in the report folder (the model
directory when ``finetune`` calls this), and the recipe's three choices say ``source: "search"``
with the scores behind them.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tuneops.components.config import TrainingConfig
from tuneops.components.errors import ConfigError
from tuneops.components.files import atomic_write_json
from tuneops.components.pages import html_table, write_page
from tuneops.components.tasks.base import Task
from tuneops.components.training.checkpoint import run_fingerprint
from tuneops.components.training.engine import train_in_process
from tuneops.components.training.recipe import Recipe, RecipeChoice
from tuneops.components.training.run_setup import RunRequest
from tuneops.components.training.runtime import distributed_context

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

SEARCH_FILE = "search.json"
SEARCH_PAGE = "search.html"
SEARCHED = ("learning_rate", "epochs", "class_weights")
# Trials before the sampler models the results and before the pruner compares against a median:
# with a budget of a handful of trials, Optuna's defaults (10 and 5) would leave both idle.
STARTUP_TRIALS = 2
# A trial is never resumed, so it writes no checkpoints.
NO_CHECKPOINTS = 10**9


@dataclass(frozen=True)
class SearchSpace:
    """The ranges the trials draw from; a setting is None when it is not searched: set in the
    config (an explicit value always wins), or ``epochs`` when ``max_steps`` fixes a run's length."""

    learning_rate: tuple[float, float] | None
    epochs: tuple[float, float] | None
    class_weights: list[str] | None

    @classmethod
    def around(cls, config: TrainingConfig, fixed: frozenset[str] = frozenset()) -> "SearchSpace":
        """``config.search``'s ranges, widened to hold ``config``'s own values (trial 0), without
        the settings named in ``fixed``."""
        search = config.search

        def widened(bounds: tuple[float, float], own: float) -> tuple[float, float]:
            return min(bounds[0], own), max(bounds[1], own)

        return cls(
            learning_rate=None if "learning_rate" in fixed else widened(search.learning_rate, config.learning_rate),
            epochs=None if config.max_steps is not None or "epochs" in fixed else widened(search.epochs, config.epochs),
            class_weights=None if "class_weights" in fixed else
            list(dict.fromkeys([config.class_weights, *search.class_weights])),
        )

    def own(self, config: TrainingConfig) -> dict[str, Any]:
        """``config``'s values of the searched settings: the parameters of trial 0."""
        return {name: getattr(config, name) for name in self.names}

    @property
    def names(self) -> list[str]:
        return [name for name in SEARCHED if getattr(self, name) is not None]

    def suggest(self, trial: "optuna.Trial") -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.learning_rate is not None:
            params["learning_rate"] = trial.suggest_float("learning_rate", *self.learning_rate, log=True)
        if self.epochs is not None:
            params["epochs"] = trial.suggest_float("epochs", *self.epochs)
        if self.class_weights is not None:
            params["class_weights"] = trial.suggest_categorical("class_weights", self.class_weights)
        return params


def search_recipe(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    labels: list[str],
    checkpoint: str,
    task: Task,
    recipe: Recipe,
    scratch_dir: Path,
    report_dir: Path,
    *,
    champion_dir: Path | None = None,
    resume: bool = False,
) -> Recipe:
    """Run ``recipe.config.search.trials`` fine-tunes (at most ``timeout_seconds`` of starting new
    ones) and return ``recipe`` with the learning rate, epochs and class weighting of the trial that
    scored best on validation (``early_stopping_metric``; lower is better for ``loss``).

    Trials run in ``scratch_dir/trial-N`` (removed as each ends); the table goes to
    ``report_dir/search.json`` and ``report_dir/search.html``. With ``resume`` a finished search
    of the same recipe and data (``search.json`` with the same fingerprint: settings, checkpoint,
    labels and both splits) is read back instead of run again; a search killed before it finished
    starts again from trial 0.

    Raises ConfigError for a data-parallel config (the trials run in one process) or an empty
    validation split.
    """
    config = recipe.config
    if config.processes > 1 or distributed_context().enabled:
        raise ConfigError("config: training.search runs its trials in one process; "
                          "set training.processes to 1 or training.search.trials to 0")
    if len(validation) == 0:
        raise ConfigError("config: training.search judges trials on the validation split, which is empty")
    fingerprint = run_fingerprint(config, checkpoint, labels, train, validation, task.input_column)
    if resume and (finished := _finished_search(Path(report_dir), fingerprint)) is not None:
        logger.info("search: reusing the finished search in %s", Path(report_dir) / SEARCH_FILE)
        return _apply(recipe, finished)

    import optuna

    # Optuna logs every trial at INFO; this module logs one line per trial itself.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search, metric = config.search, config.early_stopping_metric
    # A value set in the config always wins: only the recipe's own decisions are searched.
    space = SearchSpace.around(config, frozenset(c.setting for c in recipe.choices if c.source == "config"))
    if not space.names:
        raise ConfigError("config: training.search has nothing to search: learning_rate, epochs and "
                          "class_weights are all set in the config (or max_steps fixes the length)")
    study = optuna.create_study(
        direction="minimize" if metric == "loss" else "maximize",
        sampler=optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=STARTUP_TRIALS),
        pruner=(optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS) if search.pruning
                else optuna.pruners.NopPruner()),
    )
    study.enqueue_trial(space.own(config))
    scratch_dir = Path(scratch_dir)

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        trial_dir = scratch_dir / f"trial-{trial.number}"
        request = RunRequest(
            train=train, validation=validation, labels=list(labels), checkpoint=checkpoint,
            config=config.model_copy(update=params | {"checkpoint_every_steps": NO_CHECKPOINTS}),
            output_dir=trial_dir / "model", task=task, champion_dir=champion_dir, recipe=recipe.to_json(),
        )

        def report(step: int, metrics: dict[str, float]) -> None:
            trial.report(metrics[metric], step)
            trial.set_user_attr("steps", step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation {metric} {metrics[metric]:.4f} at step {step} trails the median")

        started = time.perf_counter()
        try:
            trained = train_in_process(request, on_evaluation=report)
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - started)
            shutil.rmtree(trial_dir, ignore_errors=True)
        trial.set_user_attr("steps", trained.steps)
        return trained.best_validation[metric]

    def log_trial(_, trial: optuna.trial.FrozenTrial) -> None:
        row = _row(trial, space, config, metric, study.direction)
        settings = ", ".join(f"{name}={_shown(name, row[name])}" for name in SEARCHED)
        logger.info("search trial %d (%d of %d) %s: %s -> validation %s %s (%s steps, %.1f s)", trial.number,
                    trial.number + 1, search.trials, row["state"], settings, metric,
                    _shown("score", row["validation_score"]), row["steps"], row["seconds"] or 0.0)

    shutil.rmtree(scratch_dir, ignore_errors=True)  # a killed search's leftovers
    started = time.perf_counter()
    try:
        study.optimize(objective, n_trials=search.trials, timeout=search.timeout_seconds, callbacks=[log_trial])
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
    rows = [_row(trial, space, config, metric, study.direction) for trial in study.trials]
    complete = [row for row in rows if row["state"] == "complete"]
    chosen = (min if metric == "loss" else max)(complete, key=lambda row: row["validation_score"]) if complete else None
    result = {
        "fingerprint": fingerprint, "metric": metric, "direction": study.direction.name.lower(),
        "trials": search.trials, "timeout_seconds": search.timeout_seconds, "pruning": search.pruning,
        "space": dataclasses.asdict(space), "seconds": time.perf_counter() - started,
        "chosen_trial": None if chosen is None else chosen["trial"],
        "choices": [dataclasses.asdict(choice) for choice in _choices(recipe, rows, chosen, metric, space)],
        "rows": [row | {"chosen": chosen is not None and row["trial"] == chosen["trial"]} for row in rows],
    }
    atomic_write_json(Path(report_dir) / SEARCH_FILE, result)
    write_search_page(Path(report_dir) / SEARCH_PAGE, result)
    if chosen is None:
        logger.warning("search: no trial finished; training with the recipe's own settings")
    return _apply(recipe, result)


def _row(trial: "optuna.trial.FrozenTrial", space: SearchSpace, config: TrainingConfig, metric: str,
         direction) -> dict[str, Any]:
    """One line of the table: a trial's settings, how far it got and its validation score (a
    pruned trial's best score before it was stopped)."""
    import optuna

    state = trial.state.name.lower()
    if trial.state == optuna.trial.TrialState.COMPLETE:
        score = trial.value
    elif trial.intermediate_values:
        pick = min if direction == optuna.study.StudyDirection.MINIMIZE else max
        score = pick(trial.intermediate_values.values())
    else:
        score = None
    params = space.own(config) | trial.params
    return {
        "trial": trial.number, "state": state,
        "learning_rate": params["learning_rate"], "epochs": params.get("epochs", config.epochs),
        "class_weights": params["class_weights"], "steps": trial.user_attrs.get("steps"),
        "validation_score": score, "seconds": trial.user_attrs.get("seconds"),
    }


def _choices(recipe: Recipe, rows: list[dict], chosen: dict | None, metric: str,
             space: SearchSpace) -> list[RecipeChoice]:
    """The recipe's choices with each searched setting replaced by the chosen trial's value."""
    if chosen is None:
        return list(recipe.choices)
    own_score = rows[0]["validation_score"] if rows[0]["state"] == "complete" else None
    pruned = sum(row["state"] == "pruned" for row in rows)
    best = f"best of {len(rows)} trials ({pruned} pruned): validation {metric} {chosen['validation_score']:.3f}"
    updated = []
    for choice in recipe.choices:
        if choice.setting not in space.names:
            updated.append(choice)
            continue
        whose = "the config's value" if choice.source == "config" else "the recipe's own value"
        if chosen["trial"] == 0:
            reason = f"{best}: {whose} {_shown(choice.setting, choice.value)} kept"
        else:
            scored = "did not finish" if own_score is None else f"scored {own_score:.3f}"
            reason = f"{best} ({whose} {_shown(choice.setting, choice.value)} {scored})"
        updated.append(RecipeChoice(choice.setting, chosen[choice.setting], "search", reason))
    return updated


def _apply(recipe: Recipe, result: dict) -> Recipe:
    """``recipe`` with the searched values of ``result`` (a search.json) in its config and choices."""
    choices = [RecipeChoice(**choice) for choice in result["choices"]]
    searched = {choice.setting: choice.value for choice in choices if choice.source == "search"}
    return Recipe(config=recipe.config.model_copy(update=searched), choices=choices)


def _finished_search(report_dir: Path, fingerprint: str) -> dict | None:
    """The search.json a finished search of this fingerprint left in ``report_dir``, or None."""
    path = report_dir / SEARCH_FILE
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return result if result.get("fingerprint") == fingerprint and "choices" in result else None


def write_search_page(path: Path, result: dict) -> Path:
    """``search.html``: one row per trial, the chosen one highlighted, and what it changed."""
    metric = result["metric"]
    headers = ["trial", "state", "learning rate", "epochs", "class weights", "steps", f"validation {metric}", "seconds"]
    rows = [[row["trial"], row["state"], _shown("learning_rate", row["learning_rate"]),
             _shown("epochs", row["epochs"]), row["class_weights"], row["steps"] if row["steps"] is not None else "",
             _shown("score", row["validation_score"]), _shown("seconds", row["seconds"])] for row in result["rows"]]
    css = {"pruned": "muted", "fail": "bad"}
    classes = ["ok" if row["chosen"] else css.get(row["state"]) for row in result["rows"]]
    searched = [c for c in result["choices"] if c["source"] == "search"]
    decided = "<p>No trial finished: the recipe's own settings stay.</p>"
    if searched:
        decided = html_table(["setting", "value", "why"],
                             [[f"training.{c['setting']}", _shown(c["setting"], c["value"]), c["reason"]]
                              for c in searched])
    better = "lower" if result["direction"] == "minimize" else "higher"
    body = f"""<p>{len(result["rows"])} of {result["trials"]} trial(s) in {result["seconds"]:.0f} s, each a fine-tune
judged on the validation split by {html.escape(metric)} ({better} is better). Trial 0 is the recipe's own settings;
{"a trial trailing the median of earlier ones at an evaluation step was stopped there (pruned)" if result["pruning"]
 else "pruning was off"}. The final fine-tune trains with the chosen (green) trial's settings.
<a href="{SEARCH_FILE}">{SEARCH_FILE}</a></p>
{html_table(headers, rows, classes, numeric={0, 2, 3, 5, 6, 7})}
<h2>Settings chosen</h2>{decided}
"""
    return write_page(path, "Hyperparameter search", body, subtitle=f"training.search, validation {metric}")


def _shown(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name == "learning_rate":
        return f"{value:.2e}"
    if name == "epochs":
        return f"{value:.2f}"
    if name == "score":
        return f"{value:.4f}"
    if name == "seconds":
        return f"{value:.1f}"
    return str(value)
