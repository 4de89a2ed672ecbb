"""The graders API of OpenAI's fine-tuning service, as plain functions a server can wrap:
POST /v1/fine_tuning/alpha/graders/validate -> validate_grader(body["grader"])
POST /v1/fine_tuning/alpha/graders/run      -> run_grader(body["grader"], body["model_sample"], body.get("item"))

Both return OpenAI's response shapes (GraderValidateResponse, GraderRunResponse of the openai
package); an invalid grader raises GraderSpecError (a TunelabError: one sentence), which a server
answers with 400.
"""
from __future__ import annotations

import time
from typing import Any

from tunelab.graders.base import ERROR_KINDS
from tunelab.graders.grade import grade
from tunelab.graders.runtime import GraderRuntime
from tunelab.graders.spec import load_grader


def validate_grader(grader: dict[str, Any]) -> dict[str, Any]:
    """{"grader": the grader as given}, once it is known to be valid."""
    return {"grader": load_grader(grader, where="grader").spec}


def run_grader(grader: dict[str, Any], model_sample: str, item: Any = None, *,
               runtime: GraderRuntime | None = None) -> dict[str, Any]:
    """Grade one model sample (its text; parsed into output_json when it is JSON) for one item. A
    server passes one runtime to every call: it keeps the sentence encoder and python workers."""
    loaded = load_grader(grader, where="grader")
    runtime = runtime or GraderRuntime()
    tokens_before = dict(runtime.token_usage)
    started = time.perf_counter()
    result = grade(loaded, model_sample, item if isinstance(item, dict) else {}, runtime=runtime)
    elapsed = time.perf_counter() - started
    used = {model: count - tokens_before.get(model, 0) for model, count in runtime.token_usage.items()
            if count - tokens_before.get(model, 0)}
    errors: dict[str, Any] = {kind: kind == result.error for kind in ERROR_KINDS}
    errors["model_grader_server_error_details"] = result.reason if result.error == "model_grader_server_error" else None
    errors["python_grader_runtime_error_details"] = (result.reason if result.error == "python_grader_runtime_error"
                                                     else None)
    errors["python_grader_server_error_type"] = (result.error if result.error in ("python_grader_server_error",
                                                                                   "unresponsive_reward_error")
                                                 else None)
    scores = dict(result.sub_scores) or {loaded.name: result.score}
    return {
        "reward": result.score,
        "metadata": {"name": loaded.name, "type": loaded.type, "errors": errors, "execution_time": elapsed,
                     "scores": scores, "token_usage": sum(used.values()) if used else None,
                     "sampled_model_name": None},
        "sub_rewards": dict(result.sub_scores),
        "model_grader_token_usage_per_model": used,
    }
