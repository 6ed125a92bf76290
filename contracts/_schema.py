"""The JSON Schema of ``closedloop.yaml``, for editors (completion, checks as you type) and other
tools: generated from the pydantic models, so it cannot drift from what `load_config` accepts;
the copy shipped in the wheel (``closedloop.schema.json``) is checked against it by a test."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from ._config import ClosedLoopConfig

SCHEMA_FILE = "closedloop.schema.json"
_DURATION = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*$"},
        {"type": "number", "exclusiveMinimum": 0},
    ],
    "description": "A duration: 90s, 30m, 24h, 7d, or seconds as a number.",
}


def config_json_schema() -> dict[str, Any]:
    """The schema, generated now."""
    schema = ClosedLoopConfig.model_json_schema()
    schema = _adapt(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://closedloop.dev/schema/closedloop.schema.json",
        **schema,
    }


def shipped_json_schema() -> str:
    """The schema file shipped in the package, as text."""
    return resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def render_json_schema() -> str:
    return json.dumps(config_json_schema(), indent=2, sort_keys=True) + "\n"


def _adapt(node: Any) -> Any:
    """What the YAML holds where it differs from the models' own schema: pydantic writes a
    timedelta as ``format: duration`` (ISO 8601, "PT30M"), ours are "30m"; and YAML 1.1 (PyYAML)
    reads an unquoted yes/no as a boolean, which the models accept for a binary answer."""
    if isinstance(node, dict):
        if node.get("format") == "duration":
            kept = {k: v for k, v in node.items() if k not in ("format", "type")}
            return {**kept, **_DURATION, "description": node.get("description", _DURATION["description"])}
        if node.get("enum") == ["yes", "no"]:
            kept = {k: v for k, v in node.items() if k not in ("enum", "type")}
            return {**kept, "anyOf": [{"type": "string", "enum": ["yes", "no"]}, {"type": "boolean"}]}
        return {key: _adapt(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_adapt(value) for value in node]
    return node
