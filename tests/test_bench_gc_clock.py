"""bench/common.py's GcClock: the collector's CPU and collections while installed, none after."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture
def common(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("common")


def test_counts_each_generations_collections_and_their_cpu(common: ModuleType,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    clock_now = iter([1.0, 1.25, 2.0, 2.5])  # start/stop of two collections: 0.25 + 0.5 s
    monkeypatch.setattr(time, "process_time", lambda: next(clock_now))
    thresholds = iter([(1_000, 20, 100), (4_000, 20, 100)])  # read at each collection's start
    monkeypatch.setattr(gc, "get_threshold", lambda: next(thresholds))
    enabled = gc.isenabled()
    others = list(gc.callbacks)  # (a pacing tune_gc installed would read the threshold too)
    gc.callbacks.clear()
    gc.disable()  # only the two collections below, none set off by allocations
    try:
        with common.GcClock() as clock:
            gc.collect(0)
            gc.collect(2)
    finally:
        gc.callbacks.extend(others)
        if enabled:
            gc.enable()
    assert clock.collections == [1, 0, 1]
    assert clock.cpu_s == pytest.approx(0.75)
    assert clock.longest == (pytest.approx(0.5), 4_000)  # the longer one, at the threshold it came at


def test_uninstalled_after_the_block(common: ModuleType) -> None:
    with common.GcClock() as clock:
        pass
    cycle: list[Any] = []
    cycle.append(cycle)  # garbage only the collector frees
    del cycle
    gc.collect()
    assert clock.collections == [0, 0, 0] and clock.cpu_s == 0.0
    assert all(getattr(cb, "__self__", None) is not clock for cb in gc.callbacks)
