"""The budgeted hyperparameter search (training.search): a real 3-trial search of a 2-layer MiniLM on
the easy reviews, through ``finetune``, then the engine hook that lets a trial be pruned."""

from __future__ import annotations

import json
import logging

import optuna
import pytest
import torch

from tuneops.components.config import TrainingConfig, load_config
from tuneops.components.errors import ConfigError
from tuneops.components.training.checkpoint import run_fingerprint
from tuneops.components.training.engine import train_in_process
from tuneops.components.training.finetune import finetune
from tuneops.components.training.outputs import SUMMARY_FILE, finished_model
from tuneops.components.training.recipe import recipe_for_run
from tuneops.components.training.run_setup import RunRequest
from tuneops.components.training.search import SEARCH_FILE, SEARCH_PAGE, SearchSpace
from tests.code.test_training import CHECKPOINT, TASK, tiny_splits

# One epoch of the 240 rows is 15 steps: trials of 9-15 steps, evaluated every 4. The config's own
# learning rate is too small to learn anything in that time, the searched range is not.
# learning_rate and class_weights are left to the recipe, so they are searched; epochs is set in
# the config, so it is not (an explicit value always wins), which also keeps the trials short.
SEARCHED = dict(
    batch_size=16, epochs=1.0, max_length=64, freeze_embeddings=True, threads=1,
    eval_every_steps=4, search={"trials": 3, "learning_rate": [5e-4, 3e-3], "epochs": [0.6, 1.0]},
)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    train, validation, labels = tiny_splits()
    output = tmp_path_factory.mktemp("searched") / "model"
    trained = finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**SEARCHED), output, task=TASK)
    return trained, json.loads((output / SEARCH_FILE).read_text())


def test_the_search_trains_with_the_settings_of_its_best_trial(searched) -> None:
    trained, result = searched
    rows = result["rows"]
    assert [row["trial"] for row in rows] == [0, 1, 2]
    assert {row["state"] for row in rows} <= {"complete", "pruned"}
    # Trial 0 is the recipe's own settings (1e-4: the 2-layer model is small); epochs is never searched.
    assert (rows[0]["learning_rate"], rows[0]["class_weights"]) == (1e-4, "none")
    assert {row["epochs"] for row in rows} == {1.0}
    assert rows[0]["state"] == "complete"
    complete = [row for row in rows if row["state"] == "complete"]
    best = max(complete, key=lambda row: row["validation_score"])
    chosen = next(row for row in rows if row["chosen"])
    assert chosen["validation_score"] == best["validation_score"] and result["chosen_trial"] == chosen["trial"]
    for row in rows:
        assert row["steps"] >= 4 and row["seconds"] > 0
    # The final fine-tune ran with the chosen trial's settings ...
    settings = json.loads((trained.path / "training_args.json").read_text())["config"]
    for name in ("learning_rate", "epochs", "class_weights"):
        assert settings[name] == chosen[name], name
    # ... and its recipe says where they came from.
    decided = {row["setting"]: row for row in trained.recipe}
    for name in ("learning_rate", "class_weights"):
        assert decided[f"training.{name}"]["source"] == "search"
        assert decided[f"training.{name}"]["reason"].startswith("best of 3 trials")
    assert decided["training.batch_size"]["source"] == decided["training.epochs"]["source"] == "config"
    page = (trained.path / SEARCH_PAGE).read_text()
    # The trials (a header and 3 rows) and the searched choices (a header and 2 rows).
    assert "Hyperparameter search" in page and page.count("<tr") == 1 + 3 + 1 + 2
    # The trials' weights are gone; only the final model is left.
    assert not (trained.path.parent / "search").exists()


def test_a_resumed_run_reuses_a_finished_search(searched, caplog) -> None:
    trained, result = searched
    train, validation, labels = tiny_splits()
    before = (trained.path / SEARCH_FILE).stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="tuneops"):
        again = finetune(train, validation, labels, CHECKPOINT, TrainingConfig(**SEARCHED), trained.path,
                         task=TASK, resume=True)
    assert "reusing the finished search" in caplog.text and "search trial" not in caplog.text
    assert (trained.path / SEARCH_FILE).stat().st_mtime_ns == before
    # The same settings as the first time, so the finished model is reused too.
    assert again.fingerprint == trained.fingerprint and again.resumed_from_step == trained.steps


def test_a_data_parallel_search_is_a_one_line_config_error(tmp_path) -> None:
    # Refused where the config is loaded, before any data or model work.
    with pytest.raises(ConfigError, match="one process"):
        load_config(None, ["training.search.trials=3", "training.processes=2"])


def test_the_search_space_holds_the_recipes_own_values() -> None:
    config = TrainingConfig(learning_rate=5e-4, epochs=12, class_weights="balanced",
                            search={"trials": 2, "learning_rate": [1e-5, 2e-4], "epochs": [1, 8],
                                    "class_weights": ["none"]})
    space = SearchSpace.around(config)
    assert space.learning_rate == (1e-5, 5e-4) and space.epochs == (1, 12)
    assert space.class_weights == ["balanced", "none"]
    assert space.own(config) == {"learning_rate": 5e-4, "epochs": 12, "class_weights": "balanced"}
    # With max_steps the epochs do not change a run's length, so they are not searched.
    assert SearchSpace.around(config.model_copy(update={"max_steps": 20})).names == ["learning_rate", "class_weights"]


def test_a_pruned_run_stops_at_once_and_leaves_no_finished_model(tmp_path) -> None:
    train, validation, labels = tiny_splits()
    config = TrainingConfig(max_steps=8, batch_size=16, eval_every_steps=2, learning_rate=1e-3, max_length=64,
                            freeze_embeddings=True, threads=1, checkpoint_every_steps=100)
    recipe = recipe_for_run(train, CHECKPOINT, config, TASK)
    output = tmp_path / "trial-0" / "model"
    request = RunRequest(train=train, validation=validation, labels=labels, checkpoint=CHECKPOINT,
                         config=recipe.config, output_dir=output, task=TASK)
    seen: list[tuple[int, dict]] = []

    def prune(step: int, metrics: dict[str, float]) -> None:
        seen.append((step, metrics))
        raise optuna.TrialPruned("trails the median")

    threads = torch.get_num_threads()
    with pytest.raises(optuna.TrialPruned):
        train_in_process(request, on_evaluation=prune)
    # Called once, at the first evaluation, with the validation scores; nothing after it ran.
    assert [step for step, _ in seen] == [2]
    assert set(seen[0][1]) == {"loss", "macro_f1", "accuracy"}
    assert not (output / SUMMARY_FILE).exists()
    fingerprint = run_fingerprint(recipe.config, CHECKPOINT, labels, train, validation, TASK.input_column)
    assert finished_model(output, fingerprint) is None
    assert torch.get_num_threads() == threads
