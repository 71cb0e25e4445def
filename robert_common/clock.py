"""The one clock of the system, and protocol time (PROTOCOL.md section 1).

Every component asks a :class:`Clock` for the time, never ``time.time()`` directly, so tests and the
simulator can move time: ``ManualClock`` in-process, or a shift file (``ROBERT_CLOCK_SHIFT_FILE``) that
every process of a running system re-reads at most once a second. Processes run under libfaketime
need nothing special: the system clock they read is already the faked one.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

NTP_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (Unix)
EPOCH_DURATION = 900  # seconds in an epoch
EPOCHS_PER_DAY = 96
SECONDS_PER_DAY = 86_400


def unix_to_ntp(unix_seconds: float) -> int:
    return int(unix_seconds) + NTP_OFFSET


def ntp_to_unix(ntp_seconds: int) -> int:
    return ntp_seconds - NTP_OFFSET


def date_to_ntp(day: dt.date) -> int:
    """NTP seconds of UTC midnight at the start of ``day``."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return unix_to_ntp(midnight.timestamp())


class Clock:
    """System time plus an optional shift in seconds read from a file (re-read at most every second)."""

    def __init__(self, shift_file: Path | None = None) -> None:
        self._shift_file = shift_file
        self._shift = 0.0
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def _current_shift(self) -> float:
        if self._shift_file is None:
            return 0.0
        mono = time.monotonic()
        if mono - self._read_at >= 1.0:
            with self._lock:
                try:
                    self._shift = float(self._shift_file.read_text().strip() or 0)
                except (OSError, ValueError):
                    pass  # keep the last good shift: a half-written file must not jump the time
                self._read_at = mono
        return self._shift

    def now(self) -> float:
        """Unix seconds (float)."""
        return time.time() + self._current_shift()

    def ntp_now(self) -> int:
        return unix_to_ntp(self.now())

    def utcnow(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now(), tz=dt.UTC)


class ManualClock(Clock):
    """A clock that only moves when told to: for tests and in-process simulations."""

    def __init__(self, unix_seconds: float) -> None:
        super().__init__(None)
        self._now = float(unix_seconds)

    def now(self) -> float:
        return self._now

    def set(self, unix_seconds: float) -> None:
        self._now = float(unix_seconds)

    def advance(self, seconds: float) -> None:
        self._now += seconds


def write_clock_shift(path: Path, seconds: float) -> None:
    """Atomically write a clock shift file (read by every process given ROBERT_CLOCK_SHIFT_FILE)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{seconds}\n")
    tmp.replace(path)


class ServiceTime:
    """Protocol time of one deployment: NTP seconds, epochs and days from ``timeStart`` (PROTOCOL.md 1)."""

    def __init__(self, time_start: dt.date, clock: Clock) -> None:
        self.time_start_date = time_start
        self.time_start = date_to_ntp(time_start)  # NTP seconds
        self.clock = clock

    def ntp_now(self) -> int:
        return self.clock.ntp_now()

    def epoch_id(self, ntp_seconds: int) -> int:
        return (ntp_seconds - self.time_start) // EPOCH_DURATION

    def current_epoch(self) -> int:
        return self.epoch_id(self.ntp_now())

    def epoch_start(self, epoch_id: int) -> int:
        """NTP seconds at which ``epoch_id`` starts."""
        return self.time_start + epoch_id * EPOCH_DURATION

    def day_of_epoch(self, epoch_id: int) -> dt.date:
        """UTC date of the start of an epoch: the day whose K_S encrypts its EBIDs."""
        return self.time_start_date + dt.timedelta(days=epoch_id // EPOCHS_PER_DAY)

    def day_of_ntp(self, ntp_seconds: int) -> dt.date:
        return dt.datetime.fromtimestamp(ntp_to_unix(ntp_seconds), tz=dt.UTC).date()

    def first_epoch_of_day(self, day: dt.date) -> int:
        return (day - self.time_start_date).days * EPOCHS_PER_DAY
