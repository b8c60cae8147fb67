"""Every config key as a Markdown reference, generated from ``PipelineConfig``'s JSON Schema, so
the reference cannot drift from the code: docs/config.md is this text (``tuneops config
reference > docs/config.md``), and tests/code/test_cli.py fails when the two differ."""

from __future__ import annotations

import json
from typing import Any

_HEADER = """# Config reference

Every key of the config, with its type, default, limits and what it does. Generated from the code
(`tuneops config reference > docs/config.md`); `tuneops config schema` prints the same as JSON
Schema, and `tuneops config show [-c FILE] [--set key=value]` the effective config. Set a key in a
YAML file (`section: {key: value}`) or with `--set section.key=value`. Unknown keys are errors.
Training settings left unset are decided from the data (docs/training.md, "The recipe"); the
defaults shown are the text task's (`task: image-classification` changes a few, docs/images.md).
"""


def config_reference(schema: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The Markdown reference of the config described by ``schema`` (``model_json_schema()``):
    one table per section, nested sections under their dotted names. ``defaults`` is a default
    config as JSON (``PipelineConfig().model_dump(mode="json")``): it gives the values of keys
    whose default is built when the config is (lists, per-check severities)."""
    return _Reference(schema, defaults).markdown()


class _Reference:
    def __init__(self, schema: dict[str, Any], defaults: dict[str, Any]) -> None:
        self.schema = schema
        self.definitions = schema.get("$defs", {})
        self.defaults = _flatten(defaults)

    def markdown(self) -> str:
        lines = [_HEADER]
        properties = self.schema["properties"].items()
        top = [(name, spec) for name, spec in properties if not self._is_section(spec)]
        if top:
            lines += ["## Top level", "", *self._table(top, "", set(self.schema.get("required", []))), ""]
        for name, spec in properties:
            if self._is_section(spec):
                lines += self._section(name, self._resolve(spec))
        return "\n".join(lines).rstrip() + "\n"

    def _section(self, prefix: str, definition: dict[str, Any]) -> list[str]:
        lines = [f"## `{prefix}`", ""]
        if definition.get("description"):
            lines += [" ".join(definition["description"].split()), ""]
        fields = list(definition.get("properties", {}).items())
        plain = [(name, spec) for name, spec in fields if not self._is_section(spec)]
        lines += [*self._table(plain, prefix + ".", set(definition.get("required", []))), ""]
        for name, spec in fields:
            if self._is_section(spec):
                lines += self._section(f"{prefix}.{name}", self._resolve(spec))
        return lines

    def _table(self, fields: list[tuple[str, dict]], prefix: str, required: set[str]) -> list[str]:
        rows = ["| key | type | default | what |", "| --- | --- | --- | --- |"]
        for name, spec in fields:
            key = prefix + name
            rows.append(f"| `{key}` | {self._type(spec)} | {self._default(spec, key, name in required)} | "
                        f"{_cell(spec.get('description', ''))}{_limits(spec)} |")
        return rows

    def _is_section(self, spec: dict[str, Any]) -> bool:
        # A nested model with fields of its own; a mapping model (per-check severities) is one value.
        return "$ref" in spec and bool(self._resolve(spec).get("properties")) and \
            self._resolve(spec).get("additionalProperties") is False

    def _resolve(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.definitions[spec["$ref"].rsplit("/", 1)[1]] if "$ref" in spec else spec

    def _type(self, spec: dict[str, Any]) -> str:
        if "enum" in spec:
            return " \\| ".join(f"`{json.dumps(value)}`" for value in spec["enum"])
        if "anyOf" in spec:
            return " or ".join(self._type(option) for option in spec["anyOf"])
        if "$ref" in spec:
            resolved = self._resolve(spec)
            return "mapping" if resolved.get("type") == "object" else self._type(resolved)
        kind = spec.get("type", "any")
        if kind == "array":
            return f"list of {self._type(spec.get('items', {}))}"
        return "mapping" if kind == "object" else str(kind)

    def _default(self, spec: dict[str, Any], key: str, required: bool) -> str:
        if "default" in spec:
            return f"`{json.dumps(spec['default'])}`"
        if key in self.defaults:
            return f"`{json.dumps(self.defaults[key])}`"
        return "(required)" if required else "(decided when loaded)"


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        flat[prefix + key] = value
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def _limits(spec: dict[str, Any]) -> str:
    bounds = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
                      ("minLength", "length >="), ("maxLength", "length <=")):
        for option in [spec, *spec.get("anyOf", [])]:
            if key in option:
                bounds.append(f"{sign} {option[key]}")
    return f" ({', '.join(dict.fromkeys(bounds))})" if bounds else ""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
