"""What the service tells callers about a use case: its shape, never its settings.

A caller needs the decision type, the features (names, types, categories, defaults), the outcomes
and the default policy to send valid requests and to fall back when the service is down. It does
not need, and must not see, anything else of the file: infrastructure, experiments, tuning,
training settings, descriptions, or any value the environment gave through ``${VAR}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._config import ClosedLoopConfig

FROM_ENVIRONMENT = "(set from the environment)"
"""What a served value that came from a ``${VAR}`` reads instead of its value."""

_SHAPE = ("decision", "context", "candidate", "outcomes", "max_candidates")
_POLICY_SHAPE = ("value", "default", "threshold")


def public_use_cases(config: ClosedLoopConfig, names: Iterable[str] | None = None) -> dict[str, Any]:
    """Each use case's shape (all of them, or those ``names`` lists), as JSON-ready dicts."""
    chosen = config.use_cases if names is None else {n: config.use_cases[n] for n in names}
    hidden = config._from_environment
    shown: dict[str, Any] = {}
    for name, use_case in chosen.items():
        dumped = use_case.model_dump(mode="json")
        shape = {key: dumped[key] for key in _SHAPE}
        shape["policy"] = {key: dumped["policy"][key] for key in _POLICY_SHAPE}
        shown[name] = _redact(shape, ("use_cases", name), hidden)
    return shown


def _redact(node: Any, path: tuple[str, ...], hidden: frozenset[tuple[str, ...]]) -> Any:
    if ("*",) in hidden and not isinstance(node, (dict, list)):
        return FROM_ENVIRONMENT
    if path in hidden:
        return FROM_ENVIRONMENT
    if isinstance(node, dict):
        return {key: _redact(child, (*path, str(key)), hidden) for key, child in node.items()}
    if isinstance(node, list):
        return [_redact(child, (*path, str(i)), hidden) for i, child in enumerate(node)]
    return node
