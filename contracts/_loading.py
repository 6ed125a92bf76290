"""Reading ``closedloop.yaml``: ``${VAR}`` expansion, validation, errors that name file and field."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from ._config import ClosedLoopConfig
from ._errors import ConfigError

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML was built with it: a file of 1,000 use cases loads in a
tenth of the time and memory of the pure-Python one (bench/many_use_cases.py)."""


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> ClosedLoopConfig:
    """Read, expand and validate a configuration file; the environment overrides infrastructure."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Cannot read configuration file {file}: {exc.strerror}.",
            hint="Pass the path of your closedloop.yaml (see examples/closedloop.yaml).",
        ) from None
    return parse_config(text, source=str(file), environ=environ)


def parse_config(
    text: str, *, source: str = "<string>", environ: Mapping[str, str] | None = None
) -> ClosedLoopConfig:
    env = os.environ if environ is None else environ
    try:
        raw = yaml.load(_expand_environment(text, env, source), Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: not valid YAML ({getattr(exc, 'problem', exc)}).") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping with 'use_cases:' at the top, got {type(raw).__name__}."
        )
    try:
        config = ClosedLoopConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            _describe(exc, source),
            hint="See examples/closedloop.yaml for a complete file, docs/experiments.md for experiments.",
        ) from None
    resolved = config.model_copy(update={"infrastructure": config.infrastructure.with_environment(env)})
    resolved._from_environment = _expanded_paths(text)
    return resolved


def _expand_environment(text: str, env: Mapping[str, str], source: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if fallback is not None:
            return fallback
        raise ConfigError(
            f"{source}: ${{{name}}} is used but the environment variable {name} is not set.",
            hint=f"Set {name}, or write ${{{name}:-default}} to give a default.",
        )

    return _ENV_REFERENCE.sub(replace, text)


def _expanded_paths(text: str) -> frozenset[tuple[str, ...]]:
    """The paths of the values that hold a ``${VAR}`` in the file as written, so that a value the
    environment gave (a secret, perhaps) is never served back. A file YAML cannot read before
    expansion marks everything (``("*",)``): nothing of it is served but its shape."""
    if "${" not in text:
        return frozenset()
    try:
        unexpanded = yaml.safe_load(text)
    except yaml.YAMLError:
        return frozenset({("*",)})
    found: set[tuple[str, ...]] = set()

    def walk(node: object, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, (*path, str(key)))
        elif isinstance(node, list):
            for position, child in enumerate(node):
                walk(child, (*path, str(position)))
        elif isinstance(node, str) and _ENV_REFERENCE.search(node):
            found.add(path)

    walk(unexpanded, ())
    return frozenset(found)


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"{source} is not a valid closedloop configuration:"]
    for error in exc.errors():
        path = ".".join(str(part) for part in _as_written(error["loc"])) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        got = error.get("input")
        quiet = isinstance(got, (dict, list)) or error["type"] == "missing" or repr(got) in message
        shown = "" if quiet else f" (got {got!r})"
        lines.append(f"  - {path}: {message}{shown}")
    return "\n".join(lines)


def _as_written(location: tuple[int | str, ...]) -> list[int | str]:
    """The path as the file writes it: without pydantic's union tags (``epsilon_greedy`` in
    ``exploration.epsilon_greedy.epsilon`` is the value of ``strategy``, not a key of the file;
    ``categorical`` in ``context.country.categorical.values`` the value of ``type``)."""
    return [part for i, part in enumerate(location) if not _is_tag(location, i)]


def _is_tag(location: tuple[int | str, ...], i: int) -> bool:
    part = location[i]
    if i >= 1 and location[i - 1] == "exploration" and part in _STRATEGIES:
        return True
    return i >= 2 and location[i - 2] in ("context", "candidate") and part in _FEATURE_TYPES


_STRATEGIES = frozenset({"epsilon_greedy", "softmax", "squarecb", "greedy"})
_FEATURE_TYPES = frozenset({"numeric", "categorical"})
