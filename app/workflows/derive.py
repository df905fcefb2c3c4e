"""Derived graph values (e.g. the sampler split step) as small integer expressions from the manifest.

Why an expression and not Python: a workflow must be fully described by its folder, so a user-dropped
workflow can say `split_step = "steps // 2"` without code. Only integer arithmetic over parameter names
is allowed (parsed with `ast`, never `eval`).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Collection, Mapping
from typing import Any

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {"min": min, "max": max}


class ExpressionError(ValueError):
    """The expression uses something other than integers, parameter names, + - * // %, min and max."""


def parse_expression(text: str, names: Collection[str]) -> ast.Expression:
    """Parse and check `text`; every name it uses must be in `names`."""
    if not isinstance(text, str):
        raise ExpressionError(f"must be a string expression (got {type(text).__name__})")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {text!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Expression | ast.Load):
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            continue
        if isinstance(node, ast.operator) and type(node) in _BINARY:
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            continue
        if isinstance(node, ast.USub | ast.UAdd):
            continue
        if isinstance(node, ast.Constant) and type(node.value) is int:
            continue
        if isinstance(node, ast.Name):
            if node.id in names or node.id in _FUNCTIONS:
                continue
            raise ExpressionError(f"unknown name {node.id!r} in {text!r} (known: {', '.join(sorted(names))})")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and not node.keywords
        ):
            continue
        raise ExpressionError(
            f"{text!r}: only integers, parameter names, + - * // %, min() and max() allowed"
        )
    return tree


def evaluate(tree: ast.Expression, values: Mapping[str, Any]) -> int:
    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise ExpressionError(f"{node.id!r} has no value")
            return values[node.id]
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            operand = ev(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Call):
            return _FUNCTIONS[node.func.id](*(ev(a) for a in node.args))  # type: ignore[attr-defined]
        raise ExpressionError(f"unsupported node {type(node).__name__}")

    return ev(tree)
