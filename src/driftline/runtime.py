"""Process-level tuning for long-running driftline processes (worker, replay)."""

from __future__ import annotations

import gc

# The hot path allocates many short-lived containers (decoded events, rows); with CPython's
# default generation-0 threshold of 700 the cyclic collector keeps rescanning the large, long-lived
# state (pending joins, sketches). Measured on the in-process pipeline: +30% events/s.
GC_THRESHOLDS = (200_000, 20, 100)


def tune_gc() -> None:
    """Collect rarely, and move everything allocated at start-up out of the collector's sight."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
