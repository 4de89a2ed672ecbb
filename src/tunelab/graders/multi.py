"""multi: named sub-graders combined by a formula (`calculate_output`), e.g.
`0.7 * exact + 0.3 * min(1, similar * 2)`.

The formula is parsed with `ast` and evaluated by walking the tree, never by eval(): numbers, the
sub-graders' names, + - * / ^ (power, as in OpenAI's formulas; ** too), unary minus, parentheses,
and the functions min, max, abs, floor, ceil, exp, sqrt, log. Anything else is refused when the
grader is loaded. Arithmetic runs on floats, so an overflow or a domain error (log of 0) is a
zero reward with the reason, not a hang or a crash.
"""
from __future__ import annotations

import ast
import math
import operator
from typing import Any

from tunelab.graders.base import GradeFailure, check_keys, require_text, spec_error

FIELDS = ("type", "name", "graders", "calculate_output", "pass_threshold")
REQUIRED = ("type", "name", "graders", "calculate_output")
FUNCTIONS = {"min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "exp": math.exp,
             "sqrt": math.sqrt, "log": math.log}
ARITY = {"min": (2, 99), "max": (2, 99), "log": (1, 2), "abs": (1, 1), "floor": (1, 1), "ceil": (1, 1),
         "exp": (1, 1), "sqrt": (1, 1)}
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.Pow: math.pow, ast.BitXor: math.pow, ast.Mod: math.fmod}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def sub_grader_specs(spec: dict[str, Any], where: str | None) -> dict[str, dict[str, Any]]:
    """{name: grader JSON} of the sub-graders: OpenAI's guide writes a mapping of names to graders;
    its API reference also allows one grader object, named by its own name."""
    graders = spec["graders"]
    if isinstance(graders, dict) and "type" in graders and isinstance(graders.get("type"), str):
        graders = {graders.get("name") or "grader": graders}
    if not isinstance(graders, dict) or not graders:
        raise spec_error(spec["name"], "graders", "must map names to graders, e.g. {\"exact\": {...}}", where)
    for key, sub in graders.items():
        if not key.isidentifier() or key in FUNCTIONS:
            raise spec_error(spec["name"], "graders", f"names a sub-grader {key!r}, which a formula cannot use",
                             where, fix="use letters, digits and _ (not starting with a digit), other than "
                                        f"{', '.join(FUNCTIONS)}")
        if not isinstance(sub, dict):
            raise spec_error(spec["name"], f"graders.{key}", "must be a grader object", where)
    return graders


def validate(spec: dict[str, Any], names: list[str], where: str | None) -> None:
    check_keys(spec, FIELDS, REQUIRED, spec["name"], where)
    formula = require_text(spec, "calculate_output", spec["name"], where)
    try:
        check_formula(formula, names)
    except ValueError as exc:
        raise spec_error(spec["name"], "calculate_output", f"{exc}", where) from None


def check_formula(formula: str, names: list[str]) -> ast.Expression:
    try:
        tree = ast.parse(formula.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"{formula!r} is not a formula") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names and node.id not in FUNCTIONS:
            raise ValueError(f"uses {node.id!r}, which is neither a sub-grader ({', '.join(names)}) nor a function "
                             f"({', '.join(FUNCTIONS)})")
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords):
                raise ValueError(f"calls something other than {', '.join(FUNCTIONS)}")
            low, high = ARITY[node.func.id]
            if not low <= len(node.args) <= high:
                raise ValueError(f"calls {node.func.id} with {len(node.args)} argument(s)")
        allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Load, ast.Constant,
                   *BINARY, *UNARY)
        if not isinstance(node, allowed) or (isinstance(node, ast.Constant) and not _is_number(node.value)):
            raise ValueError(f"may use numbers, sub-grader names, + - * / ^, parentheses and "
                             f"{', '.join(FUNCTIONS)} only ({type(node).__name__} found)")
    return tree


def evaluate(formula: str, scores: dict[str, float]) -> float:
    """The formula's value with each sub-grader's score bound to its name."""
    tree = check_formula(formula, list(scores))
    try:
        value = float(_walk(tree.body, scores))
    except (ArithmeticError, ValueError) as exc:
        raise GradeFailure("formula_parse_error", f"the formula {formula!r} cannot be computed for these scores "
                                                  f"({type(exc).__name__}: {exc})") from None
    if not math.isfinite(value):
        raise GradeFailure("formula_parse_error", f"the formula {formula!r} gives {value} for these scores")
    return value


def _walk(node: ast.AST, scores: dict[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(scores[node.id])
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](_walk(node.operand, scores))
    if isinstance(node, ast.BinOp):
        return BINARY[type(node.op)](_walk(node.left, scores), _walk(node.right, scores))
    return float(FUNCTIONS[node.func.id](*(_walk(arg, scores) for arg in node.args)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
