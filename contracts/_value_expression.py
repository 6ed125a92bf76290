"""The value function of a decision policy, e.g. ``click + 0.3 * purchase``.

Written by hand because the language is tiny (outcome names, numbers, + - * / and parentheses)
and must be checked when the YAML is loaded; a general expression library would accept far more
than a value function should, and would be one more dependency of the thin SDK.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

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

    def evaluate(self, predictions: Mapping[str, Any]) -> Any:
        """Value of each candidate from ``{outcome: prediction}`` (floats or numpy arrays)."""
        return eval(self._code, {"__builtins__": {}}, dict(predictions))  # noqa: S307 - checked AST

    def __repr__(self) -> str:
        return f"ValueExpression({self.source!r})"


def _parse(source: str) -> ast.Expression:
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(
            f"cannot parse value expression {source!r}: {exc.msg}; "
            "expected outcome names, numbers and + - * / ( ), e.g. 'click + 0.3 * purchase'"
        ) from None
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
