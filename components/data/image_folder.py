"""Inputs stored as files: the class-folder layout and paths named in a table.

A task whose inputs are files (images) names their suffixes (``Task.input_suffixes``). Its data
may then be a folder with one sub-folder per class (``photos/cat/1.jpg``: the label is the
sub-folder's name, as in the common "image folder" layout) or a table whose input column holds
paths relative to the table file. Either way the split frames hold absolute path strings. Files
are read here only to hash their bytes for the data fingerprint, never decoded (validation decodes
them), and nothing that is not a regular file is ever opened.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tuneops.components.errors import DataError
from tuneops.components.files import file_sha256

# Shown in messages as the layout a user should have.
_LAYOUT_EXAMPLE = "photos/cat/1.jpg, photos/dog/2.jpg"


@dataclass(frozen=True)
class FolderListing:
    """The input files found under a class-folder root, and what was left out (with a count)."""

    frame: pd.DataFrame
    ignored: str


def read_class_folders(root: Path, suffixes: tuple[str, ...], input_column: str, label_column: str) -> FolderListing:
    """One row per input file under ``root/<class>/`` (nested folders included): the absolute path
    in ``input_column``, the class folder's name in ``label_column``, sorted by class then path.

    Files with other suffixes, hidden files and folders (``.DS_Store``, ``._x.jpg``, ``.git``) and
    files directly in ``root`` are left out and counted in ``ignored`` (one line). Files with an
    input suffix that are not regular files (a FIFO, a device, a broken link) are kept as rows, so
    validation reports them; they are never opened. DataError when there are no class folders or
    no input files in them.
    """
    root = Path(os.path.abspath(root))
    wanted = {suffix.lower() for suffix in suffixes}
    left_out: Counter[str] = Counter()
    empty_classes: list[str] = []
    paths: list[str] = []
    labels: list[str] = []
    classes = 0
    try:
        with os.scandir(root) as entries:
            listed = sorted(entries, key=lambda entry: entry.name)
    except OSError as error:
        raise DataError(f"data: cannot list {root}: {error.strerror or type(error).__name__}") from None
    for entry in listed:
        if entry.name.startswith("."):
            left_out["hidden " + ("folder{s}" if entry.is_dir() else "file{s}")] += 1
        elif not entry.is_dir():
            left_out["file{s} outside the class folders"] += 1
        else:
            classes += 1
            found = _class_files(Path(entry.path), wanted, left_out)
            if not found:
                empty_classes.append(entry.name)
            paths.extend(found)
            labels.extend([entry.name] * len(found))
    shown = ", ".join(sorted(wanted))
    if not classes:
        raise DataError(f"data: {root} has no class sub-folders; put each class's files in a folder named after "
                        f"the class ({_LAYOUT_EXAMPLE}), or name a table of paths and labels")
    if not paths:
        raise DataError(f"data: no files with an input suffix ({shown}) in the {classes} class folder(s) of {root}")
    frame = pd.DataFrame({input_column: paths, label_column: labels})
    return FolderListing(frame, _ignored_line(root, left_out, empty_classes))


def _class_files(folder: Path, wanted: set[str], left_out: Counter[str]) -> list[str]:
    """The input files under one class folder, depth first in name order (a stable row order)."""
    found: list[str] = []
    for directory, folders, files in os.walk(folder, followlinks=False):
        hidden = sum(name.startswith(".") for name in folders)
        if hidden:
            left_out["hidden folder{s}"] += hidden
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                left_out["hidden file{s}"] += 1
            elif os.path.splitext(name)[1].lower() in wanted:
                found.append(os.path.join(directory, name))
            else:
                left_out[(os.path.splitext(name)[1].lower() or "suffix-less") + " file{s}"] += 1
    return found


def _ignored_line(root: Path, left_out: Counter[str], empty_classes: list[str]) -> str:
    """``data: photos/: left out 2 hidden files, 1 .txt file; ...`` or '' when nothing was left out."""
    parts = []
    if left_out:
        # Keys hold ``{s}`` where the plural adds an s.
        parts.append("left out " + ", ".join(f"{count} " + what.replace("{s}", "s" if count != 1 else "")
                                             for what, count in left_out.most_common() if count))
    if empty_classes:
        parts.append("class folders without input files (no class made of them): " + ", ".join(empty_classes[:10]))
    return f"data: {root.name}/: " + "; ".join(parts) if parts else ""


def absolute_paths(values: pd.Series, base: Path) -> pd.Series:
    """Path cells relative to ``base`` (the table's folder) made absolute; absolute paths are kept.

    Only the strings are changed (normalised, without touching the file system); empty cells and
    non-strings stay as they are, for validation to report.
    """
    base = Path(os.path.abspath(base))

    def resolve(value: object) -> object:
        if not isinstance(value, str) or not value.strip():
            return value
        return os.path.normpath(os.path.join(base, value.strip()))

    return values.map(resolve)


def file_content_hashes(values: pd.Series, cache: dict[str, str] | None = None) -> pd.Series:
    """Each path cell as the SHA-256 of the file's bytes (for the data fingerprint), read once per
    distinct path (``cache`` shares them between calls); a missing, unreadable or non-regular file
    gives a marker instead, and is never opened when it is not a regular file (a FIFO would block,
    a device never end). Other cells are kept."""
    hashes = {} if cache is None else cache
    for value in pd.unique(values.dropna()):
        if isinstance(value, str) and value not in hashes:
            hashes[value] = _file_hash(value)
    return values.map(lambda value: hashes.get(value, value) if isinstance(value, str) else value)


def _file_hash(path: str) -> str:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "not a regular file"
        return file_sha256(Path(path))
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"unreadable ({error.strerror or type(error).__name__})"
