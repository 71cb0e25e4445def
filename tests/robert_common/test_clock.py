"""The injectable clock and protocol time (PROTOCOL.md 1): epochs, days, the clock-shift file."""

from __future__ import annotations

import datetime as dt

from robert_common.clock import NTP_OFFSET, Clock, ManualClock, ServiceTime, write_clock_shift


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
