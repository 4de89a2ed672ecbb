"""Loading and validating a grader: OpenAI's grader JSON (a file, a JSON string or a dict) in, a
checked `Grader` out, or one sentence naming the grader and the field at fault. The same JSON
works with OpenAI's reinforcement fine-tuning and with a tunelab jobs API."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.graders import multi, python_grader, score_model, string_check, text_similarity
from tunelab.graders.base import spec_error

VALIDATORS = {"string_check": string_check.validate, "text_similarity": text_similarity.validate,
              "python": python_grader.validate, "score_model": score_model.validate}
TYPES = (*VALIDATORS, "multi")


@dataclass(frozen=True)
class Grader:
    """A validated grader: its JSON as given (what an API echoes back) and, for a multi grader,
    its sub-graders by name."""
    type: str
    name: str
    spec: dict[str, Any]
    graders: dict[str, "Grader"] = field(default_factory=dict)

    @property
    def pass_threshold(self) -> float | None:
        value = self.spec.get("pass_threshold")
        return float(value) if value is not None else None

    def walk(self):
        """This grader and every sub-grader below it."""
        yield self
        for sub in self.graders.values():
            yield from sub.walk()

    @property
    def uses_python(self) -> bool:
        return any(g.type == "python" for g in self.walk())


def load_grader(source: "str | Path | dict[str, Any] | Grader", *, where: str | None = None) -> Grader:
    """A Grader from a JSON file path, a JSON string, a dict, or a Grader (returned as it is)."""
    if isinstance(source, Grader):
        return source
    if isinstance(source, dict):
        return _build(source, where)
    text = str(source)
    if text.lstrip().startswith("{"):
        return _build(_parse(text, where or "the grader JSON"), where)
    path = Path(text)
    if not path.is_file():
        raise TunelabError("grader file not found", where=text, fix="give the path of a grader JSON file")
    return _build(_parse(path.read_text(encoding="utf-8"), str(path)), where or str(path))


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TunelabError(f"the grader is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                           where=where, fix="fix the JSON") from None
    return value


def _build(spec: Any, where: str | None, path: str = "") -> Grader:
    if not isinstance(spec, dict):
        raise TunelabError(f"a grader must be a JSON object, got {type(spec).__name__}", where=where,
                           fix='start it with {"type": ..., "name": ...}')
    name = spec.get("name")
    label = name if isinstance(name, str) and name else path or "(unnamed)"
    kind = spec.get("type")
    if kind not in TYPES:
        hint = "tunelab does not support label_model graders; " if kind == "label_model" else ""
        raise spec_error(label, "type", f"must be one of {', '.join(TYPES)} (got {kind!r})", where,
                         fix=f"{hint}use one of the supported types")
    if not isinstance(name, str) or not name.strip():
        raise spec_error(label, "name", "must be a non-empty string", where)
    if kind != "multi":
        VALIDATORS[kind](spec, where)
        return Grader(kind, name, spec)
    subs = multi.sub_grader_specs(spec, where)
    children = {key: _build(sub, where, f"{name}.graders.{key}") for key, sub in subs.items()}
    multi.validate(spec, list(children), where)
    return Grader(kind, name, spec, children)
