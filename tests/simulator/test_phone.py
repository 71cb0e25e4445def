"""The simulator phone's protocol-time helpers (PROTOCOL.md 1)."""

from __future__ import annotations

import pytest

from robert_common.clock import EPOCH_DURATION, ManualClock, unix_to_ntp
from simulator.phone import Phone


def test_epoch_start_is_the_start_of_the_epoch_the_phone_is_in() -> None:
    clock = ManualClock(1_800_000_000.0)
    phone = Phone(clock=clock, time_start=unix_to_ntp(1_799_000_000))
    clock.advance(123)
    epoch = phone.epoch_now()
    assert phone.epoch_start(epoch) <= phone.ntp_now() < phone.epoch_start(epoch) + EPOCH_DURATION
    assert phone.epoch_start(epoch + 1) - phone.epoch_start(epoch) == EPOCH_DURATION
    assert phone.epoch_start(0) == phone.time_start


def test_epoch_start_of_an_unregistered_phone_says_so() -> None:
    with pytest.raises(RuntimeError, match="not registered"):
        Phone().epoch_start(0)
