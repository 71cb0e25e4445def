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
from robert_common.tls import channel_credentials
from robert_server.codes import issuers
from robert_server.codes.server import start_server
from robert_server.codes.verifier import StoredCodeVerifier
from robert_server.matching.worker import MatchingConfig, Worker
from simulator.backend import GrpcIssuer
from simulator.report import SimulationResult, print_report
from simulator.runner import Backend, ManualTime, Runner, RunOptions, next_utc_midnight
from simulator.scenario import Scenario, load_scenario, parse_scenario
from tests.fixtures.codes import CODES_PEPPER

SMALL = Path(__file__).parents[2] / "simulator" / "scenarios" / "small.yaml"


async def run_in_process(api_server: Any, scenario: Scenario) -> tuple[SimulationResult, int]:
    """Run ``scenario`` against the fixtures' system: the result and how many matching runs it asked for."""
    clock, db = api_server.clock, api_server.db
    settings = api_server.settings
    pepper = CODES_PEPPER.encode()
    server, port, service = await start_server(db, settings, clock, listen="127.0.0.1:0", pepper=pepper)
    api_server.use_verifier(StoredCodeVerifier(db, settings, clock, pepper))
    token = await issuers.add(db, "simulator", service.now())
    worker = Worker(
        db, api_server.crypto.matcher, ServiceTime(settings.time_start_date, clock),
        MatchingConfig.from_settings(settings),
    )  # fmt: skip
    issuer = GrpcIssuer(f"127.0.0.1:{port}", token, credentials=channel_credentials(settings, "issuer-test"))
    matcher_runs = 0

    async def run_matcher() -> None:
        nonlocal matcher_runs
        matcher_runs += 1
        await worker.run_once()

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
    return result, matcher_runs


async def test_small_scenario_notifies_exactly_the_exposed(api_server: Any, tmp_path: Path) -> None:
    scenario = load_scenario(SMALL)
    result, matcher_runs = await run_in_process(api_server, scenario)
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


async def test_phones_send_dummy_uploads_at_the_configured_rate_and_nobody_can_tell(api_server: Any) -> None:
    """small.yaml with 2 dummy uploads per phone per day (one per 12-hour poll round): the dummies are
    answered exactly as the real upload (status and length), the server stores and counts only the real
    one, its metric counts the dummies, and the outcome of the scenario is the same."""
    import yaml
    from prometheus_client import REGISTRY

    from robert_server import kpis

    raw = yaml.safe_load(SMALL.read_text())
    scenario = parse_scenario({**raw, "dummies": {"per_phone_per_day": 2}}, source="small+dummies")
    metric = "robert_api_dummy_reports_total"
    before = REGISTRY.get_sample_value(metric) or 0.0
    result, _ = await run_in_process(api_server, scenario)
    dummies = result.report_answers["dummy"]
    # 2 a day, a round every 12 hours: exactly one dummy per phone per poll round
    assert (
        len(dummies)
        == sum(o.dummies for o in result.outcomes.values())
        == sum(o.polls for o in result.outcomes.values())
    )
    assert len(dummies) >= 4 * 3
    assert {status for status, _ in dummies} == {200}
    assert {size for _, size in dummies} == {size for status, size in result.report_answers["real"]}
    assert len(result.report_answers["real"]) == 1
    assert (REGISTRY.get_sample_value(metric) or 0.0) - before == len(dummies)
    counts = await kpis.report(api_server.db)
    assert counts.get("reports") == 1
    assert counts.get("hellosProcessed") == result.outcomes["alice"].hellos_uploaded  # nothing of a dummy
    assert {n for n, o in result.outcomes.items() if o.notified} == {"bob"}
    assert all(not o.errors for o in result.outcomes.values())
