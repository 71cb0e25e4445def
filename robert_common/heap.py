"""The garbage collector of a long-running server process: no pause of a tenth of a second under load.

CPython's cyclic collector visits every tracked object of the generations it collects. A server
process holds tens of thousands of objects made at start-up and kept for its whole life (84 000 in
the API: modules, the gRPC and database clients, settings, compiled schemas); each full (generation
2) collection walks all of them again, with everything else the process holds at that moment.
Measured in the phone API under a 3x overload burst: 10 full collections of 42-99 ms each, every
request arriving meanwhile waiting behind them; it was what put the refusal latency's p99 at 41-66 ms
(issue 10, goal < 20 ms).

:func:`settle` is called once a process has started: it collects the start-up garbage and then
freezes what survives (``gc.freeze``): the collector never visits those objects again, and a full
collection only walks what the process made since. It also makes young collections ten times rarer
(``YOUNG_THRESHOLD``): at CPython's default of 700 allocations a collection ran in the middle of most
requests and moved their live objects (requests, connections, batches) to the older generations, which
then filled up and called for full collections. Measured in one quick overload run of two rounds each
(``python -m bench overload --quick``), 700 against 7 000: API collections over 20 ms per burst 0-3
-> 0; refusal p99 at 10x 44-1046 ms -> 34-44 ms. :func:`watch_pauses` times every collection into the
``robert_gc_pause_seconds`` histogram, so that an operator sees the pauses on /metrics.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Gauge, Histogram

GC_PAUSE = Histogram(
    "robert_gc_pause_seconds",
    "Pauses of the cyclic garbage collector, by generation collected",
    ["generation"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
)
FROZEN = Gauge("robert_gc_frozen_objects", "Objects made at start-up and moved out of the collector's reach")

YOUNG_THRESHOLD = 7_000  # allocations between two young collections (CPython's default: 700)

_started: list[float] = []


def _time_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        GC_PAUSE.labels(str(info["generation"])).observe(time.perf_counter() - _started.pop())


def watch_pauses() -> None:
    """Time every collection of this process into ``robert_gc_pause_seconds`` (once per process)."""
    if _time_collection not in gc.callbacks:
        gc.callbacks.append(_time_collection)


def settle() -> int:
    """The process has started: collect the start-up garbage, freeze the survivors out of the
    collector's reach, make young collections rarer. Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    frozen = gc.get_freeze_count()
    FROZEN.set(frozen)
    return frozen
