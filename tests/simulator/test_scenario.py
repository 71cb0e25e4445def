"""The scenario loader: the example files load, bad files fail with a message naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.scenario import SECONDS_PER_DAY, ScenarioError, load_scenario, parse_scenario

EXAMPLES = sorted((Path(__file__).parents[2] / "simulator" / "scenarios").glob("*.yaml"))


def base(**extra: object) -> dict:
    raw: dict = {
        "name": "t",
        "seed": 3,
        "population": [{"name": "alice"}, {"name": "bob"}, {"group": "g", "count": 3}],
        "encounters": [{"who": ["alice", "bob"], "day": 0, "at": "09:30", "minutes": 20, "distance_m": 1.5}],
        "diagnoses": [{"who": "alice", "day": 1, "at": "08:00"}],
    }
    raw.update(extra)
    return raw


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_files_load(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.phones and sc.encounters and sc.diagnoses
    assert all(e.start + e.duration <= sc.duration for e in sc.encounters)


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 2


def test_expansion_of_groups_places_and_days() -> None:
    raw = base(
        places=[{"name": "room", "phones": ["g*", "alice"], "distance_m": [1, 3]}],
        encounters=[{"place": "room", "days": [0, 2], "at": "10:00", "minutes": 30}],
        days=3,
    )
    sc = parse_scenario(raw)
    assert list(sc.phones) == ["alice", "bob", "g01", "g02", "g03"]
    assert len(sc.encounters) == 2 * 6  # 4 phones: 6 pairs, on 2 days
    starts = {e.start for e in sc.encounters}
    assert starts == {10 * 3600, 2 * SECONDS_PER_DAY + 10 * 3600}
    assert all(1 <= e.distance_m <= 3 and e.duration == 1800 for e in sc.encounters)
    assert sc.diagnoses[0].at == SECONDS_PER_DAY + 8 * 3600


def test_same_seed_same_scenario_other_seed_other_distances() -> None:
    raw = base(places=[{"name": "room", "phones": ["g*"], "distance_m": [0.5, 9]}])
    raw["encounters"] = [{"place": "room", "day": 0, "at": "10:00", "minutes": 30}]
    one, two = parse_scenario(raw), parse_scenario(raw)
    other = parse_scenario({**raw, "seed": 4})
    assert one.encounters == two.encounters
    assert [e.distance_m for e in one.encounters] != [e.distance_m for e in other.encounters]


def test_days_default_to_last_event() -> None:
    assert parse_scenario(base()).days == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"population": []}, "population"),
        (
            {
                "encounters": [
                    {"who": ["alice", "bobb"], "day": 0, "at": "09:00", "minutes": 5, "distance_m": 1}
                ]
            },
            "encounters[0].who: unknown phone or pattern 'bobb'",
        ),
        (
            {
                "encounters": [
                    {"who": ["alice", "bob"], "day": 0, "at": "25:00", "minutes": 5, "distance_m": 1}
                ]
            },
            "encounters[0].at",
        ),
        (
            {
                "encounters": [
                    {"who": ["alice", "bob"], "day": 0, "at": "09:00", "minutes": 5, "distance_m": -1}
                ]
            },
            "encounters[0].distance_m",
        ),
        (
            {"encounters": [{"who": ["alice", "bob"], "day": 0, "at": "09:00", "minutes": 5}]},
            "distance_m is required",
        ),
        (
            {"encounters": [{"who": ["alice"], "day": 0, "at": "09:00", "minutes": 5, "distance_m": 1}]},
            "at least two phones",
        ),
        (
            {"encounters": [{"who": ["alice", "bob"], "at": "09:00", "minutes": 5, "distance_m": 1}]},
            "day or days",
        ),
        (
            {"encounters": [{"place": "nowhere", "day": 0, "at": "09:00", "minutes": 5}]},
            "unknown place 'nowhere'",
        ),
        ({"diagnoses": [{"who": "zed", "day": 0}]}, "diagnoses[0].who: unknown phone 'zed'"),
        ({"diagnoses": [{"who": "alice", "day": 0}, {"who": "alice", "day": 1}]}, "only once"),
        ({"population": [{"name": "alice"}, {"name": "alice"}]}, "duplicate phone 'alice'"),
        ({"population": [{"name": "a", "group": "b"}]}, "exactly one of name or group"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({"ble": {"noise_sd_db": -1}}, "ble.noise_sd_db"),
        ({"days": 1, "diagnoses": [{"who": "alice", "day": 3}]}, "too short"),
        ({"polling": {"every_hours": 0.1}}, "polling.every_hours"),
    ],
)
def test_bad_scenarios_are_refused_with_a_clear_message(change: dict, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(base(**change), source="bad.yaml")
    text = str(info.value)
    assert text.startswith("bad.yaml: ")
    assert message in text


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("population: [\n  {name: a\n")
    with pytest.raises(ScenarioError, match=r"not valid YAML \(line"):
        load_scenario(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ScenarioError, match="a scenario is a mapping"):
        load_scenario(scalar)


def test_countries_give_each_phone_its_system() -> None:
    sc = parse_scenario(
        base(
            countries=[{"name": "fr", "code": 0x21}, {"name": "de", "code": 0x22}],
            population=[
                {"name": "alice"},
                {"name": "bob", "country": "de"},
                {"group": "g", "count": 2, "country": "de"},
            ],
        )
    )
    assert sc.countries == {"fr": 0x21, "de": 0x22}
    assert {n: p.country for n, p in sc.phones.items()} == {
        "alice": "fr",
        "bob": "de",
        "g01": "de",
        "g02": "de",
    }
    assert parse_scenario(base()).phones["alice"].country == ""  # no countries: the one system


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"population": [{"name": "alice", "country": "xx"}, {"name": "bob"}]},
            "population[0].country: unknown country 'xx'",
        ),
        (
            {"countries": [{"name": "fr", "code": 33}, {"name": "fr", "code": 34}]},
            "countries[1].name: duplicate country 'fr'",
        ),
        (
            {"countries": [{"name": "fr", "code": 33}, {"name": "be", "code": 33}]},
            "countries[1].code: duplicate country code 0x21",
        ),
        ({"countries": [{"name": "fr", "code": 256}]}, "countries[0].code"),
    ],
)
def test_bad_countries_are_named(extra: dict, message: str) -> None:
    raw = base(**extra)
    if "countries" not in extra:
        raw["countries"] = [{"name": "fr", "code": 33}]
    with pytest.raises(
        ScenarioError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")
    ):
        parse_scenario(raw)
