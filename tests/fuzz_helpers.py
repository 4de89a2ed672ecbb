"""Property-based fuzzing of a live server from its own /openapi.json (schemathesis): the one
loop the serving and jobs fuzz tests share. The cases are drawn from schemathesis' Hypothesis
strategies directly (its pytest plugin does not run under this pytest)."""
from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance


def fuzz_operations(base_url: str, mode: GenerationMode, *, paths: set[str], unschemable: set[str],
                    examples: int, negative_methods: tuple[str, ...] = ("POST",),
                    negative_may_succeed: bool = False) -> list[int]:
    """Every operation of the server's schema (those with `negative_methods` in negative mode)
    called with `examples` generated cases each; a response must match the schema, a schema-valid
    request may be a 400 only with a code in `unschemable` (what no schema can say), and a broken
    one must be a 4xx (or, with negative_may_succeed, also a 2xx: a free-form field the server
    takes as it is). Returns the status codes, none of them a 5xx."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= paths
    if mode is GenerationMode.NEGATIVE:
        operations = [op for op in operations if op.method.upper() in negative_methods]
    calls: list[int] = []
    for operation in operations:
        @given(case=operation.as_strategy(mode))
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case):
            # schemathesis' own acceptance/rejection checks, restated: its rejection list lacks 413,
            # which an invalid body over the size limit rightly gets
            response = case.call_and_validate(base_url=base_url,
                                              excluded_checks=[positive_data_acceptance, negative_data_rejection])
            calls.append(response.status_code)
            if mode is GenerationMode.POSITIVE and response.status_code == 400:
                assert response.json()["error"]["code"] in unschemable, response.text
            if mode is GenerationMode.NEGATIVE:
                assert 400 <= response.status_code < 500 or (negative_may_succeed and response.status_code < 300), \
                    response.text

        try:
            check()
        except Unsatisfiable:  # nothing in this operation can be made invalid (free-text path ids)
            assert mode is GenerationMode.NEGATIVE
    assert calls and all(status < 500 for status in calls)
    return calls
