"""``python -m bench scale``'s count of database commands per operation, run for real (in-process API,
crypto service and matcher on the test database server): every operation runs and the matching pass
validates the HELLOs it counts."""

from __future__ import annotations

from pathlib import Path

from bench.bench_scale import round_trips


async def test_round_trips_count_every_operation_and_a_matching_pass_over_every_hello(
    mongo_uri: str, tmp_path: Path
) -> None:
    trips, detail = await round_trips(mongo_uri, tmp_path)
    matching = [name for name in trips if name.startswith("matching, per HELLO")]
    assert matching == ["matching, per HELLO (100000 HELLOs; per batch of 100 contacts x 100: x 10 000)"]
    assert all(per_op > 0 for per_op in trips.values()), trips
    assert detail["find registrations"] > 0 and detail["update registrations"] > 0, detail
