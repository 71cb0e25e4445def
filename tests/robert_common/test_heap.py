"""robert_common/heap.py: the start-up heap frozen out of the collector's reach, the pauses timed."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from robert_common import heap


def test_settle_freezes_what_start_up_made_and_says_how_much() -> None:
    kept = [[i] for i in range(10_000)]  # made "at start-up", kept for the process's life
    thresholds = gc.get_threshold()
    try:
        frozen = heap.settle()
        assert frozen == gc.get_freeze_count() >= len(kept)
        assert REGISTRY.get_sample_value("robert_gc_frozen_objects") == frozen
        assert not any(o is kept for o in gc.get_objects())  # in no generation the collector walks
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_each_collection_is_timed_by_generation() -> None:
    heap.watch_pauses()
    heap.watch_pauses()  # once per process, however often called
    assert gc.callbacks.count(heap._time_collection) == 1
    before = REGISTRY.get_sample_value("robert_gc_pause_seconds_count", {"generation": "2"}) or 0.0
    gc.collect()
    assert REGISTRY.get_sample_value("robert_gc_pause_seconds_count", {"generation": "2"}) == before + 1
