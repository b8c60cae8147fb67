"""The default recipe: unset training settings decided from the data, explicit ones kept, and the
validation split sized so that early stopping means something."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tuneops.components.config import TrainingConfig, load_config
from tuneops.components.data.split_size import MAX_SHARE, validation_share
from tuneops.components.errors import ConfigError
from tuneops.components.tasks.registry import get_task
from tuneops.components.training.recipe import (
    MAX_EPOCHS,
    decide_recipe,
    recipe_for_run,
    unresolved_settings,
)
from tuneops.components.training.run_setup import plan_steps

TASK = get_task("text-classification")


def labels(counts: dict[str, int]) -> list[str]:
    return [label for label, count in counts.items() for _ in range(count)]


def choice(recipe, setting: str) -> dict:
    return next(row for row in recipe.to_json() if row["setting"] == f"training.{setting}")


def test_small_imbalanced_data_gets_small_batches_enough_steps_and_class_weights() -> None:
    # The shape of the patient reviews: 541 training rows, 64/27/9.
    train = labels({"good": 346, "mixed": 146, "bad": 49})
    recipe = decide_recipe(TrainingConfig(), train, np.full(len(train), 100), 512, parameters=22_700_000)
    config = recipe.config
    assert unresolved_settings(config) == []
    assert config.batch_size == 16
    assert config.class_weights == "balanced"
    assert config.learning_rate == 1e-4 and "22.7M parameters: 1e-4" in choice(recipe, "learning_rate")["reason"]
    # 3 epochs would be ~100 steps; the recipe asks for ~250.
    assert plan_steps(config, len(train), "cpu").total_steps >= 250
    assert "7.1x" in choice(recipe, "class_weights")["reason"]
    assert all(row["source"] == "auto" and row["reason"] for row in recipe.to_json())


def test_explicit_settings_always_win_and_say_so() -> None:
    given = TrainingConfig(batch_size=64, epochs=1, learning_rate=3e-5, class_weights="none", max_length=200)
    recipe = decide_recipe(given, labels({"a": 900, "b": 100}), np.full(1000, 30), 512)
    assert recipe.config.model_dump() == given.model_dump()
    assert {row["source"] for row in recipe.to_json()} == {"config"}


def test_balanced_classes_train_unweighted_and_adapters_get_a_larger_rate() -> None:
    recipe = decide_recipe(TrainingConfig(adapter="lora"), labels({"a": 500, "b": 420}), None, None, 110_000_000)
    assert recipe.config.class_weights == "none"
    assert recipe.config.learning_rate == pytest.approx(5e-4)


def test_larger_models_take_smaller_steps() -> None:
    rates = [decide_recipe(TrainingConfig(), labels({"a": 50, "b": 50}), None, None, size).config.learning_rate
             for size in (17_000_000, 110_000_000, 335_000_000, None)]
    assert rates == [1e-4, 5e-5, 2e-5, 5e-5]


def test_epochs_are_capped_for_tiny_data_and_large_data_gets_larger_batches() -> None:
    tiny = decide_recipe(TrainingConfig(), labels({"a": 30, "b": 30}), None, None)
    assert tiny.config.epochs == MAX_EPOCHS and "capped" in choice(tiny, "epochs")["reason"]
    large = decide_recipe(TrainingConfig(), labels({"a": 6000, "b": 6000}), None, None)
    assert large.config.batch_size == 32 and large.config.epochs == 3


def test_max_length_follows_the_length_distribution_and_the_model_limit() -> None:
    rng = np.random.default_rng(0)
    short = decide_recipe(TrainingConfig(), labels({"a": 500, "b": 500}), rng.integers(10, 41, 1000), 512)
    assert short.config.max_length == 48  # the 95th percentile (~39) rounded up to 16s
    long = decide_recipe(TrainingConfig(), labels({"a": 500, "b": 500}), np.full(1000, 900), 512)
    assert long.config.max_length == 512 and "at most 512" in choice(long, "max_length")["reason"]


def test_recipe_for_run_measures_real_token_lengths() -> None:
    train = pd.DataFrame({"text": ["great"] * 40 + ["a much longer text " * 20] * 60, "label": ["x", "y"] * 50})
    recipe = recipe_for_run(train, "packaged:all-MiniLM-L6-v2", TrainingConfig(), TASK)
    # 60% of the texts are ~82 tokens (20 x 4 words + [CLS]/[SEP]): the 95th percentile is theirs.
    assert 80 <= recipe.config.max_length <= 96


def test_validation_share_grows_for_small_data_and_rare_classes() -> None:
    assert validation_share(pd.Series(labels({"a": 1500, "b": 500})), None).share == pytest.approx(0.1)
    # 800 rows: 10% would be 80 rows, the floor is 200.
    assert validation_share(pd.Series(labels({"a": 400, "b": 400})), None).share == pytest.approx(0.25)
    rare = validation_share(pd.Series(labels({"a": 2700, "b": 150})), None)
    assert rare.share == pytest.approx(0.2) and "rarest class 'b'" in rare.reason
    capped = validation_share(pd.Series(labels({"a": 346, "b": 146, "c": 49})), None)
    assert capped.share == MAX_SHARE and "capped" in capped.reason
    assert validation_share(pd.Series(labels({"a": 10, "b": 10})), 0.3).source == "config"


def test_auto_values_are_not_accepted_where_a_number_is_expected() -> None:
    with pytest.raises(ConfigError, match="training.class_weights"):
        load_config(None, ["training.class_weights=sometimes"])
    assert load_config(None, ["training.epochs=4"]).training.epochs == 4
