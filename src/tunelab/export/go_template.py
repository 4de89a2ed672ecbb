"""A renderer for the part of Go's text/template that tunelab's Ollama Modelfiles use, so an
export can check, before writing anything, that Ollama will build the prompt the chat template
builds.

Covered, with Go's semantics: text and `{{ }}` actions with `{{-` / `-}}` whitespace trimming;
string constants (Go escapes); `.Field`, `$`, `$.Field`, `$var`; `$x := pipeline`;
`range $i, $e := pipeline`; `if` / `else if` / `else` / `end`; parenthesised calls of the
builtins eq, ne, and, or, not, len and slice. Anything else raises ValueError: the renderer
never guesses at a construct it does not implement.
"""
from __future__ import annotations

import ast
import re
from typing import Any

_WHITESPACE = " \t\r\n"
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<open>\()|(?P<close>\))|(?P<assign>:=)|(?P<comma>,)'
                    r'|(?P<word>[$.\w]+))')


def render(template: str, data: dict[str, Any]) -> str:
    nodes, _ = _parse(_lex(template), 0, ())
    out: list[str] = []
    _run(nodes, data, data, {"$": data}, out)
    return "".join(out)


def _lex(template: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", source)], with trim markers applied to the neighbouring text."""
    items: list[tuple[str, str]] = []
    pos = 0
    while True:
        start = template.find("{{", pos)
        if start < 0:
            items.append(("text", template[pos:]))
            return _trim(items)
        items.append(("text", template[pos:start]))
        end, quoted = start + 2, False
        while end < len(template) and (quoted or not template.startswith("}}", end)):
            if template[end] == "\\" and quoted:
                end += 1
            elif template[end] == '"':
                quoted = not quoted
            end += 1
        if end >= len(template):
            raise ValueError("unclosed action")
        items.append(("action", template[start + 2:end]))
        pos = end + 2


def _trim(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = [list(item) for item in items]
    for i, (kind, source) in enumerate(out):
        if kind != "action":
            continue
        if source.startswith("- ") or source == "-":
            out[i - 1][1] = out[i - 1][1].rstrip(_WHITESPACE)
            source = source[1:]
        if source.endswith(" -"):
            out[i + 1][1] = out[i + 1][1].lstrip(_WHITESPACE)
            source = source[:-1]
        out[i][1] = source.strip()
    return [(kind, source) for kind, source in out if kind == "action" or source]


def _parse(items, i: int, stops: tuple[str, ...]):
    """Nodes until an action whose keyword is in `stops`; returns (nodes, index of that action)."""
    nodes: list[tuple] = []
    while i < len(items):
        kind, source = items[i]
        if kind == "text":
            nodes.append(("text", source))
            i += 1
            continue
        word = source.split(None, 1)[0] if source else ""
        if word in stops:
            return nodes, i
        if word == "range":
            header = _tokens(source[len("range"):])
            variables, expr = _split_declaration(header)
            body, i = _parse(items, i + 1, ("end",))
            nodes.append(("range", variables, expr, body))
            i += 1
        elif word == "if":
            branches, i = _parse_if(items, i)
            nodes.append(("if", branches))
        elif word in ("else", "end"):
            raise ValueError(f"unexpected {{{{ {source} }}}}")
        else:
            variables, expr = _split_declaration(_tokens(source))
            nodes.append(("set", variables[0], expr) if variables else ("print", expr))
            i += 1
    if stops:
        raise ValueError(f"missing {{{{ {stops[0]} }}}}")
    return nodes, i


def _parse_if(items, i: int):
    branches = []
    condition = _tokens(items[i][1][len("if"):])
    while True:
        body, i = _parse(items, i + 1, ("else", "end"))
        branches.append((condition, body))
        source = items[i][1]
        if source == "end":
            return branches, i + 1
        rest = source[len("else"):].strip()
        if rest.startswith("if "):
            condition = _tokens(rest[len("if"):])
        elif not rest:
            condition = None
        else:
            raise ValueError(f"unsupported {{{{ {source} }}}}")


def _tokens(source: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    source = source.rstrip()
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if not match or match.end() == pos:
            raise ValueError(f"cannot read {source[pos:]!r}")
        tokens.append(next((k, v) for k, v in match.groupdict().items() if v is not None))
        pos = match.end()
    return tokens


def _split_declaration(tokens):
    if ("assign", ":=") not in tokens:
        return [], tokens
    at = tokens.index(("assign", ":="))
    return [v for k, v in tokens[:at] if k == "word"], tokens[at + 1:]


def _run(nodes, dot, root, variables: dict[str, Any], out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "print":
            value = _evaluate(node[1], dot, variables)
            out.append(value if isinstance(value, str) else _go_string(value))
        elif kind == "set":
            variables[node[1]] = _evaluate(node[2], dot, variables)
        elif kind == "if":
            for condition, body in node[1]:
                if condition is None or _truth(_evaluate(condition, dot, variables)):
                    _run(body, dot, root, dict(variables), out)
                    break
        elif kind == "range":
            _, names, expr, body = node
            for index, element in enumerate(_evaluate(expr, dot, variables) or []):
                scope = dict(variables)
                if len(names) == 2:
                    scope[names[0]], scope[names[1]] = index, element
                elif len(names) == 1:
                    scope[names[0]] = element
                _run(body, element, root, scope, out)


def _evaluate(tokens, dot, variables):
    value, rest = _expression(tokens, dot, variables)
    if rest:
        raise ValueError(f"unexpected {rest[0][1]!r}")
    return value


def _expression(tokens, dot, variables):
    """A command: a function applied to operands, or a single operand."""
    if not tokens:
        raise ValueError("empty expression")
    kind, value = tokens[0]
    if kind == "word" and value in _FUNCTIONS:
        args, rest = [], tokens[1:]
        while rest and rest[0][0] != "close":
            arg, rest = _operand(rest, dot, variables)
            args.append(arg)
        return _FUNCTIONS[value](*args), rest
    return _operand(tokens, dot, variables)


def _operand(tokens, dot, variables):
    kind, value = tokens[0]
    if kind == "str":
        return ast.literal_eval(value), tokens[1:]  # Go's escapes that tunelab emits are Python's too
    if kind == "open":
        inner, rest = _expression(tokens[1:], dot, variables)
        if not rest or rest[0][0] != "close":
            raise ValueError("missing )")
        return inner, rest[1:]
    if kind == "word" and value.isdigit():
        return int(value), tokens[1:]
    if kind == "word" and value.startswith("$"):
        name, _, path = value.partition(".")
        if name not in variables:
            raise ValueError(f"undefined variable {name}")
        return _fields(variables[name], path), tokens[1:]
    if kind == "word" and value.startswith("."):
        return _fields(dot, value[1:]), tokens[1:]
    raise ValueError(f"unsupported {value!r}")


def _fields(value, path: str):
    for field in filter(None, path.split(".")):
        if not isinstance(value, dict) or field not in value:
            raise ValueError(f"no field {field}")
        value = value[field]
    return value


def _truth(value) -> bool:
    return bool(value)  # Go: false, 0, nil, and empty strings, slices and maps are false


def _and(*args):
    for arg in args:
        if not _truth(arg):
            return arg
    return args[-1]


def _or(*args):
    for arg in args:
        if _truth(arg):
            return arg
    return args[-1]


def _go_string(value) -> str:
    return {True: "true", False: "false"}.get(value, str(value)) if isinstance(value, bool) else str(value)


_FUNCTIONS = {
    "eq": lambda a, *others: any(a == b for b in others),
    "ne": lambda a, b: a != b,
    "and": _and,
    "or": _or,
    "not": lambda a: not _truth(a),
    "len": len,
    "slice": lambda value, start=0, stop=None: value[start:stop],  # Go: slice x 1 is x[1:]
}
