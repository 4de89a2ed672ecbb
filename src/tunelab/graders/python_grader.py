"""python: the user's `grade(sample, item) -> float`, run in a separate process with a time limit,
no network and capped memory (python_worker.py). The parent never executes the source: it only
parses it to check that `grade` is defined with two parameters.

A grader that raises gives 0 with the exception as the reason; one that runs past the time limit
is killed and gives 0 ("did not answer within N s"); either way the next sample starts a fresh
process if needed. OpenAI's limits are kept where they apply: source under 256 KB, 2 GB of memory.
"""
from __future__ import annotations

import ast
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tunelab.graders.base import GradeFailure, GradeResult, check_keys, require_number, require_text, spec_error

FIELDS = ("type", "name", "source", "image_tag", "pass_threshold")
REQUIRED = ("type", "name", "source")
MAX_SOURCE_BYTES = 256 * 1024
MEMORY_MB = 2048
WORKER = Path(__file__).with_name("python_worker.py")
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")  # no credentials or proxies
STARTUP_S = 30.0  # loading the source may import heavy modules: a separate, generous limit


def validate(spec: dict[str, Any], where: str | None) -> None:
    name = spec["name"]
    check_keys(spec, FIELDS, REQUIRED, name, where)
    source = require_text(spec, "source", name, where)
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise spec_error(name, "source", f"is {len(source.encode()):,} bytes, over OpenAI's limit of 256 KB", where)
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise spec_error(name, "source", f"is not valid Python ({exc.msg}, line {exc.lineno})", where) from None
    grade = next((node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "grade"), None)
    if grade is None or len(grade.args.args) != 2:
        raise spec_error(name, "source", "must define grade(sample, item) at the top level", where)
    if "image_tag" in spec:
        require_text(spec, "image_tag", name, where)
    if "pass_threshold" in spec:
        require_number(spec, "pass_threshold", name, where)


class PythonGraderProcess:
    """One worker process for one grader's source, started on first use and after a failure."""

    def __init__(self, source: str, timeout_s: float, memory_mb: int = MEMORY_MB):
        self.source = source
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.process: subprocess.Popen | None = None
        self._buffer = b""

    def grade(self, sample: dict[str, Any], item: dict[str, Any] | None) -> float:
        if self.process is None:
            self._start()
        reply = self._ask({"sample": sample, "item": item}, self.timeout_s)
        if "error" in reply:
            raise GradeFailure("python_grader_runtime_error", f"the python grader raised {reply['error']}")
        return reply["score"]

    def _start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(WORKER), str(self.memory_mb)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env={k: v for k, v in os.environ.items() if k in PASSED_ENV})
        self._buffer = b""
        reply = self._ask({"source": self.source}, STARTUP_S)
        if "error" in reply:
            self.close()
            raise GradeFailure("python_grader_runtime_error", f"the python grader's source {reply['error']}")

    def _ask(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died()
        deadline = time.monotonic() + timeout_s
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self.close()  # a grader stuck in a loop is killed; the next sample starts afresh
                raise GradeFailure("unresponsive_reward_error",
                                   f"the python grader did not answer within {timeout_s:g} s and was stopped")
            chunk = os.read(fd, 65536)
            if not chunk:
                return self._died()
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _died(self) -> dict[str, Any]:
        code = self.process.poll() if self.process else None
        self.close()
        memory = " (over its memory limit?)" if code not in (None, 0) else ""
        raise GradeFailure("python_grader_server_error", f"the python grader's process exited with code {code}"
                                                         f"{memory}")

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                stream.close()
            self.process = None


def grade(spec: dict[str, Any], sample: dict[str, Any], item: dict[str, Any] | None, runtime) -> GradeResult:
    return GradeResult(runtime.python_process(spec).grade(sample, item))
