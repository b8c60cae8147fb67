"""Loading the user's data (or the demo) into train / validation / test splits.

Loading only checks what it must to build the splits: the source is safe to read (``guards``:
regular files within ``data.max_bytes``), it is readable, the columns the config names exist and
play one role each, and each label is one value. Everything about the *content* (nulls, label
set, duplicates, leakage, ...) is the job of ``tuneops.components.validation.validate``, which
sees the raw values kept here.

A task whose inputs are files (``Task.input_suffixes``: images) may also name a folder with one
sub-folder per class, or a table of paths relative to it (``image_folder``). Loading asks the task
only whether its inputs are files and which suffixes they have, so it never names a modality; the
files themselves are hashed for the fingerprint, never decoded (validation decodes them).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tuneops.components.config import DEFAULT_MAX_DATA_BYTES, DataConfig
from tuneops.components.data.columns import LABEL, SPLITS
from tuneops.components.data.guards import (
    check_column_roles, check_input_files_size, check_regular_file, check_scalar_labels, check_source_size,
)
from tuneops.components.data.image_folder import absolute_paths, file_content_hashes, read_class_folders
from tuneops.components.data.split_size import ValidationShare, validation_share
from tuneops.components.errors import ConfigError, DataError
from tuneops.components.sampling import stratified_sample, stratified_split

if TYPE_CHECKING:
    from tuneops.components.tasks.base import Task

_log = logging.getLogger(__name__)

_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class DatasetSplits:
    """Train / validation / test frames with the canonical input column (the task's
    ``input_column``) and ``label`` column plus the group columns. Values are as read (labels may
    still be NaN or floats) until validation has passed."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    group_columns: list[str]
    source: str
    fingerprint: str
    #: the column holding the model's input: the task's ``input_column``
    input_column: str
    declared_labels: list[str] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    #: how much of the training rows was held out for early stopping, and why
    validation_share: ValidationShare | None = None

    def split(self, name: str) -> pd.DataFrame:
        return getattr(self, name)

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [(name, self.split(name)) for name in SPLITS]

    @property
    def labels(self) -> list[str]:
        """The label set: declared in the config, else the sorted labels seen in train."""
        if self.declared_labels:
            return list(self.declared_labels)
        return sorted({str(value) for value in self.train[LABEL].dropna().unique()})

    def sizes(self) -> dict[str, int]:
        return {name: len(frame) for name, frame in self.items()}


def load_data(config: DataConfig, demo_directory: Path, task: "Task") -> DatasetSplits:
    """Read the configured data (or write and read the task's demo) and split it.

    The user's input column (``task.source_column(config)``) becomes ``task.input_column``; for a
    task whose inputs are files it holds absolute paths (from a class-folder layout or a table).
    What a folder layout left out (hidden and other files) is one line in ``extra["ignored"]``.
    Raises ConfigError when a named column is missing or two settings name one column, DataError
    when a file cannot be read, is not a regular file or is larger than ``config.max_bytes``.
    """
    if config.path is None:
        path = task.write_demo(demo_directory, rows=config.demo_rows)
    else:
        path = Path(config.path).expanduser()
    ignored: list[str] = []
    frame = read_inputs(path, config, task, ignored)
    if config.test_path:
        test_path = Path(config.test_path).expanduser()
        test = read_inputs(test_path, config, task, ignored)
        if config.max_rows:
            frame = stratified_sample(frame, config.max_rows, config.split_seed)
        held_out = validation_share(frame[LABEL], config.validation_fraction)
        train, validation = stratified_split(frame, held_out.share, config.split_seed)
        source = f"{path} + {test_path}"
    else:
        if config.max_rows:
            frame = stratified_sample(frame, config.max_rows, config.split_seed)
        rest, test = stratified_split(frame, config.test_fraction, config.split_seed)
        # validation_fraction is a share of the whole file; the validation split is cut from the rest.
        held_out = validation_share(frame[LABEL], config.validation_fraction)
        train, validation = stratified_split(rest, held_out.share / (1 - config.test_fraction), config.split_seed)
        source = str(path)
    frames = {"train": train, "validation": validation, "test": test}
    frames = {name: part.reset_index(drop=True) for name, part in frames.items()}
    return DatasetSplits(
        **frames,
        group_columns=config.groups,
        source=source,
        fingerprint=fingerprint_frames(_with_file_contents(frames, task)),
        input_column=task.input_column,
        declared_labels=config.labels,
        extra={"ignored": "; ".join(ignored)} if ignored else {},
        validation_share=held_out,
    )


def read_inputs(path: Path, config: DataConfig, task: "Task", ignored: list[str]) -> pd.DataFrame:
    """One data source (``data.path`` or ``data.test_path``) as the canonical columns.

    For a task whose inputs are files, a directory that is not a saved Hugging Face dataset is a
    class-folder layout, and the paths in a table are made absolute against the table's folder.
    """
    check_column_roles(config, task)
    suffixes = tuple(task.input_suffixes)
    if suffixes and config.format == "auto" and path.is_dir() and not _is_hf_dataset(path):
        listing = read_class_folders(path, suffixes, task.source_column(config), config.label_column)
        if listing.ignored:
            _log.warning(listing.ignored)
            ignored.append(listing.ignored)
        frame = _canonical_columns(listing.frame, config, path, task)
    else:
        frame = _canonical_columns(read_table(path, config.format, config.max_bytes), config, path, task)
        if suffixes:
            base = path if path.is_dir() else path.parent
            frame[task.input_column] = absolute_paths(frame[task.input_column], base)
    if suffixes:
        # Before any input file is read (hashed for the fingerprint, decoded by validation).
        check_input_files_size(frame[task.input_column], config.max_bytes, path)
    return frame


def _with_file_contents(frames: dict[str, pd.DataFrame], task: "Task") -> dict[str, pd.DataFrame]:
    """The frames to fingerprint: for file inputs, each path replaced by its file's content hash,
    so changed pixels change the fingerprint and a moved folder does not."""
    if not task.input_suffixes:
        return frames
    column = task.input_column
    cache: dict[str, str] = {}
    return {name: frame.assign(**{column: file_content_hashes(frame[column], cache)}) for name, frame in frames.items()}


def read_table(path: Path, file_format: str = "auto", max_bytes: int = DEFAULT_MAX_DATA_BYTES) -> pd.DataFrame:
    """Read one data file (CSV, TSV, JSONL, Parquet) or a saved Hugging Face dataset directory.

    Raises DataError with one line (and, where it can tell, the line of the file and a hint)
    for anything unreadable: not a regular file, over ``max_bytes``, empty, not UTF-8, NUL
    bytes, ragged rows, bad JSON, bad Parquet. Size and file type are checked before any read.
    """
    if not path.exists():
        raise DataError(f"data: {path} does not exist")
    if not path.is_dir():
        check_regular_file(path)  # before its suffix is looked at: /dev/urandom has none
    kind = _detect_format(path, file_format)
    check_source_size(path, max_bytes)
    if kind != "hf" and path.is_file() and path.stat().st_size == 0:
        raise DataError(f"data: {path} is empty")
    if kind in ("csv", "tsv"):
        _check_text_file(path)
    try:
        if kind == "hf":
            return _read_hf_dataset(path)
        if kind == "parquet":
            frame = pd.read_parquet(path)
        elif kind == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False, encoding="utf-8-sig")
            if isinstance(frame.columns, pd.RangeIndex) and not frame.empty:
                raise DataError(f"data: {path}: each line must be a JSON object with named fields, e.g. "
                                '{"text": "...", "label": "..."}')
        else:
            # utf-8-sig drops a byte-order mark; invalid bytes fail loudly below instead of
            # turning silently into replacement characters. index_col=False stops pandas from
            # quietly turning extra leading fields of a ragged row into an index, and the
            # warning it gives instead is made an error: it means data would be dropped.
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(
                    path, sep="\t" if kind == "tsv" else ",", encoding="utf-8-sig", dtype=str,
                    keep_default_na=False, na_values=[""], index_col=False,
                )
    except UnicodeDecodeError as error:
        raise DataError(f"data: {path} is not valid UTF-8{_utf8_problem(path, error)}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data: {path} is empty") from None
    except pd.errors.ParserWarning:
        raise DataError(
            f"data: cannot read {path} as {kind}: a row has more fields than the header{_delimiter_hint(path, kind)}"
        ) from None
    except (pd.errors.ParserError, ValueError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if kind == "jsonl":
            first = _first_bad_json_line(path) or first
        elif kind in ("csv", "tsv"):
            first += _delimiter_hint(path, kind)
        raise DataError(f"data: cannot read {path} as {kind}: {first}") from None
    except DataError:
        raise
    except Exception as error:  # pyarrow raises its own error types for corrupt Parquet files
        raise DataError(f"data: cannot read {path} as {kind}: {type(error).__name__}: {error}") from None
    if frame.empty:
        raise DataError(f"data: {path} has column names but no rows")
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame


_SCAN_CHUNK = 1 << 24  # 16 MiB: the checks below stream the file rather than load it twice


def _check_text_file(path: Path) -> None:
    """Fail early on delimited files that are not text: pandas' C parser would cut a cell at a
    NUL byte silently, and compressed or UTF-16 files only give a bare decode error."""
    with path.open("rb") as handle:
        head = handle.read(4)
        if head[:2] == b"\x1f\x8b":
            raise DataError(f"data: {path} is gzip-compressed; decompress it first")
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise DataError(f"data: {path} is UTF-16 encoded; save it as UTF-8")
        handle.seek(0)
        newlines = 0
        while chunk := handle.read(_SCAN_CHUNK):
            at = chunk.find(b"\x00")
            if at >= 0:
                line = newlines + chunk.count(b"\n", 0, at) + 1
                raise DataError(f"data: {path} contains a NUL byte on line {line}: binary data, not CSV text")
            newlines += chunk.count(b"\n")


def _utf8_problem(path: Path, error: UnicodeDecodeError) -> str:
    """Where the first invalid UTF-8 byte is (pandas reports an offset inside its buffer)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    newlines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_SCAN_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as found:
                # The decoder may hold back up to 3 bytes of an unfinished character from the
                # previous chunk; the reported position is within this chunk's decoded input.
                position = max(0, found.start - (len(found.object) - len(chunk)))
                line = newlines + chunk.count(b"\n", 0, position) + 1
                bad = chunk[position : position + 1].hex()
                return f": byte 0x{bad} on line {line} ({found.reason}); re-save the file as UTF-8"
            newlines += chunk.count(b"\n")
    return f" ({error.reason})"


def _delimiter_hint(path: Path, kind: str) -> str:
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as handle:
            header = handle.readline()
    except OSError:
        return ""
    used = "\t" if kind == "tsv" else ","
    counts = {sep: header.count(sep) for sep in (",", "\t", ";", "|")}
    likely = max(counts, key=counts.get)
    if counts[likely] and likely != used and counts[likely] > counts[used]:
        shown = {"\t": "tab", ",": "','", ";": "';'", "|": "'|'"}
        return (f" (the header looks {shown[likely]}-separated; tuneops reads .csv as comma- and .tsv as "
                "tab-separated: convert the file or set data.format)")
    return " (is a quote unbalanced, or the delimiter wrong?)"


def _first_bad_json_line(path: Path) -> str | None:
    """The first line of a JSONL file that is not a JSON object, as a message."""
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                return f"line {number} is not valid JSON ({error.msg} at column {error.colno})"
            if not isinstance(value, dict):
                return f"line {number} is a JSON {type(value).__name__}, not an object with named fields"
    return None


def fingerprint_frames(frames: dict[str, pd.DataFrame]) -> str:
    """A content hash of the splits: the same rows in the same splits give the same fingerprint."""
    digest = hashlib.sha256()
    for name in sorted(frames):
        digest.update(name.encode())
        hashed = pd.util.hash_pandas_object(frames[name].astype(str), index=False).to_numpy()
        digest.update(hashed.tobytes())
    return digest.hexdigest()[:16]


def _detect_format(path: Path, file_format: str) -> str:
    if file_format != "auto":
        if file_format == "hf" and not path.is_dir():
            raise DataError(f"data: {path} is not a directory, so not a saved Hugging Face dataset")
        return file_format
    if path.is_dir():
        if _is_hf_dataset(path):
            return "hf"
        raise DataError(f"data: {path} is a directory but not a saved Hugging Face dataset (no dataset_info.json)")
    kind = _SUFFIX_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"data: cannot tell the format of {path.name}; use .csv, .tsv, .jsonl or .parquet, or set data.format"
        )
    return kind


def _is_hf_dataset(path: Path) -> bool:
    """Whether a directory holds a dataset saved with ``datasets.save_to_disk``."""
    return any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json", "state.json"))


def _read_hf_dataset(path: Path) -> pd.DataFrame:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as error:  # datasets raises FileNotFoundError / ValueError / its own types
        raise DataError(f"data: cannot load the Hugging Face dataset at {path}: {error}") from None
    if isinstance(loaded, datasets.DatasetDict):
        split = "train" if "train" in loaded else next(iter(loaded))
        loaded = loaded[split]
    return loaded.to_pandas()


def _canonical_columns(frame: pd.DataFrame, config: DataConfig, path: Path, task: "Task") -> pd.DataFrame:
    columns = list(frame.columns)
    source = task.source_column(config)
    source_key = f"data.{task.input_noun}_column"
    wanted = {source_key: source, "data.label_column": config.label_column}
    wanted.update({f"data.group_columns[{i}]": name for i, name in enumerate(config.groups)})
    for key, name in wanted.items():
        if name not in columns:
            shown = ", ".join(columns[:20]) + (" ..." if len(columns) > 20 else "")
            hint = " (is the delimiter right?)" if len(columns) == 1 else ""
            raise ConfigError(f"config: {key} '{name}' not found in {path.name}; columns are: {shown}{hint}")
    check_scalar_labels(frame[config.label_column], config.label_column, path)
    kept = frame[[source, config.label_column, *config.groups]].copy()
    kept.columns = [task.input_column, LABEL, *config.groups]
    return kept


def describe_splits(splits: DatasetSplits) -> str:
    """One line for logs: sizes and label counts of each split."""
    parts = {name: frame[LABEL].astype(str).value_counts().to_dict() for name, frame in splits.items()}
    return json.dumps({"sizes": splits.sizes(), "labels": parts})


def as_validated(splits: DatasetSplits) -> DatasetSplits:
    """The splits with the input and ``label`` columns as strings: call once validation has passed.

    Rows without an input or a label are dropped: with ``validation.on_failure: warn`` they may
    have got this far, and a missing label must never become a class called "nan".
    """
    column = splits.input_column
    frames = {}
    for name, frame in splits.items():
        frame = frame.dropna(subset=[column, LABEL]).copy()
        frame[column] = frame[column].astype(str)
        frame[LABEL] = frame[LABEL].astype(str)
        frames[name] = frame
    return DatasetSplits(
        **frames, group_columns=splits.group_columns, source=splits.source, fingerprint=splits.fingerprint,
        input_column=column, declared_labels=splits.declared_labels, extra=dict(splits.extra),
        validation_share=splits.validation_share,
    )
