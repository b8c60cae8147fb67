"""How a command prints its result: ``-o text`` (the default, for people) or ``-o json`` (for
scripts). In JSON mode stdout holds exactly one JSON document and nothing else (progress, logs and
notes go to stderr), so ``tuneops run -o json | jq .status`` works."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any

import typer


class Output(str, Enum):
    text = "text"
    json = "json"


def output_option() -> Any:
    """The ``-o/--output`` option every reporting command takes."""
    return typer.Option(Output.text, "--output", "-o", help="text (tables and lines) or json (one document on stdout)",
                        case_sensitive=False)


def print_json(value: Any) -> None:
    """``value`` as the command's one JSON document on stdout (paths and dates as strings)."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()
