"""The registry: packaging into BentoML's model store, partial entries, the champion pointer, the
model commands.

The models here are real but tiny (a 2-layer BERT with MiniLM's tokenizer, random weights):
the registry only cares that a model directory is complete and loads, not that it is good.
Each test gets its own TUNEOPS_HOME (its own champion pointer); the model store is the session's.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tuneops.components import model_store, registry
from tuneops.components.errors import ConfigError, StageError
from tuneops.components.files import file_lock
from tuneops.components.predictor import Predictor
from tuneops.components.tasks.registry import get_task

from tests.tiny_model import LABELS, save_tiny_text_model

TEXT_TASK = get_task("text-classification")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_text_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(autouse=True)
def own_pointer(tmp_path: Path, monkeypatch) -> Path:
    """A fresh champion pointer per test (the pointer lives in TUNEOPS_HOME, read per call)."""
    home = tmp_path / "home"
    monkeypatch.setenv("TUNEOPS_HOME", str(home))
    return home


def reference_frame(rows: int = 12) -> pd.DataFrame:
    return pd.DataFrame({
        "text": [f"review number {i}" for i in range(rows)],
        "label": [LABELS[i % 3] for i in range(rows)],
        "prediction": [LABELS[(i + 1) % 3] for i in range(rows)],
        "region": ["north", "south"] * (rows // 2),
    })


def package(model_dir: Path, run_id: str = "run-1", **metadata) -> registry.ModelRelease:
    lineage = {"run_id": run_id, "metrics": {"macro_f1": np.float32(0.75), "accuracy": 0.8, "auc": float("nan")},
               "data_fingerprint": "abc123", "config_hash": "cfg42", "base_checkpoint": "tiny-test-bert",
               "labels": LABELS, **metadata}
    return registry.package_model(model_dir, lineage, reference_frame())


def test_package_saves_model_lineage_and_reference(tiny_model_dir: Path) -> None:
    release = package(tiny_model_dir)
    assert re.fullmatch(r"tuneops-classifier:[a-z0-9]+", release.tag)
    assert not release.is_champion
    meta = release.metadata
    assert meta["run_id"] == "run-1" and meta["data_fingerprint"] == "abc123" and meta["config_hash"] == "cfg42"
    assert meta["metrics"] == {"macro_f1": pytest.approx(0.75), "accuracy": 0.8}  # NaN left out, numpy -> float
    assert meta["label_map"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert meta["base_checkpoint"] == "tiny-test-bert"
    assert set(meta["files"]) >= {"model.safetensors", "tuneops.json", "reference.parquet", "lineage.json"}
    assert release.labels["run_id"] == "run-1"
    pd.testing.assert_frame_equal(release.reference(), reference_frame())
    assert json.loads((release.path / "lineage.json").read_text())["run_id"] == "run-1"
    texts = ["works well", "broke in a day"]
    np.testing.assert_allclose(Predictor.from_dir(release.model_dir).predict_proba(texts),
                               Predictor.from_dir(tiny_model_dir).predict_proba(texts), atol=1e-6)


def test_large_reference_is_sampled_down(tiny_model_dir: Path) -> None:
    big = pd.DataFrame({"text": [f"t{i}" for i in range(registry.MAX_REFERENCE_ROWS + 500)]})
    release = registry.package_model(tiny_model_dir, {"run_id": "big"}, big)
    assert len(release.reference()) == registry.MAX_REFERENCE_ROWS


def test_incomplete_model_directory_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tuneops.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_model_dir / name).read_bytes())
    before = {release.tag for release in registry.list_models()}
    with pytest.raises(StageError, match="safetensors"):
        registry.package_model(broken, {"run_id": "x"}, reference_frame())
    with pytest.raises(StageError, match="tuneops.json"):
        registry.package_model(tmp_path, {"run_id": "x"}, reference_frame())
    assert {release.tag for release in registry.list_models()} == before


def test_failure_inside_the_save_commits_nothing(tiny_model_dir: Path) -> None:
    before = {release.tag for release in registry.list_models()}
    unwritable = pd.DataFrame({"text": ["a", "b"], "mixed": [1, "two"]})  # Parquet refuses mixed types
    with pytest.raises(StageError, match="Parquet"):
        registry.package_model(tiny_model_dir, {"run_id": "x"}, unwritable)
    with pytest.raises(StageError, match="text"):
        registry.package_model(tiny_model_dir, {"run_id": "x"}, pd.DataFrame({"sentence": ["a"]}))
    assert {release.tag for release in registry.list_models()} == before
    # The failed build was removed, not left beside the store.
    assert registry.partial_entries() == []
    assert not [path for path in model_store.staging_dir().glob("*") if path.is_dir()]


def test_partial_entries_are_left_out_reported_and_cleaned_but_a_build_in_progress_is_not(
        tiny_model_dir: Path) -> None:
    from tuneops.flows.cli import app

    good = package(tiny_model_dir, run_id="whole")
    store = model_store.store_dir() / registry.MODEL_NAME
    # What BentoML's own save leaves when killed in its copy: files without model.yaml, or a torn one.
    no_yaml = store / "partialnoyaml01"
    shutil.copytree(good.path, no_yaml, ignore=shutil.ignore_patterns("model.yaml"))
    torn = store / "partialtorn0001"
    shutil.copytree(good.path, torn)
    (torn / "model.yaml").write_text((good.path / "model.yaml").read_text()[:40])
    # What a packager killed in its build leaves: a build folder whose lock nobody holds.
    staging = model_store.staging_dir()
    abandoned = staging / "abandoned000001"
    shutil.copytree(tiny_model_dir, abandoned)
    (staging / "abandoned000001.lock").touch()
    busy = staging / "inprogress00001"
    try:
        with file_lock(staging / "inprogress00001.lock"):  # a live build: this process holds its lock
            busy.mkdir()
            reasons = {leftover.path: leftover.reason for leftover in registry.partial_entries()}
            assert set(reasons) == {no_yaml, torn, abandoned}
            assert "no model.yaml" in reasons[no_yaml] and "unreadable model.yaml" in reasons[torn]
            assert "abandoned build" in reasons[abandoned]
            listed = {release.tag for release in registry.list_models()}
            assert good.tag in listed and not {tag for tag in listed if "partial" in tag}
            with pytest.raises(StageError, match=f"partial entry in the store \\({re.escape(str(no_yaml))}.*--clean"):
                registry.get_model("partialnoyaml01")

            runner = CliRunner()
            result = runner.invoke(app, ["models"])
            assert result.exit_code == 0 and good.tag in result.stdout
            for path in (no_yaml, torn, abandoned):
                assert f"ignored partial entry {path}" in result.stderr and path.name not in result.stdout
            assert json.loads(runner.invoke(app, ["models", "-o", "json"]).stdout)  # stdout stays JSON
            result = runner.invoke(app, ["models", "--clean"])
            assert result.exit_code == 0
            for path in (no_yaml, torn, abandoned):
                assert f"removed partial entry {path}" in result.stderr and not path.exists()
            assert not (staging / "abandoned000001.lock").exists()
            assert busy.is_dir() and registry.partial_entries() == []
        # Once its builder is gone, the same folder is abandoned.
        assert [leftover.path for leftover in registry.partial_entries()] == [busy]
    finally:
        for path in (no_yaml, torn, abandoned, busy):
            shutil.rmtree(path, ignore_errors=True)
        registry.remove_partial_entries()
    assert registry.partial_entries() == [] and registry.get_model(good.tag).tag == good.tag


def test_a_removed_model_leaves_the_store_whole_and_the_champion_is_never_removed(tiny_model_dir: Path) -> None:
    kept, removed = package(tiny_model_dir, run_id="kept"), package(tiny_model_dir, run_id="removed")
    registry.set_champion(kept.tag)
    registry.remove_model(removed.tag)
    assert not removed.path.exists() and registry.partial_entries() == []
    assert removed.tag not in {release.tag for release in registry.list_models()}
    with pytest.raises(ConfigError, match="no model"):
        registry.get_model(removed.tag)
    with pytest.raises(StageError, match="is the champion"):
        registry.remove_model(kept.tag)
    assert registry.verify_model(kept.tag).tag == kept.tag


def test_promote_rollback_and_listing(tiny_model_dir: Path, own_pointer: Path) -> None:
    first, second, third = (package(tiny_model_dir, run_id=f"r{i}") for i in range(3))
    assert registry.champion() is None and registry.champion_model_dir() is None
    with pytest.raises(StageError, match="no previous champion"):
        registry.rollback()

    promoted = registry.set_champion(first.tag)
    assert promoted.is_champion and promoted.previous_champion is None
    assert registry.champion().tag == first.tag
    assert registry.set_champion(second.tag.split(":")[1]).previous_champion == first.tag  # a bare version is enough
    assert registry.set_champion(third.tag).previous_champion == second.tag
    again = registry.set_champion(third.tag)  # promoting the champion again changes nothing
    assert again.previous_champion == third.tag
    assert registry.champion_model_dir() == third.path

    listed = {release.tag: release for release in registry.list_models()}
    assert [tag for tag, release in listed.items() if release.is_champion] == [third.tag]
    assert listed[first.tag].metrics["accuracy"] == 0.8
    created = [release.created for release in registry.list_models()]
    assert created == sorted(created, reverse=True)

    back = registry.rollback()
    assert (back.tag, back.previous_champion) == (second.tag, third.tag)
    assert registry.rollback().tag == first.tag
    with pytest.raises(StageError, match="no previous champion"):
        registry.rollback()
    assert registry.champion().tag == first.tag
    state = json.loads((own_pointer / "champion.json").read_text())
    assert state["tag"] == first.tag and state["history"] == []


@pytest.mark.parametrize(("content", "problem"), [
    ('["tuneops-classifier:abc"]', "expected a JSON object, found list"),
    ('{"tag": 3}', "'tag' is not a model tag"),
    ('{"tag": "tuneops-classifier:abc", "history": "tuneops-classifier:old"}', "'history' is not a list"),
    ('{"tag": "tuneops-classifier:abc", "history": ["tuneops-classifier:old"]}',
     "history[0] is not an object with a model tag"),
    ('{"tag": "tuneops-classifier:abc", "history": [{"tag": "tuneops-classifier:old", "promoted_at": 5}]}',
     "history[0].promoted_at is not a string"),
])
def test_a_hand_edited_pointer_of_the_wrong_shape_is_one_line_naming_the_file(
        own_pointer: Path, content: str, problem: str) -> None:
    from tuneops.flows.cli import app

    own_pointer.mkdir(parents=True, exist_ok=True)
    path = own_pointer / "champion.json"
    path.write_text(content)
    expected = f"champion pointer {path} is malformed: {problem}; fix or delete it"
    for read in (registry.rollback, registry.champion_tag, registry.list_models):
        with pytest.raises(StageError) as raised:
            read()
        assert str(raised.value) == expected
    result = CliRunner().invoke(app, ["rollback"])
    assert result.exit_code == 1 and result.stderr == f"error: {expected}\n"
    assert path.read_text() == content  # nothing was written over it


def test_unknown_or_foreign_tag_is_a_one_line_config_error() -> None:
    import bentoml

    with pytest.raises(ConfigError, match="no model 'tuneops-classifier:doesnotexist'"):
        registry.set_champion("tuneops-classifier:doesnotexist")
    with bentoml.models.create("some-other-model") as model:
        (Path(model.path) / "weights.bin").write_bytes(b"0")
    with pytest.raises(ConfigError, match="not a tuneops model"):
        registry.set_champion(str(model.tag))
    assert registry.normalise_tag("abc") == "tuneops-classifier:abc"
    assert registry.normalise_tag("tuneops-classifier") == "tuneops-classifier:latest"


@pytest.mark.parametrize("damage", ["truncate weights", "delete tokenizer", "flip a byte"])
def test_damaged_or_half_copied_model_never_becomes_champion(tiny_model_dir: Path, damage: str) -> None:
    good = package(tiny_model_dir, run_id="good")
    registry.set_champion(good.tag)
    bad = package(tiny_model_dir, run_id="bad")
    if damage == "truncate weights":  # what a crash in the middle of the store's copy leaves
        weights = bad.path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "delete tokenizer":
        (bad.path / "tokenizer.json").unlink()
    else:
        weights = bad.path / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    with pytest.raises(StageError, match=f"model {re.escape(bad.tag)} is (incomplete|damaged)"):
        registry.set_champion(bad.tag)
    assert registry.champion().tag == good.tag
    # Rollback skips a previous champion that was damaged after its promotion.
    later = package(tiny_model_dir, run_id="later")
    registry.set_champion(later.tag)
    registry.set_champion(package(tiny_model_dir, run_id="third").tag)
    (good.path / "lineage.json").unlink()
    assert registry.rollback().tag == later.tag
    with pytest.raises(StageError, match=f"unusable: {re.escape(good.tag)}"):
        registry.rollback()
    assert registry.champion().tag == later.tag


def test_concurrent_promotions_keep_the_pointer_whole(tiny_model_dir: Path, own_pointer: Path) -> None:
    tags = [package(tiny_model_dir, run_id=f"c{i}").tag for i in range(2)]
    registry.set_champion(tags[0])
    problems: list[str] = []
    stop = threading.Event()

    def read_constantly() -> None:
        while not stop.is_set():
            try:
                assert json.loads((own_pointer / "champion.json").read_text())["tag"] in tags
            except Exception as error:  # any torn read is a failure of atomicity
                problems.append(repr(error))

    def promote(tag: str) -> None:
        for _ in range(15):
            registry.set_champion(tag)

    reader = threading.Thread(target=read_constantly)
    reader.start()
    writers = [threading.Thread(target=promote, args=(tag,)) for tag in tags]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    stop.set()
    reader.join()
    assert problems == []
    state = json.loads((own_pointer / "champion.json").read_text())
    assert state["tag"] in tags and len(state["history"]) <= registry.MAX_HISTORY
    # No promotion was lost: each switch appended the champion it replaced.
    assert all(entry["tag"] in tags for entry in state["history"])


def test_model_commands(tiny_model_dir: Path) -> None:
    from tuneops.flows.cli import app

    first, second = package(tiny_model_dir, run_id="cli-1"), package(tiny_model_dir, run_id="cli-2")
    runner = CliRunner()
    # (`tuneops serve` without a champion starts anyway, not ready: tests/faults/test_serving_faults.py.)
    result = runner.invoke(app, ["serve", "--model", "no-such-version"])
    assert result.exit_code == 2 and "no model 'no-such-version' in the store" in result.output
    result = runner.invoke(app, ["promote", first.tag])
    assert result.exit_code == 0 and f"champion: {first.tag}" in result.output
    result = runner.invoke(app, ["promote", second.tag])
    assert result.exit_code == 0 and f"(was {first.tag})" in result.output
    result = runner.invoke(app, ["promote", second.tag])
    assert result.exit_code == 0 and result.output == f"{second.tag} is already the champion\n"
    listed = json.loads(runner.invoke(app, ["models", "-o", "json"]).output)
    champions = [entry["tag"] for entry in listed if entry["is_champion"]]
    assert champions == [second.tag] and {first.tag, second.tag} <= {entry["tag"] for entry in listed}
    table = runner.invoke(app, ["models"]).output
    assert second.tag in table and "cli-2" in table and "0.750" in table
    result = runner.invoke(app, ["rollback"])
    assert result.exit_code == 0 and result.output == f"champion: {first.tag} (rolled back from {second.tag})\n"
    result = runner.invoke(app, ["promote", "nope"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "no model" in result.output
    result = runner.invoke(app, ["serve", "--model", "nope"])
    assert result.exit_code == 2 and "no model" in result.output


def test_serving_requirements_follow_the_lock_file() -> None:
    def pins(path: Path) -> dict[str, str]:
        found = {}
        for line in path.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                name, version = line.split("#")[0].strip().split("==")
                found[name.lower().replace("_", "-")] = version
        return found

    lock, serving = pins(ROOT / "requirements.lock"), pins(ROOT / "serving" / "requirements.txt")
    assert serving and {name: lock.get(name) for name in serving} == serving


def test_serving_dockerfile_serves_the_service_as_non_root_on_port_3000() -> None:
    """Docker is not available here: check the recipe against the code it packages."""
    text = (ROOT / "docker" / "serving.Dockerfile").read_text().replace("\\\n", " ")
    instructions = [line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    by_word: dict[str, list[str]] = {}
    for word, arguments in instructions:
        by_word.setdefault(word, []).append(arguments)
    assert "-r serving/requirements.txt -c requirements.lock" in " ".join(by_word["RUN"])
    copied = " ".join(by_word["COPY"])
    for path in ("components", "serving", "requirements.lock"):
        assert path in copied and (ROOT / path).exists()
    assert by_word["USER"][-1] not in ("root", "0")
    command = json.loads(by_word["CMD"][-1])
    assert command[:3] == ["bentoml", "serve", "tuneops.serving.service:TuneopsClassifier"]
    assert command[command.index("--host") + 1] == "0.0.0.0" and command[command.index("--port") + 1] == "3000"
    environment = " ".join(by_word["ENV"])
    assert "TUNEOPS_HOME=/data" in environment and "BENTOML_HOME=/data/bentoml" in environment
    assert "/readyz" in " ".join(by_word["HEALTHCHECK"])


def test_the_service_model_holder_follows_the_pointer_and_survives_a_bad_champion(tiny_model_dir: Path) -> None:
    from tuneops.serving.model_holder import ModelHolder, served_task

    first, second, third = (package(tiny_model_dir, run_id=f"h{i}") for i in range(3))
    # The request schema's task comes from the served model's manifest (the default without one).
    assert served_task(None) is TEXT_TASK and served_task(first.tag) is TEXT_TASK
    with pytest.raises(StageError, match="no champion model to serve"):
        ModelHolder().load_initial()
    registry.set_champion(first.tag)
    swaps, failures = [], []
    holder = ModelHolder(on_swap=lambda old, new: swaps.append((old, new)),
                         on_swap_failure=lambda tag, reason: failures.append(tag))
    assert holder.load_initial().tag == first.tag and holder.ready
    assert holder.task_name == TEXT_TASK.name
    assert holder.check_now() is False  # pointer unchanged: one stat, nothing else

    registry.set_champion(second.tag)
    assert holder.check_now() is True and holder.current.tag == second.tag
    assert swaps == [(first.tag, second.tag)]

    registry.set_champion(third.tag)
    (third.path / "model.safetensors").write_bytes(b"damaged after promotion")
    assert holder.check_now() is False
    assert holder.current.tag == second.tag and failures == [third.tag]
    with pytest.raises(StageError, match="damaged|incomplete"):
        registry.set_champion(third.tag)  # the registry refuses it outright now
    assert holder.check_now() is False and failures == [third.tag]  # pointer unchanged: no retry

    pinned = ModelHolder(pinned_tag=second.tag)
    assert pinned.load_initial().tag == second.tag
    registry.set_champion(first.tag)
    pinned.start_watching()  # a pinned model has nothing to watch
    assert pinned.check_now() is False and pinned.current.tag == second.tag
