"""The clock, protocol time and settings."""

from __future__ import annotations

import datetime as dt

import pytest

from robert_common.clock import NTP_OFFSET, Clock, ManualClock, ServiceTime, write_clock_shift
from robert_common.settings import SettingsError, load_settings


def test_epoch_arithmetic_follows_protocol_section_1() -> None:
    clock = ManualClock(dt.datetime(2020, 6, 2, 0, 14, 59, tzinfo=dt.UTC).timestamp())
    st = ServiceTime(dt.date(2020, 6, 1), clock)
    assert st.time_start == int(dt.datetime(2020, 6, 1, tzinfo=dt.UTC).timestamp()) + NTP_OFFSET
    assert st.current_epoch() == 96  # 24 h + 14 min 59 s after the start
    clock.advance(1)
    assert st.current_epoch() == 97
    assert st.day_of_epoch(95) == dt.date(2020, 6, 1)
    assert st.day_of_epoch(96) == dt.date(2020, 6, 2)
    assert st.epoch_start(97) - st.time_start == 97 * 900


def test_clock_shift_file_moves_time(tmp_path) -> None:
    shift = tmp_path / "shift"
    write_clock_shift(shift, 86_400 * 3)
    shifted, plain = Clock(shift), Clock()
    assert 3 * 86_400 - 5 < shifted.now() - plain.now() < 3 * 86_400 + 5


def test_clock_keeps_last_good_shift_when_file_is_garbage(tmp_path) -> None:
    shift = tmp_path / "shift"
    shift.write_text("not a number")
    assert abs(Clock(shift).now() - Clock().now()) < 5


def test_bad_settings_name_each_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBERT_TIME_START", "2020-06-01")
    monkeypatch.setenv("ROBERT_BUNDLE_DAYS", "0")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert "ROBERT_TIME_START" in str(e.value) and "ROBERT_BUNDLE_DAYS" in str(e.value)


def test_settings_file_is_read_and_environment_wins(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "robert.toml"
    f.write_text("bundle_days = 2\nhttp_port = 9999\n")
    monkeypatch.setenv("ROBERT_SETTINGS_FILE", str(f))
    monkeypatch.setenv("ROBERT_HTTP_PORT", "8181")
    s = load_settings()
    assert (s.bundle_days, s.http_port) == (2, 8181)


async def test_embedded_database_answers(db) -> None:
    await db.things.insert_one({"_id": b"\x01\x02\x03\x04\x05", "n": 1})
    assert (await db.things.find_one({"_id": b"\x01\x02\x03\x04\x05"}))["n"] == 1
