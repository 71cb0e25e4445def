"""``python -m bench fuzz``: schemathesis against ``openapi.yaml`` and the running API (issue 10).

Generates requests from the OpenAPI document (deterministic: hypothesis derandomised) for every
operation and checks each answer: no 5xx, a status code, content type, headers and body the document
declares. Schema-valid requests the server refuses for what a schema cannot say (a MAC that does not
verify, an unknown captcha) are expected, so schemathesis' "positive data accepted" check is not run.
Prints the answers per status code and the problems found. The test suite runs the same with a few
hundred cases (tests/robert_server/api/test_fuzz.py); this runs BENCH_FUZZ_EXAMPLES (500) per
operation against the system started as separate processes (simulator.system.LocalSystem).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.errors import InvalidSchema
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from robert_server.api.app import OPENAPI_PATH, PREFIX

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = int(os.environ.get("BENCH_FUZZ_EXAMPLES", "500"))


@dataclass
class FuzzResult:
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())


def run_fuzz(base_url: str, examples: int, document: Path = OPENAPI_PATH) -> FuzzResult:
    """Up to ``examples`` generated requests per operation of ``document`` (openapi.yaml) against
    ``base_url``. An operation the document does not define properly (an unresolvable reference...) is a
    problem found, and the other operations are still run."""
    schema = schemathesis.openapi.from_path(str(document))
    out = FuzzResult()
    for operation in schema.get_all_operations():
        if isinstance(operation, Err):
            out.problems.append(_invalid_operation(operation.err()))
            continue
        op = operation.ok()

        @given(case=op.as_strategy())
        @settings(
            max_examples=examples,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=base_url + PREFIX, timeout=30)
            out.statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as e:  # noqa: BLE001 - every problem is collected and printed
                label = case.operation.label
                out.problems.append(f"{label}: {response.status_code}: {str(e).splitlines()[0][:200]}")

        try:
            check()
        except Unsatisfiable:
            out.problems.append(f"{op.label}: the document allows no request that can be generated")
        except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - what schemathesis found
            found = [line.strip() for line in str(e).splitlines() if line.startswith("- ")]
            out.problems.append(f"{op.label}: {'; '.join(found) or type(e).__name__}")
    return out


def _invalid_operation(error: InvalidSchema) -> str:
    """``<METHOD> <path>: what is wrong`` for an operation schemathesis could not read."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{error.label}: {'; '.join(line for line in lines if line != 'Error details:')[:200]}"


def main() -> None:
    from simulator.system import LocalSystem

    with LocalSystem(("crypto", "api")) as system:
        result = run_fuzz(system.base_url, EXAMPLES)
    print(f"{result.cases} requests; answers by status: {dict(sorted(result.statuses.items()))}")
    print(f"{len(result.problems)} problems")
    for line in sorted(set(result.problems))[:50]:
        print("  " + line)
