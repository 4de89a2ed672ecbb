"""OpenAI's grader templates: `{{ item.field }}`, `{{ sample.output_text }}`,
`{{ sample.output_json.a.b }}`, `{{ item.list[0] }}`: a namespace (item or sample) then a JSON
path of `.key`, `[index]` or `["key"]` steps. A value that is not a string is written as JSON.

A path that names nothing is a failure of the grader or the data (invalid_variable_error); a
sample.output_json path on an answer that is not JSON is the model's (sample_parse_error). Both
become a zero reward with the reason, never an exception out of grading.
"""
from __future__ import annotations

import json
import re
from typing import Any

from tunelab.graders.base import GradeFailure, require_text, spec_error

PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
STEP = re.compile(r"""\.([A-Za-z_][\w-]*)|\[(\d+)\]|\[\s*["']([^"']*)["']\s*\]""")
NAMESPACES = ("item", "sample")
SAMPLE_FIELDS = ("output_text", "output_json", "output_tools", "choices")


def parse_path(expression: str) -> tuple[str, list[str | int]]:
    """('item', ['answer', 0]) for 'item.answer[0]'; ValueError with the reason when malformed."""
    expression = expression.strip()
    namespace = next((n for n in NAMESPACES if expression == n or expression.startswith((n + ".", n + "["))),
                     None)
    if namespace is None:
        raise ValueError(f"{{{{ {expression} }}}} must start with item or sample")
    rest, steps = expression[len(namespace):], []
    while rest:
        match = STEP.match(rest)
        if not match:
            raise ValueError(f"{{{{ {expression} }}}} is not a path of .key, [index] or [\"key\"] steps")
        key, index, quoted = match.groups()
        steps.append(int(index) if index is not None else key if key is not None else quoted)
        rest = rest[match.end():]
    if not steps:
        raise ValueError(f"{{{{ {expression} }}}} names the whole {namespace}; name one of its fields")
    if namespace == "sample" and steps[0] not in SAMPLE_FIELDS:
        raise ValueError(f"{{{{ {expression} }}}}: a sample has {', '.join(SAMPLE_FIELDS)}")
    return namespace, steps


def check_template(template: str) -> str | None:
    """The first problem of a template string, or None."""
    for match in PLACEHOLDER.finditer(template):
        try:
            parse_path(match.group(1))
        except ValueError as exc:
            return str(exc)
    return None


def check_templates(spec: dict[str, Any], keys: tuple[str, ...], name: str, where: str | None) -> None:
    """Each of `keys` is a text field of the spec holding a template that parses."""
    for key in keys:
        problem = check_template(require_text(spec, key, name, where))
        if problem:
            raise spec_error(name, key, f"has a bad template: {problem}", where)


def render(template: str, sample: dict[str, Any], item: dict[str, Any] | None) -> str:
    """The template with each placeholder replaced by its value; GradeFailure when one has none."""
    def value_of(match: re.Match) -> str:
        namespace, steps = parse_path(match.group(1))
        value = lookup(namespace, steps, sample, item, match.group(0))
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return PLACEHOLDER.sub(value_of, template)


def lookup(namespace: str, steps: list[str | int], sample: dict[str, Any], item: dict[str, Any] | None,
           shown: str) -> Any:
    if namespace == "sample" and steps[0] == "output_json" and sample.get("output_json") is None:
        raise GradeFailure("sample_parse_error", f"the answer is not JSON, so {shown.strip()} has no value")
    node: Any = sample if namespace == "sample" else (item or {})
    walked = namespace
    for step in steps:
        if isinstance(step, int) and isinstance(node, list) and step < len(node):
            node = node[step]
        elif isinstance(step, str) and isinstance(node, dict) and step in node:
            node = node[step]
        else:
            where = "the answer's JSON" if walked.startswith("sample.output_json") else walked
            kind = "sample_parse_error" if walked.startswith("sample.output_json") else "invalid_variable_error"
            raise GradeFailure(kind, f"{where} has no {'index' if isinstance(step, int) else 'field'} "
                                     f"{step!r}, so {shown.strip()} has no value")
        walked += f"[{step}]" if isinstance(step, int) else f".{step}"
    return node


def make_sample(output_text: str) -> dict[str, Any]:
    """OpenAI's sample namespace for one model answer: output_json is the parsed answer when the
    answer is a JSON object or array, else None."""
    try:
        parsed = json.loads(output_text)
    except (json.JSONDecodeError, TypeError):
        parsed = None
    return {"output_text": output_text, "output_json": parsed if isinstance(parsed, (dict, list)) else None,
            "output_tools": [],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": output_text}}]}
