"""Scenario files: who is around, who meets whom (when, how long, how far), who is diagnosed when.

A scenario is a YAML file. Times are given as a day number (0 = the first day of the simulation, which
starts at a UTC midnight) and a UTC time of day ``"HH:MM"``. Everything random (distances drawn from a
range, BLE noise, scan gaps, polling phases) comes from ``seed``: the same file and seed give the same
run. Format (every key but ``population`` is optional)::

    name: office-week            # shown in the report
    seed: 42                     # default 0
    days: 5                      # length of the simulation in days (default: last event's day + 1)
    polling: {every_hours: 6}    # all phones poll /status once per round (>= the server's allowed gap)
    matching: {every_hours: 6, after_reports: true}   # when the matching worker runs
    dummies: {per_phone_per_day: 1}   # dummy /report uploads each phone sends, on average (default 0)
    ble:                         # the BLE model (simulator/ble.py, BleParams): any field may be set
      hello_interval_s: 5
      path_loss_exponent: 2.0
    ground_truth: {distance_m: 2.0, minutes: 15, lookback_days: 14, recent_days: 7}
    countries:                   # optional: federated countries, each its own system (default: one)
      - {name: fr, code: 0x21}   # code: its CC (PROTOCOL.md 4), the first one is the default country
      - {name: de, code: 0x22}
    population:                  # named phones, or groups expanded to <group>01, <group>02 ...
      - {name: alice, pocket: 0.5}          # pocket: fraction of the time the phone is in a pocket/bag
      - {group: visitor, count: 3, joins_day: 1}   # joins_day: day the app is installed (registers)
      - {name: karl, country: de}           # country: registered with that country's server
    places:                      # optional: a named set of phones and the distances between them there
      - {name: office, phones: [alice, bob, "visitor*"], distance_m: [1.0, 4.0]}
    encounters:
      - {who: [alice, bob], day: 0, at: "09:00", minutes: 45, distance_m: 1.0}
      - {place: office, days: [1, 2], at: "14:00", minutes: 60}         # every pair of its phones
      - {place: office, who: [alice, visitor01], day: 3, at: "10:00", minutes: 20, distance_m: [0.5, 2]}
    diagnoses:
      - {who: alice, day: 3, at: "18:00"}   # gets a code from the issuer and reports at that time

``who`` names phones; ``"group*"`` selects every phone of a group. ``distance_m`` is a number or a
``[low, high]`` range from which each pair draws its own distance. Errors name the field and the value.
"""

from __future__ import annotations

import fnmatch
import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simulator.ble import BleParams

SECONDS_PER_DAY = 86_400


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file, the field and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_hhmm(value: str) -> int:
    """``"HH:MM"`` or ``"HH:MM:SS"`` (UTC) to seconds after midnight."""
    parts = str(value).split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(f"time of day must be written HH:MM, got {value!r}")
    h, m, s = (int(p) for p in [*parts, "0"][:3])
    if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 60):
        raise ValueError(f"time of day out of range: {value!r}")
    return h * 3600 + m * 60 + s


Distance = float | tuple[float, float]


def _check_distance(v: Any) -> Distance:
    if isinstance(v, int | float) and not isinstance(v, bool):
        if v <= 0:
            raise ValueError("distance_m must be > 0")
        return float(v)
    if isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int | float) for x in v):
        lo, hi = float(v[0]), float(v[1])
        if not 0 < lo <= hi:
            raise ValueError("distance_m range must be [low, high] with 0 < low <= high")
        return (lo, hi)
    raise ValueError("distance_m must be a number or a [low, high] range")


class PhoneSpec(_Strict):
    name: str | None = None
    group: str | None = None
    count: int = Field(default=1, ge=1, le=100_000)
    pocket: float = Field(default=0.5, ge=0.0, le=1.0)
    joins_day: int = Field(default=0, ge=0)
    country: str | None = None

    @model_validator(mode="after")
    def _name_or_group(self) -> PhoneSpec:
        if (self.name is None) == (self.group is None):
            raise ValueError("give exactly one of name or group")
        if self.name is not None and self.count != 1:
            raise ValueError("count is only for a group")
        return self


class PlaceSpec(_Strict):
    name: str
    phones: list[str] = Field(min_length=1)
    distance_m: Any = (1.0, 3.0)

    _check = field_validator("distance_m")(lambda cls, v: _check_distance(v))


class EncounterSpec(_Strict):
    who: list[str] | None = None
    place: str | None = None
    day: int | None = Field(default=None, ge=0)
    days: list[int] | None = None
    at: str
    minutes: float = Field(gt=0, le=24 * 60)
    distance_m: Any = None

    @field_validator("at")
    @classmethod
    def _check_at(cls, v: str) -> str:
        _parse_hhmm(v)
        return v

    @field_validator("distance_m")
    @classmethod
    def _check_dist(cls, v: Any) -> Any:
        return None if v is None else _check_distance(v)

    @model_validator(mode="after")
    def _check_shape(self) -> EncounterSpec:
        if (self.day is None) == (self.days is None):
            raise ValueError("give exactly one of day or days")
        if self.days is not None and (not self.days or min(self.days) < 0):
            raise ValueError("days must be a non-empty list of day numbers >= 0")
        if self.who is None and self.place is None:
            raise ValueError("give who, place, or both")
        if self.place is None and self.distance_m is None:
            raise ValueError("distance_m is required when no place gives one")
        return self


class CountrySpec(_Strict):
    name: str = Field(min_length=1, max_length=32)
    code: int = Field(ge=0, le=255)


class DiagnosisSpec(_Strict):
    who: str
    day: int = Field(ge=0)
    at: str = "12:00"

    @field_validator("at")
    @classmethod
    def _check_at(cls, v: str) -> str:
        _parse_hhmm(v)
        return v


class PollingSpec(_Strict):
    every_hours: float = Field(default=6.0, ge=0.5, le=48)


class MatchingSpec(_Strict):
    every_hours: float = Field(default=6.0, ge=0.25, le=48)
    after_reports: bool = True


class DummiesSpec(_Strict):
    """Dummy /report uploads (README, "Privacy on the wire"): sent during poll rounds, at random."""

    per_phone_per_day: float = Field(default=0.0, ge=0, le=48)


class GroundTruthSpec(_Strict):
    """The model's own definition of "exposed" (see simulator/groundtruth.py)."""

    distance_m: float = Field(default=2.0, gt=0)
    minutes: float = Field(default=15.0, gt=0)
    lookback_days: int = Field(default=14, ge=1)
    recent_days: int = Field(default=7, ge=1)


class ScenarioSpec(_Strict):
    name: str = "scenario"
    seed: int = 0
    days: int | None = Field(default=None, ge=1, le=60)
    polling: PollingSpec = PollingSpec()
    matching: MatchingSpec = MatchingSpec()
    dummies: DummiesSpec = DummiesSpec()
    ble: BleParams = BleParams()
    ground_truth: GroundTruthSpec = GroundTruthSpec()
    countries: list[CountrySpec] = []
    population: list[PhoneSpec] = Field(min_length=1)
    places: list[PlaceSpec] = []
    encounters: list[EncounterSpec] = []
    diagnoses: list[DiagnosisSpec] = []


# --- the expanded, checked scenario the rest of the simulator uses ----------------------------


@dataclass(frozen=True)
class Phone:
    name: str
    pocket: float  # fraction of the time in a pocket or bag
    joins_at: int  # seconds after the simulation start: registration time
    country: str = ""  # the country (system) it registers with; "" when the scenario has one


@dataclass(frozen=True)
class PairEncounter:
    """Two phones near each other from ``start`` (seconds after the simulation start) for ``duration``."""

    a: str
    b: str
    start: int
    duration: int
    distance_m: float


@dataclass(frozen=True)
class Diagnosis:
    who: str
    at: int  # seconds after the simulation start


@dataclass
class Scenario:
    name: str
    seed: int
    days: int
    phones: dict[str, Phone]
    encounters: list[PairEncounter]
    diagnoses: list[Diagnosis]
    poll_every: int  # seconds
    match_every: int  # seconds
    match_after_reports: bool
    ble: BleParams
    ground_truth: GroundTruthSpec
    source: str = ""
    groups: dict[str, list[str]] = field(default_factory=dict)
    dummies_per_day: float = 0.0  # dummy /report uploads per phone per day, on average
    countries: dict[str, int] = field(default_factory=dict)  # name -> CC, in the file's order

    @property
    def duration(self) -> int:
        return self.days * SECONDS_PER_DAY


def load_scenario(path: str | Path) -> Scenario:
    """Read, validate and expand a scenario file; raise ScenarioError with a precise message."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ScenarioError(f"{path}: not valid YAML{where}") from None
    return parse_scenario(raw, source=str(path))


def parse_scenario(raw: Any, *, source: str = "<scenario>") -> Scenario:
    """Validate a scenario already read into Python objects (see the module docstring for the format)."""
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping with at least a population")
    try:
        spec = ScenarioSpec.model_validate(raw)
    except ValidationError as e:
        raise ScenarioError(f"{source}: " + "; ".join(_format_error(err) for err in e.errors())) from None
    try:
        return _expand(spec, source)
    except ValueError as e:
        raise ScenarioError(f"{source}: {e}") from None


def _format_error(err: Any) -> str:
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc or 'scenario'}: {msg}"


def _expand(spec: ScenarioSpec, source: str) -> Scenario:
    rng = random.Random(spec.seed)
    countries = _countries(spec.countries)
    phones, groups = _expand_population(spec.population, countries)
    places = {}
    for i, place in enumerate(spec.places):
        if place.name in places:
            raise ValueError(f"places[{i}].name: duplicate place {place.name!r}")
        places[place.name] = (_select(place.phones, phones, groups, f"places[{i}].phones"), place.distance_m)
    encounters: list[PairEncounter] = []
    for i, enc in enumerate(spec.encounters):
        encounters.extend(_expand_encounter(i, enc, phones, groups, places, rng))
    diagnoses = []
    for i, d in enumerate(spec.diagnoses):
        if d.who not in phones:
            raise ValueError(f"diagnoses[{i}].who: unknown phone {d.who!r}")
        at = d.day * SECONDS_PER_DAY + _parse_hhmm(d.at)
        if at < phones[d.who].joins_at:
            raise ValueError(f"diagnoses[{i}]: {d.who!r} is diagnosed before joining")
        diagnoses.append(Diagnosis(d.who, at))
    if len({d.who for d in diagnoses}) != len(diagnoses):
        raise ValueError("diagnoses: a phone can report only once")
    last = max([e.start + e.duration for e in encounters] + [d.at for d in diagnoses] + [0])
    days = spec.days if spec.days is not None else last // SECONDS_PER_DAY + 1
    if last > days * SECONDS_PER_DAY:
        raise ValueError(f"days: {days} is too short for the last event (day {last // SECONDS_PER_DAY})")
    return Scenario(
        name=spec.name, seed=spec.seed, days=days, phones=phones,
        encounters=sorted(encounters, key=lambda e: (e.start, e.a, e.b)), diagnoses=diagnoses,
        poll_every=int(spec.polling.every_hours * 3600), match_every=int(spec.matching.every_hours * 3600),
        match_after_reports=spec.matching.after_reports, ble=spec.ble, ground_truth=spec.ground_truth,
        source=source, groups=groups, dummies_per_day=spec.dummies.per_phone_per_day,
        countries=countries,
    )  # fmt: skip


def _countries(specs: list[CountrySpec]) -> dict[str, int]:
    countries: dict[str, int] = {}
    for i, c in enumerate(specs):
        if c.name in countries:
            raise ValueError(f"countries[{i}].name: duplicate country {c.name!r}")
        if c.code in countries.values():
            raise ValueError(f"countries[{i}].code: duplicate country code {c.code:#04x}")
        countries[c.name] = c.code
    return countries


def _expand_population(
    specs: list[PhoneSpec], countries: dict[str, int]
) -> tuple[dict[str, Phone], dict[str, list[str]]]:
    phones: dict[str, Phone] = {}
    groups: dict[str, list[str]] = {}
    default_country = next(iter(countries), "")
    for i, p in enumerate(specs):
        if p.country is not None and p.country not in countries:
            raise ValueError(f"population[{i}].country: unknown country {p.country!r} (see countries)")
        if p.name is not None:
            names = [p.name]
        else:
            assert p.group is not None
            width = max(2, len(str(p.count)))
            names = [f"{p.group}{k:0{width}d}" for k in range(1, p.count + 1)]
            groups[p.group] = names
        for name in names:
            if name in phones:
                raise ValueError(f"population[{i}]: duplicate phone {name!r}")
            phones[name] = Phone(name, p.pocket, p.joins_day * SECONDS_PER_DAY, p.country or default_country)
    return phones, groups


def _select(
    patterns: list[str], phones: dict[str, Phone], groups: dict[str, list[str]], where: str
) -> list[str]:
    """Phone names from names and ``group*`` / glob patterns, in order, without duplicates."""
    out: list[str] = []
    for pat in patterns:
        if pat in phones:
            hits = [pat]
        elif pat in ("all", "*"):
            hits = list(phones)
        else:
            hits = [n for n in phones if fnmatch.fnmatchcase(n, pat)]
            if not hits:
                raise ValueError(f"{where}: unknown phone or pattern {pat!r}")
        out.extend(h for h in hits if h not in out)
    return out


def _expand_encounter(
    i: int,
    enc: EncounterSpec,
    phones: dict[str, Phone],
    groups: dict[str, list[str]],
    places: dict[str, tuple[list[str], Distance]],
    rng: random.Random,
) -> list[PairEncounter]:
    where = f"encounters[{i}]"
    distance: Distance | None = enc.distance_m
    members: list[str] | None = None
    if enc.place is not None:
        if enc.place not in places:
            raise ValueError(f"{where}.place: unknown place {enc.place!r}")
        members, place_distance = places[enc.place]
        distance = distance if distance is not None else place_distance
    who = _select(enc.who, phones, groups, f"{where}.who") if enc.who is not None else list(members or [])
    if members is not None:
        outside = [w for w in who if w not in members]
        if outside:
            raise ValueError(f"{where}.who: {outside[0]!r} is not a phone of place {enc.place!r}")
    if len(who) < 2:
        raise ValueError(f"{where}.who: an encounter needs at least two phones")
    assert distance is not None
    start_of_day = _parse_hhmm(enc.at)
    duration = int(enc.minutes * 60)
    out = []
    for day in enc.days if enc.days is not None else [enc.day or 0]:
        start = day * SECONDS_PER_DAY + start_of_day
        for a, b in itertools.combinations(who, 2):
            d = distance if isinstance(distance, float) else rng.uniform(*distance)
            out.append(PairEncounter(a, b, start, duration, round(d, 3)))
    return out
