"""The one page shell every HTML report uses: the same styles, a title, and inside a run record
(``runs/<run-id>/...``) a nav bar linking the run's index and its other pages.

Report bodies are built by their own modules (with ``html.escape`` or jinja2 autoescaping); this
module only frames them, so a change of style or navigation is made once.

The run's pages are written at different times (validation first, the gate last), so the nav
links the known places of a run folder (``RUN_PAGES``) that hold a file. When a page is written,
the nav bars of the run's pages written before it are brought up to date too, so every page links
its neighbours both ways; ``index.html`` (rewritten after every stage) is the hub.
"""

from __future__ import annotations

import functools
import html
import os
import re
from pathlib import Path
from typing import Any

from tuneops.components.files import atomic_write_text

TEMPLATE = "page.html.j2"
# A run record is the folder holding summary.json; reports sit at most this deep below it.
_RUN_SEARCH_DEPTH = 3
INDEX = "index.html"
# Where the flow writes each page of a run, relative to the run folder, in the order of the spine.
RUN_PAGES = (
    (INDEX, "run"),
    ("validation/summary.html", "validation"),
    ("selection/selection.html", "selection"),
    ("model/training_report.html", "training"),
    ("model/search.html", "search"),
    ("evaluation/evaluation.html", "evaluation"),
    ("champion_evaluation/evaluation.html", "champion evaluation"),
    ("gate/gate.html", "gate"),
    ("infra_validation/server.log", "infra-validation server log"),
)
# The nav bar sits between these comments, so a later page can bring an earlier page's nav up to date.
_NAV = re.compile(r"<!-- run-nav -->.*?<!-- /run-nav -->", re.DOTALL)


@functools.lru_cache(maxsize=1)
def _template():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).resolve().parent)),
        autoescape=jinja2.select_autoescape(["html", "j2"]), keep_trailing_newline=True,
    )
    return environment.get_template(TEMPLATE)


def render_page(title: str, body: str, *, index_href: str | None = None, run_id: str = "",
                subtitle: str | None = None, width: str = "72rem",
                nav: list[tuple[str, str, bool]] | None = None) -> str:
    """The full HTML document: ``body`` is trusted HTML (already escaped by its builder).

    ``nav`` is the run's nav bar as (label, href, is this page) links (``run_nav``); without it,
    ``index_href`` alone gives a link back to the run's index.
    """
    from markupsafe import Markup

    return _template().render(title=title, body=Markup(body), index_href=index_href, run_id=run_id,
                              subtitle=subtitle, width=width, nav=nav)


def write_page(path: str | Path, title: str, body: str, *, subtitle: str | None = None,
               width: str = "72rem") -> Path:
    """Render and write a page atomically. Inside a run record it carries the run's nav bar, and
    the nav bars of the run's pages already written are refreshed to link this one."""
    path = Path(path)
    run_root = enclosing_run(path.parent)
    if run_root is None:
        return atomic_write_text(path, render_page(title, body, subtitle=subtitle, width=width))
    here = path.resolve().relative_to(run_root).as_posix() if path.resolve().is_relative_to(run_root) else None
    text = render_page(title, body, index_href=os.path.relpath(run_root / INDEX, path.parent), run_id=run_root.name,
                       subtitle=subtitle, width=width, nav=run_nav(run_root, here, extra=[here] if here else []))
    atomic_write_text(path, text)
    refresh_run_nav(run_root, skip=here)
    return path


def run_nav(run_root: Path, here: str | None, extra: list[str] = ()) -> list[tuple[str, str, bool]]:
    """The nav bar of the page at ``here`` (relative to ``run_root``): the index, then every known
    page of the run that exists (or is named in ``extra``), each href relative to ``here``."""
    present = set(extra)
    return nav_links(here, [relative for relative, _ in RUN_PAGES
                            if relative in present or (run_root / relative).is_file()])


def nav_links(here: str | None, present: list[str]) -> list[tuple[str, str, bool]]:
    """(label, href, current) for the index and each known page in ``present`` (paths relative to
    the run folder), hrefs relative to the page at ``here``; the index is always linked."""
    folder = Path(here).parent.as_posix() if here else "."
    present = set(present) | {INDEX}
    return [(label if relative != INDEX else "run index", os.path.relpath(relative, folder), relative == here)
            for relative, label in RUN_PAGES if relative in present]


def refresh_run_nav(run_root: Path, skip: str | None = None) -> None:
    """Bring the nav bar of every page of the run written through this shell up to date (the pages
    written after it now exist). ``index.html`` is left to the run record, which rewrites it."""
    for relative, _ in RUN_PAGES:
        if relative in (skip, INDEX) or not relative.endswith(".html"):
            continue
        page = run_root / relative
        if not page.is_file():
            continue
        text = page.read_text(encoding="utf-8")
        if not _NAV.search(text):
            continue  # not a page of this shell (or from before the nav bar): leave it as it is
        nav = _template().module.nav_bar(run_nav(run_root, relative))
        updated = _NAV.sub(lambda _: str(nav), text, count=1)
        if updated != text:
            atomic_write_text(page, updated)


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
