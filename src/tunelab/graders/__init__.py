"""Graders: OpenAI's grader JSON (string_check, text_similarity, python, score_model, multi) read,
validated and run locally, as the reward of reinforcement fine-tuning (`train.task: rft`), the
score of `tunelab grade` and `tunelab eval`, and the graders API of a jobs server."""
from tunelab.graders.api import run_grader, validate_grader
from tunelab.graders.base import GradeResult, GraderSpecError
from tunelab.graders.grade import grade
from tunelab.graders.runtime import GraderRuntime
from tunelab.graders.spec import Grader, load_grader
from tunelab.graders.templating import make_sample

__all__ = ["Grader", "GradeResult", "GraderRuntime", "GraderSpecError", "grade", "load_grader", "make_sample",
           "run_grader", "validate_grader"]
