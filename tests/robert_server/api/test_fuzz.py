"""A bounded schemathesis run against openapi.yaml and the API running as separate processes (issue 10):
a few hundred generated requests, no 5xx, every answer as the document declares it (status, content
type, headers, body). ``python -m bench fuzz`` runs the same for longer."""

from __future__ import annotations

import pytest

from bench.bench_fuzz import run_fuzz
from simulator.system import LocalSystem


@pytest.mark.slow
def test_generated_requests_get_documented_answers_and_no_5xx() -> None:
    with LocalSystem(("crypto", "api")) as system:
        result = run_fuzz(system.base_url, examples=40)
    assert result.cases >= 200, result.statuses
    assert not [s for s in result.statuses if s >= 500], result.statuses
    assert result.problems == []
