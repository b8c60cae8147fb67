"""A contact sheet for the validation page: a few thumbnails of each class, so a person sees at a
glance whether the pictures look like their labels (a swapped folder, blank scans, the wrong crop).

This module only lays the sheet out; the task that has pictures supplies the thumbnails (PNG
bytes of one input, made by its own decoder) through ``InputChecks.preview``. Thumbnails are
inline base64 PNG, so the page stays one self-contained file.
"""

from __future__ import annotations

import base64
import html
from typing import Any, Callable, Sequence

# Enough to see a class's variety without a long page: 6 per class, at most 20 classes.
PER_CLASS = 6
MAX_CLASSES = 20


def contact_sheet(labels: Sequence[Any], items: Sequence[Any], names: Sequence[str],
                  thumbnail: Callable[[Any], bytes | None], *, split: str = "train",
                  per_class: int = PER_CLASS, max_classes: int = MAX_CLASSES) -> str:
    """An HTML section with up to ``per_class`` thumbnails of each of the first ``max_classes``
    classes (in label order), taken in row order from ``items``.

    ``thumbnail(item)`` gives PNG bytes, or None for an item it cannot show (that item is skipped
    and the next one tried). ``names`` label each thumbnail (a file name). '' when nothing shows.
    """
    by_class: dict[str, list[int]] = {}
    for position, label in enumerate(labels):
        if label is not None and label == label:  # NaN is the one value unequal to itself
            by_class.setdefault(str(label), []).append(position)
    classes = sorted(by_class)
    rows = []
    for label in classes[:max_classes]:
        cells = []
        for position in by_class[label]:
            if len(cells) == per_class:
                break
            data = thumbnail(items[position])
            if data is None:
                continue
            name = html.escape(str(names[position]))
            source = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            cells.append(f"<img src='{source}' alt='{html.escape(label)}: {name}' title='{name}' "
                         "style='height:72px;margin:2px;image-rendering:pixelated'>")
        if cells:
            rows.append(f"<tr><td>{html.escape(label)}</td><td class='num'>{len(by_class[label]):,}</td>"
                        f"<td>{''.join(cells)}</td></tr>")
    if not rows:
        return ""
    shown = f"{len(rows)} of {len(classes)} classes" if len(classes) > max_classes else f"{len(rows)} classes"
    return (
        "<h2>Contact sheet</h2>"
        f"<p class='muted'>The first {per_class} {html.escape(split)} inputs of each class ({shown}), as the model "
        "will see them (converted to RGB): check that each row looks like its label.</p>"
        f"<table><tr><th>label</th><th class='num'>{html.escape(split)} rows</th><th>examples</th></tr>"
        + "".join(rows) + "</table>"
    )
