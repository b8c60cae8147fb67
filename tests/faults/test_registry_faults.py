"""Fault injection for the registry and the run record, with real processes that each test starts
and stops by their pid: ``kill -9`` of a training run and of the packager in the middle of its
copy, then SIGTERM of a resumed run; promotions and rollbacks racing from several processes.

After each fault the registry must still list (``tuneops models`` exits 0), the champion must be
the one from before, nothing half-written may be listed as a model, and the run record must say
what happened. Each process is bounded in time and killed by its pid if it overruns.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.e2e.helpers import cli_environment
from tests.tiny_model import save_tiny_text_model
from tuneops.components.model_store import LOCK_SUFFIX, STAGING_DIR

# A small run that reaches its first training checkpoint quickly (one candidate: no ranking).
TINY_RUN = [
    "--set", "data.max_rows=300", "--set", "training.max_steps=40", "--set", "training.batch_size=16",
    "--set", "training.checkpoint_every_steps=10", "--set", "evaluation.bootstrap_samples=20",
    "--set", "selection.candidates=[packaged:all-MiniLM-L6-v2@layers=2]",
    "--set", "selection.include_champion=false",
]
# Packages the model folder argv[1] argv[2] times, promotes the first (argv[3] == "promote") and
# prints each tag as it is packaged: the same component calls as a run's package stage.
PACKAGER = r"""
import sys
from pathlib import Path
from tuneops.components.paths import configure_environment
configure_environment()
import pandas as pd
from tuneops.components import registry
model_dir, count, promote = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "promote"
reference = pd.DataFrame({"text": [f"review {i}" for i in range(60)],
                          "label": ["negative", "neutral", "positive"] * 20})
for index in range(count):
    release = registry.package_model(model_dir, {"run_id": f"fault-{index}", "metrics": {"macro_f1": 0.5}},
                                     reference)
    if index == 0 and promote:
        registry.set_champion(release.tag)
    print(release.tag, flush=True)
"""
# One racing process: promotions of the tags it is given, a rollback every third step, through
# the same functions as `tuneops promote` and `tuneops rollback`, printing what they print.
RACER = r"""
import sys
from tuneops.components.paths import configure_environment
configure_environment()
from tuneops.components.errors import TuneopsError
from tuneops.flows import model_commands
worker, tags = int(sys.argv[1]), sys.argv[2:]
for step in range(6):
    try:
        if step % 3 == 2:
            model_commands.rollback()
        else:
            model_commands.promote(tags[(worker + step) % len(tags)])
    except TuneopsError as error:
        print(f"error: {error}", flush=True)
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT of about 40 MB (MiniLM's tokenizer): big enough that the
    packager's copy, checksums and flush take a while to be killed in."""
    return save_tiny_text_model(tmp_path_factory.mktemp("fault-model"), hidden_size=256,
                                base_checkpoint="fault-test-bert")


def tuneops(*args: str, home: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneops.flows.cli", *args], capture_output=True, text=True,
                          env=cli_environment(home), timeout=timeout)


def python(script: str, *args: str, home: Path, stdout, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=stdout, stderr=subprocess.STDOUT,
                            text=True, env=env or cli_environment(home))


def package_and_promote_first(model_dir: Path, count: int, home: Path, log_path: Path) -> list[str]:
    """Package ``count`` copies of the model without interruption, promote the first; their tags."""
    with open(log_path, "w") as log:
        packager = python(PACKAGER, str(model_dir), str(count), "promote", home=home, stdout=log)
    assert packager.wait(timeout=300) == 0, log_path.read_text()[-3000:]
    return log_path.read_text().split()


def wait_until(condition, process: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    """Poll ``condition`` every 5 ms until it holds; fail (the caller kills ``process``) when the
    process ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"ended before {what}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s: {log.read_text()[-3000:]}"
        time.sleep(0.005)


def stop(process: subprocess.Popen, how: signal.Signals, timeout: float = 120) -> None:
    """Send ``how`` to the process we started, then wait for it (SIGKILL by pid if it lingers)."""
    if process.poll() is None:
        process.send_signal(how)
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def pointer(home: Path) -> dict:
    return json.loads((home / "champion.json").read_text())


def listed_models(home: Path) -> list[dict]:
    listing = tuneops("models", "-o", "json", home=home)
    assert listing.returncode == 0, listing.stderr
    return json.loads(listing.stdout)


def assert_whole(model: dict) -> None:
    """A listed model has its model.yaml and every file that model.yaml lists, at its size."""
    path = Path(model["path"])
    files = yaml.safe_load((path / "model.yaml").read_text())["metadata"]["files"]
    assert {name: (path / name).stat().st_size for name in files} == {n: f["size"] for n, f in files.items()}


def test_kill_9_mid_training_leaves_the_champion_and_the_registry_alone_and_the_record_interrupted(
        tmp_path: Path, model_dir: Path) -> None:
    home = tmp_path / "home"
    champion = package_and_promote_first(model_dir, 1, home=home, log_path=tmp_path / "packager.log")[-1]
    before = (home / "champion.json").read_bytes()

    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        run = subprocess.Popen([sys.executable, "-m", "tuneops.flows.cli", "run", *TINY_RUN], stdout=log,
                               stderr=subprocess.STDOUT, env=cli_environment(home))
    try:
        wait_until(lambda: any(home.glob("runs/*/checkpoints/step-*")), run, log_path, "training checkpoint", 600)
    finally:
        stop(run, signal.SIGKILL)
    assert run.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    run_dir = next((home / "runs").iterdir())
    written = json.loads((run_dir / "summary.json").read_text())
    assert written["status"] == "running" and written["stages"]["finetune"]["status"] == "running"
    assert (home / "champion.json").read_bytes() == before
    # Reading the record judges it: the process that wrote "running" is gone.
    runs = json.loads(tuneops("runs", "-o", "json", home=home).stdout)
    assert [(entry["run_id"], entry["status"]) for entry in runs] == [(run_dir.name, "interrupted")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "ended before the run did" in summary["error"]
    assert summary["stages"]["finetune"]["status"] == "interrupted"
    assert "interrupted" in (run_dir / "index.html").read_text()

    # The registry lists as before; resuming with another config, or by a path, is refused in one
    # line and changes nothing. (Three processes at once: they only read.)
    commands = {"models": ["models", "-o", "json"],
                "changed": ["run", *TINY_RUN, "--set", "training.max_steps=41", "--resume", run_dir.name],
                "by_path": ["run", *TINY_RUN, "--resume", f"../../{home.name}/runs/{run_dir.name}"]}
    started = {name: subprocess.Popen([sys.executable, "-m", "tuneops.flows.cli", *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=cli_environment(home))
               for name, args in commands.items()}
    results = {}
    for name, process in started.items():
        try:
            results[name] = (*process.communicate(timeout=300), process.returncode)
        finally:
            stop(process, signal.SIGKILL, timeout=5)
    out, err, code = results["models"]
    assert code == 0, err
    assert [(model["tag"], model["is_champion"]) for model in json.loads(out)] == [(champion, True)]
    assert results["changed"][2] == 2 and "changed: training" in results["changed"][1], results["changed"][1]
    assert results["by_path"][2] == 2 and "is not a run id" in results["by_path"][1], results["by_path"][1]
    for _, err, _ in (results["changed"], results["by_path"]):
        assert "Traceback" not in err and len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert json.loads((run_dir / "summary.json").read_text()) == summary

    # The same config resumes it: the record is its again; SIGTERM is recorded by the run itself.
    log_path = tmp_path / "resumed.log"
    with open(log_path, "w") as log:
        resumed = subprocess.Popen([sys.executable, "-m", "tuneops.flows.cli", "run", *TINY_RUN, "--resume",
                                    run_dir.name], stdout=log, stderr=subprocess.STDOUT, env=cli_environment(home))

    def validating() -> bool:
        record = json.loads((run_dir / "summary.json").read_text())
        return record["process"]["pid"] == resumed.pid and "validate" in record["stages"]

    try:
        wait_until(validating, resumed, log_path, "resumed run's validation", 600)
    finally:
        stop(resumed, signal.SIGTERM)
    assert resumed.returncode != 0, "the resumed run finished before it could be stopped"
    summary = json.loads((run_dir / "summary.json").read_text())  # as the run wrote it, not judged
    assert summary["status"] == "interrupted" and summary["error"] == "interrupted by SIGTERM", summary["error"]
    assert summary["stages"]["validate"]["status"] == "interrupted"
    assert (home / "champion.json").read_bytes() == before
    assert [model["tag"] for model in listed_models(home)] == [champion]


def test_kill_9_of_the_packager_mid_copy_leaves_a_partial_entry_that_is_reported_and_cleaned(
        tmp_path: Path, model_dir: Path) -> None:
    home = tmp_path / "home"
    staging = home / "bentoml" / STAGING_DIR
    environment = {**cli_environment(home), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    leftovers: list[Path] = []
    champion = None
    for attempt in range(3):  # a kill can land just after a build was moved in; then again
        log_path = tmp_path / f"packager-{attempt}.log"
        with open(log_path, "w") as log:
            packager = python(PACKAGER, str(model_dir), "20", "promote" if champion is None else "no",
                              home=home, stdout=log, env=environment)
        try:
            # One whole model first (the champion, on the first attempt), then kill the next build.
            wait_until(lambda: log_path.read_text().strip(), packager, log_path, "packaged model", 300)
            wait_until(lambda: staging.is_dir() and any(path.is_dir() for path in staging.iterdir()), packager,
                       log_path, "build folder", 300)
        finally:
            stop(packager, signal.SIGKILL)
        champion = champion or log_path.read_text().split()[0]
        leftovers = [path for path in staging.iterdir() if path.is_dir()]
        if leftovers:
            break
    assert leftovers, "no kill landed inside a build in 3 attempts"
    assert pointer(home)["tag"] == champion

    listing = tuneops("models", home=home)
    assert listing.returncode == 0, listing.stderr
    assert champion in listing.stdout
    for leftover in leftovers:
        assert f"ignored partial entry {leftover}" in listing.stderr and leftover.name not in listing.stdout
    models = listed_models(home)
    assert champion in {model["tag"] for model in models}
    for model in models:  # nothing half-written is listed
        assert_whole(model)
    assert not list((tmp_path / "tmp").glob("bentoml-model-*")), "a temporary copy was left behind"

    cleaned = tuneops("models", "--clean", home=home)
    assert cleaned.returncode == 0, cleaned.stderr
    for leftover in leftovers:
        assert f"removed partial entry {leftover}" in cleaned.stderr
        assert not leftover.exists() and not leftover.with_name(leftover.name + LOCK_SUFFIX).exists()
    again = tuneops("models", home=home)
    assert again.returncode == 0 and "partial entry" not in again.stderr, again.stderr
    assert {model["tag"] for model in listed_models(home)} == {model["tag"] for model in models}
    assert pointer(home)["tag"] == champion


def test_concurrent_promotions_and_rollbacks_keep_the_pointer_valid_and_report_what_they_replaced(
        tmp_path: Path, model_dir: Path) -> None:
    home = tmp_path / "home"
    tags = package_and_promote_first(model_dir, 3, home=home, log_path=tmp_path / "packager.log")
    assert len(tags) == 3 and pointer(home)["tag"] == tags[0]

    logs = [tmp_path / f"racer-{worker}.log" for worker in range(4)]
    racers = []
    for worker, log_path in enumerate(logs):
        with open(log_path, "w") as log:
            racers.append(python(RACER, str(worker), *tags, home=home, stdout=log))
    torn = []
    try:
        deadline = time.monotonic() + 240
        while any(racer.poll() is None for racer in racers) and time.monotonic() < deadline:
            try:  # a reader never sees a torn or foreign pointer
                assert pointer(home)["tag"] in tags
            except (ValueError, KeyError, AssertionError) as error:
                torn.append(repr(error))
            time.sleep(0.01)
    finally:
        for racer in racers:
            stop(racer, signal.SIGKILL, timeout=5)
    assert [racer.returncode for racer in racers] == [0] * len(racers), [log.read_text()[-2000:] for log in logs]
    assert torn == []

    # Every switch printed the champion it replaced. Switches happen one at a time under the
    # pointer's lock, so they chain from the first champion to the last: each champion was
    # replaced as often as it was made champion (once more for the first, once less for the last).
    # A "(was X)" read outside the lock breaks the count for X.
    made, replaced, switches = Counter(), Counter(), 0
    for line in "".join(log.read_text() for log in logs).splitlines():
        switch = re.fullmatch(r"champion: (\S+) \((?:was|rolled back from) (\S+)\)", line)
        if switch:
            made[switch[1]] += 1
            replaced[switch[2]] += 1
            switches += 1
            assert switch[1] in tags and switch[2] in tags and switch[1] != switch[2], line
        else:
            assert re.fullmatch(r"\S+ is already the champion|error: no previous champion to roll back to.*",
                                line), line
    final = pointer(home)
    assert final["tag"] in tags and all(entry["tag"] in tags for entry in final["history"])
    assert switches > 0
    for tag in tags:
        assert replaced[tag] - made[tag] == (tag == tags[0]) - (tag == final["tag"]), (tag, made, replaced)
