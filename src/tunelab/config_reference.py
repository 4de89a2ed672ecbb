"""The configuration reference (docs/configuration.md), generated from the pydantic models so it
cannot drift from the code: every field with its dotted key, type, default and one-line meaning.

Regenerate with `python -m tunelab.config_reference > docs/configuration.md`; a test fails when
the committed file differs from what this renders.
"""
from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tunelab.config import RunConfig

INTRO = """# Configuration reference

One YAML file configures every stage; each stage reads its own section. Any key can also be set
on the command line as `section.key=value` (values are parsed as YAML: `train.lr=1e-4`,
`data.labels=[a,b]`). Unknown keys are errors that name the closest valid key.

This page is generated from the code (`python -m tunelab.config_reference`); a test keeps it
current.
"""


def render() -> str:
    parts = [INTRO]
    for name, field in RunConfig.model_fields.items():
        parts.append(f"\n## `{name}:` {field.description}\n")
        parts.extend(_section(field.annotation, name))
    return "\n".join(parts).rstrip() + "\n"


def _section(model: type[BaseModel], prefix: str) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}"
        inner = _model_inside(field.annotation)
        if inner is not None and not _is_list(field.annotation):
            nested.append((key, inner, field.description or ""))
            continue
        rows.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {field.description} |")
        if inner is not None:  # a list of sections (stages, mix): document the item's keys too
            nested.append((f"{key}[]", inner, f"each item of `{key}`"))
    lines = rows if len(rows) > 2 else []
    for key, inner, description in nested:
        lines += ["", f"### `{key}`: {description}", ""] + _section(inner, key)
    return lines


def _model_inside(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_inside(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in get_args(annotation))
    if origin is list:
        return f"list[{_type_name(get_args(annotation)[0])}]"
    if origin is dict:
        key, value = get_args(annotation)
        return f"dict[{_type_name(key)}, {_type_name(value)}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return f"`{json.dumps(value)}`"


if __name__ == "__main__":
    print(render(), end="")
