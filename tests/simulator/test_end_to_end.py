"""A small simulation against the real system in this process: API, crypto service, code issuer, worker.

The scenario (simulator/scenarios/small.yaml): alice spends an hour at 1 m from bob, ten minutes at
6 m from carol; dave only ever meets bob. Alice is diagnosed the next day, gets a short code from the
real CodeIssuer over gRPC and reports; the real matching worker runs; everyone polls. Bob must be
notified, nobody else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robert_common.clock import ServiceTime
from robert_server.codes import issuers
from robert_server.codes.server import start_server
from robert_server.codes.verifier import StoredCodeVerifier
from robert_server.matching.worker import MatchingConfig, Worker
from simulator.backend import GrpcIssuer
from simulator.report import print_report
from simulator.runner import Backend, ManualTime, Runner, RunOptions, next_utc_midnight
from simulator.scenario import load_scenario
from tests.fixtures.codes import CODES_PEPPER

SMALL = Path(__file__).parents[2] / "simulator" / "scenarios" / "small.yaml"


async def test_small_scenario_notifies_exactly_the_exposed(api_server: Any, tmp_path: Path) -> None:
    clock, db = api_server.clock, api_server.db
    settings = api_server.settings
    pepper = CODES_PEPPER.encode()
    server, port, service = await start_server(db, settings, clock, listen="127.0.0.1:0", pepper=pepper)
    api_server.use_verifier(StoredCodeVerifier(db, settings, clock, pepper))
    token = await issuers.add(db, "simulator", service.now())
    worker = Worker(
        db, api_server.crypto.client, ServiceTime(settings.time_start_date, clock),
        MatchingConfig.from_settings(settings),
    )  # fmt: skip
    issuer = GrpcIssuer(f"127.0.0.1:{port}", token)
    matcher_runs = 0

    async def run_matcher() -> None:
        nonlocal matcher_runs
        matcher_runs += 1
        await worker.run_once()

    scenario = load_scenario(SMALL)
    options = RunOptions(
        api_server.base_url, api_server.server_public_key,
        start_unix=next_utc_midnight(clock.now()), show_progress=False,
    )  # fmt: skip
    try:
        result = await Runner(
            scenario, options, ManualTime(clock), Backend(issuer.get_code, run_matcher)
        ).run()
    finally:
        await issuer.close()
        await server.stop(None)

    out = result.outcomes
    assert all(o.registered and not o.errors and o.poll_errors == 0 for o in out.values()), out
    assert out["alice"].reported and out["alice"].hellos_uploaded > 100
    assert matcher_runs >= 2
    assert result.truth["bob"].exposed
    assert {n for n, o in out.items() if o.notified} == {"bob"}
    assert out["bob"].notified_at is not None and out["bob"].notified_at > scenario.diagnoses[0].at
    c = result.confusion()
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 0, 0, 3)
    # the report is produced from the same result (its timeline picture: test_report.py)
    from io import StringIO

    from rich.console import Console

    text = StringIO()
    print_report(result, Console(file=text, width=140))
    print(text.getvalue())
    assert "TP" in text.getvalue() and "bob" in text.getvalue()
