"""The value function of a decision policy, e.g. ``click + 0.3 * purchase``.

Written by hand because the language is tiny (outcome names, numbers, + - * / and parentheses)
and must be checked when the YAML is loaded; a general expression library would accept far more
than a value function should, and would be one more dependency of the thin SDK.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from typing import Any

MAX_SOURCE_CHARACTERS = 1000
MAX_TERMS = 200
"""Limits on a value function: long enough for any real objective, short enough that parsing and
evaluating it cannot cost memory or recursion (10,000 nested minus signs crashed the parser)."""
_PROBES = (0.25, 0.5, 1.0, 2.0)
"""Outcome predictions a value function is tried on when loaded: any of them giving a non-finite
value (``click + 1/0``, ``click * 1e308 * 10``) means it can never work."""

_ALLOWED_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.USub,
    ast.UAdd,
    ast.Constant,
    ast.Name,
    ast.Load,
)


class ValueExpression:
    """A checked arithmetic expression over outcome predictions, evaluated on scalars or arrays."""

    def __init__(self, source: str) -> None:
        self.source = source
        tree = _parse(source)
        self.names: frozenset[str] = frozenset(
            node.id for node in ast.walk(tree) if isinstance(node, ast.Name)
        )
        self._code = compile(tree, "<value>", "eval")
        self.outcome: str | None = tree.body.id if isinstance(tree.body, ast.Name) else None
        """The outcome, when the value function is one outcome's prediction and nothing else."""
        _check_finite(self)

    def evaluate(self, predictions: Mapping[str, Any]) -> Any:
        """Value of each candidate from ``{outcome: prediction}`` (floats or numpy arrays). A
        division by a prediction of zero gives inf or nan (with arrays) instead of raising; the
        caller decides what a non-finite value means."""
        return eval(self._code, {"__builtins__": {}}, dict(predictions))  # noqa: S307 - checked AST

    def __repr__(self) -> str:
        return f"ValueExpression({self.source!r})"


def _parse(source: str) -> ast.Expression:
    if len(source) > MAX_SOURCE_CHARACTERS:
        raise ValueError(
            f"value expression is {len(source)} characters long; the limit is {MAX_SOURCE_CHARACTERS}"
        )
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        reason = exc.msg if isinstance(exc, SyntaxError) else "it nests too deeply"
        raise ValueError(
            f"cannot parse value expression {source!r}: {reason}; "
            "expected outcome names, numbers and + - * / ( ), e.g. 'click + 0.3 * purchase'"
        ) from None
    terms = sum(isinstance(node, (ast.Name, ast.Constant)) for node in ast.walk(tree))
    if terms > MAX_TERMS:
        raise ValueError(f"value expression has {terms} terms; the limit is {MAX_TERMS}")
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ValueError(
                f"value expression {source!r} uses {type(node).__name__}; "
                "only outcome names, numbers and + - * / ( ) are allowed"
            )
        if isinstance(node, ast.Constant) and (
            isinstance(node.value, bool) or not isinstance(node.value, (int, float))
        ):
            raise ValueError(f"value expression {source!r} has a non-numeric constant {node.value!r}")
    return tree


def _check_finite(expression: ValueExpression) -> None:
    """Refuse a value function that is not finite on ordinary predictions."""
    for probe in _PROBES:
        try:
            value = expression.evaluate(dict.fromkeys(expression.names, probe))
        except (ZeroDivisionError, OverflowError) as exc:
            raise ValueError(
                f"value expression {expression.source!r} cannot be computed ({exc}) "
                f"when every outcome is {probe}"
            ) from None
        if not math.isfinite(value):
            raise ValueError(
                f"value expression {expression.source!r} gives {value} when every outcome is {probe}; "
                "it must give a finite number (check for a division by zero or a huge constant)"
            )
