"""The default pipeline on people's data: a few hundred VADER tweets (3 classes, imbalanced) through
the real CLI with nothing but the data's paths configured, as a user would first try it.

The demo data is easy; this is the check that the default recipe, selection and floor also give a
promoted model that clearly beats both the majority class and the TF-IDF floor on real text.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from tests.e2e.helpers import cli_environment
from tests.e2e.real_data import RealDataUnavailable, write_vader_splits
from tuneops.components.data.columns import LABEL
from tuneops.components.metrics import label_scores

TRAIN_ROWS, TEST_ROWS = 600, 300
# "Clearly above": the model must beat predicting the most common class by this much macro-F1 ...
OVER_MAJORITY = 0.15
# ... and the run's own floor (the TF-IDF baseline the gate scored on the same test rows) by this much.
OVER_FLOOR = 0.02


def majority_macro_f1(labels: pd.Series) -> float:
    """Macro-F1 of always predicting the most common label of ``labels`` (the metrics' convention)."""
    names = sorted(labels.astype(str).unique())
    truth = np.array([names.index(label) for label in labels.astype(str)])
    majority = names.index(labels.astype(str).value_counts().idxmax())
    return label_scores(truth, np.full(len(truth), majority), len(names))["macro_f1"]


@pytest.mark.slow
def test_default_run_on_real_tweets_promotes_a_model_well_above_majority_and_floor(tmp_path):
    try:
        train_csv, test_csv = write_vader_splits(tmp_path / "data", TRAIN_ROWS, TEST_ROWS, seed=0)
    except RealDataUnavailable as error:
        pytest.fail(f"real data unavailable: {error}", pytrace=False)
    config = tmp_path / "tweets.yaml"
    # Only the data: every other setting is tuneops's default, which is what this test is about.
    config.write_text(f"data:\n  path: {json.dumps(str(train_csv))}\n  test_path: {json.dumps(str(test_csv))}\n")
    home = tmp_path / "home"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "tuneops.flows.cli", "run", "--config", str(config)],
                            capture_output=True, text=True, env=cli_environment(home), timeout=1800)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]

    runs = sorted((home / "runs").iterdir())
    assert len(runs) == 1
    record = runs[0]
    summary = json.loads((record / "summary.json").read_text())
    evaluation = json.loads((record / "evaluation" / "evaluation.json").read_text())
    test_labels = pd.read_csv(test_csv)[LABEL]
    macro_f1 = summary["metrics"]["macro_f1"]
    floor = summary["gate"]["baseline"]
    majority = majority_macro_f1(test_labels)
    print(f"\nreal data (VADER tweets, {TRAIN_ROWS} train / {len(test_labels)} test rows, "
          f"{test_labels.value_counts().to_dict()}): status {summary['status']}, "
          f"model {summary.get('base_checkpoint')}, test macro-F1 {macro_f1:.3f}, TF-IDF floor "
          f"{floor if floor is None else format(floor, '.3f')}, majority class {majority:.3f}, "
          f"run {seconds:.0f}s", flush=True)
    print("gate: " + "; ".join(summary["gate"]["reasons"]), flush=True)
    print("stages (s): " + ", ".join(f"{name} {stage['seconds']:.0f}" for name, stage in summary["stages"].items()))
    print("recipe: " + "; ".join(f"{entry.get('setting')}={entry.get('value')} ({entry.get('source')})"
                                 for entry in summary.get("recipe") or []), flush=True)

    assert summary["status"] == "promoted", summary["gate"]["reasons"]
    assert evaluation["rows"] == len(test_labels)
    assert evaluation["metrics"]["macro_f1"] == pytest.approx(macro_f1)
    assert macro_f1 > majority + OVER_MAJORITY, (macro_f1, majority)
    assert floor is not None, "the gate recorded no TF-IDF floor score"
    assert macro_f1 > floor + OVER_FLOOR, (macro_f1, floor)
    # The run says how it trained (the recipe tuneops chose for this data), so the result can be repeated.
    assert summary.get("recipe"), "summary.json has no training recipe"
