"""The config: defaults give the demo, overrides apply, mistakes are one clear line."""

from __future__ import annotations

import pytest

from tuneops.components.config import PipelineConfig, load_config
from tuneops.components.errors import ConfigError


def test_defaults_are_the_embedded_demo():
    config = load_config()
    assert config.data.path is None
    assert config.data.groups == ["product_category", "region"]
    assert config.selection.candidates[0] == "packaged:all-MiniLM-L6-v2"
    assert config == PipelineConfig()


def test_overrides_parse_yaml_values_and_apply():
    config = load_config(None, ["training.max_steps=20", "selection.candidates=[a, b]", "data.labels=[x, y]"])
    assert config.training.max_steps == 20
    assert config.selection.candidates == ["a", "b"]
    assert config.data.labels == ["x", "y"]


def test_the_image_task_has_its_own_defaults_and_explicit_values_win():
    config = load_config(None, ["task=image-classification"])
    assert config.task == "image-classification"
    assert config.selection.candidates == ["packaged:efficientnet-lite0"]
    # The digits demo: its own size, no group columns, none of the text demo's review cases.
    assert (config.data.demo_rows, config.data.groups, config.evaluation.demo_cases) == (1200, [], False)
    assert config.training.augment == ["flip", "crop", "jitter"]
    chosen = load_config(None, ["task=image-classification", "selection.candidates=[./mine]", "data.demo_rows=300",
                                "training.augment=[crop]"])
    assert (chosen.selection.candidates, chosen.data.demo_rows, chosen.training.augment) == (["./mine"], 300, ["crop"])
    assert load_config(None, ["training.augment=false"]).training.augment == []
    # Training on mirrored images declares that a mirror keeps the label: the flip check follows it.
    assert config.evaluation.flip_invariance is True and chosen.evaluation.flip_invariance is False
    assert load_config(None, ["task=image-classification", "training.augment=[crop]",
                              "evaluation.flip_invariance=true"]).evaluation.flip_invariance is True
    assert load_config(None, []).evaluation.flip_invariance is False  # text


def test_relative_data_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("data:\n  path: reviews.csv\n")
    assert load_config(path).data.path == str(tmp_path / "sub" / "reviews.csv")


def test_config_hash_changes_with_any_setting():
    assert load_config().config_hash() != load_config(None, ["training.seed=1"]).config_hash()
    assert load_config().config_hash() == load_config().config_hash()


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("training:\n  epoch: 3\n", [], "unknown key training.epoch (did you mean epochs?)"),
        ("trainig:\n  epochs: 3\n", [], "unknown key trainig (did you mean training?)"),
        ("", ["training.learning_rate=-1"], "training.learning_rate: Input should be greater than 0"),
        ("", ["training.batch_size=many"], "training.batch_size"),
        ("", ["gate.tolerance=2"], "gate.tolerance"),
        ("data: [1, 2\n", [], "not valid YAML at line"),
        ("- a\n- b\n", [], "must hold a mapping"),
        ("", ["training"], "--set expects section.key=value"),
        ("", ["task=audio"], "task: Input should be 'text-classification' or 'image-classification'"),
        ("", ["training.augment=[rotate]"], "training.augment.0"),
        ("", ["data.labels=[only]"], "at least 2 distinct labels"),
        # Names given twice (issue 15): a class or a column counted twice, not an internal error later.
        ("", ["data.labels=[a, b, a]"], "data.labels lists 'a' more than once"),
        ("", ["data.path=d.csv", "data.group_columns=[g1, g1]"], "data.group_columns lists 'g1' more than once"),
        ("data:\n  label_column: sentiment\n  group_columns: [region, sentiment]\n", [],
         "data.group_columns names the label column 'sentiment' (data.label_column)"),
        ("", ["data.max_bytes=0"], "data.max_bytes: Input should be greater than or equal to 1"),
    ],
)
def test_mistakes_are_config_errors_naming_the_problem(tmp_path, yaml_text, overrides, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2
