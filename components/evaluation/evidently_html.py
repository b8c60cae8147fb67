"""Writing an Evidently page: Evidently inlines its whole script (3.5 MB) and icon font into every
page it renders, so a run's three evaluation pages carried three copies. Here the page refers to
one copy of each, written once beside the pages in ``evidently/``; the pages still need nothing
but the run record's own files, so they render with no network."""

from __future__ import annotations

import base64
import functools
from pathlib import Path

from tuneops.components.files import atomic_write_bytes, atomic_write_text

ASSETS_DIR = "evidently"
_FONT = "material-ui-icons.woff2"


@functools.lru_cache(maxsize=1)
def _evidently_assets() -> tuple[str, str, bytes, str]:
    """Evidently's script (the text it inlines), the script's file name (named by version, so a
    record keeps the script its pages were drawn with), and its font (bytes, and the base64 it inlines)."""
    import evidently

    static = Path(evidently.__path__[0]) / "nbextension" / "static"
    script = (static / "index.js").read_text(encoding="utf-8")
    font = (static / _FONT).read_bytes()
    return script, f"evidently-{evidently.__version__}.js", font, base64.b64encode(font).decode()


def write_evidently_page(path: Path, page: str) -> Path:
    """Write ``page`` (Evidently's standalone HTML) to ``path`` with its script and font moved to
    ``path.parent/evidently/``, shared by every page in that directory. A page that does not hold
    them inline as expected (another Evidently version) is written unchanged, so it still works."""
    script, script_name, font, font_base64 = _evidently_assets()
    inline_script, inline_font = f"<script>{script}</script>", f"data:font/ttf;base64,{font_base64}"
    path = Path(path)
    if inline_script in page and inline_font in page:
        assets = path.parent / ASSETS_DIR
        for name, content in ((script_name, script.encode("utf-8")), (_FONT, font)):
            target = assets / name
            if not target.exists() or target.stat().st_size != len(content):
                atomic_write_bytes(target, content)
        page = (page.replace(inline_script, f'<script src="{ASSETS_DIR}/{script_name}"></script>', 1)
                .replace(inline_font, f"{ASSETS_DIR}/{_FONT}", 1))
    atomic_write_text(path, page)
    return path
