"""The one page shell every HTML report uses: the same styles, a title, and a link back to the
run's index when the page lies inside a run record (``runs/<run-id>/...``).

Report bodies are built by their own modules (with ``html.escape`` or jinja2 autoescaping); this
module only frames them, so a change of style or navigation is made once.
"""

from __future__ import annotations

import functools
import html
import os
from pathlib import Path
from typing import Any

from tuneops.components.files import atomic_write_text

TEMPLATE = "page.html.j2"
# A run record is the folder holding summary.json; reports sit at most this deep below it.
_RUN_SEARCH_DEPTH = 3


@functools.lru_cache(maxsize=1)
def _template():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).resolve().parent)),
        autoescape=jinja2.select_autoescape(["html", "j2"]), keep_trailing_newline=True,
    )
    return environment.get_template(TEMPLATE)


def render_page(title: str, body: str, *, index_href: str | None = None, run_id: str = "",
                subtitle: str | None = None, width: str = "72rem") -> str:
    """The full HTML document: ``body`` is trusted HTML (already escaped by its builder)."""
    from markupsafe import Markup

    return _template().render(title=title, body=Markup(body), index_href=index_href, run_id=run_id,
                              subtitle=subtitle, width=width)


def write_page(path: str | Path, title: str, body: str, *, subtitle: str | None = None,
               width: str = "72rem") -> Path:
    """Render and write a page atomically; it links the enclosing run's index.html, if any."""
    path = Path(path)
    run_root = enclosing_run(path.parent)
    index_href = os.path.relpath(run_root / "index.html", path.parent) if run_root else None
    text = render_page(title, body, index_href=index_href, run_id=run_root.name if run_root else "",
                       subtitle=subtitle, width=width)
    return atomic_write_text(path, text)


def enclosing_run(directory: Path) -> Path | None:
    """The run record folder (the one with summary.json) at or a few levels above ``directory``."""
    directory = directory.resolve()
    for candidate in [directory, *directory.parents][:_RUN_SEARCH_DEPTH + 1]:
        if (candidate / "summary.json").is_file():
            return candidate
    return None


def html_table(headers: list[str], rows: list[list[Any]], classes: list[str | None] | None = None,
               numeric: frozenset[int] | set[int] = frozenset()) -> str:
    """An escaped HTML table: ``classes`` gives each row a CSS class of the page shell (ok, bad,
    ...), ``numeric`` the column indices aligned as numbers (class ``num``)."""
    escape = html.escape

    def cell(tag: str, index: int, value: Any) -> str:
        css = ' class="num"' if index in numeric else ""
        return f"<{tag}{css}>{escape(str(value))}</{tag}>"

    head = "".join(cell("th", index, title) for index, title in enumerate(headers))
    row_classes = classes or [None] * len(rows)
    body = "".join(
        (f'<tr class="{escape(css)}">' if css else "<tr>") + "".join(cell("td", i, v) for i, v in enumerate(row))
        + "</tr>"
        for row, css in zip(rows, row_classes)
    )
    return f"<table><tr>{head}</tr>{body}</table>"
