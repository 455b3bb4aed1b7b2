"""bench_models_profile's YoungCensus: young tracked objects by type at the first N gen-0 collections."""

from __future__ import annotations

import gc
from collections.abc import Callable
from types import ModuleType

import pytest


class _Marker:
    """A tracked object the census must find young."""


@pytest.fixture
def profile_bench(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("bench_models_profile")


def test_counts_young_objects_at_the_first_generation_0_collections(profile_bench: ModuleType) -> None:
    enabled = gc.isenabled()
    gc.disable()  # only the collections below
    try:
        gc.collect()
        with profile_bench.YoungCensus(2) as census:
            kept = [_Marker() for _ in range(50)]
            gc.collect(0)  # they move to generation 1
            gc.collect(1)  # not a generation-0 collection: no census
            kept += [_Marker() for _ in range(7)]
            gc.collect(0)
            gc.collect(0)  # past the first two: no census
        gc.collect(0)  # uninstalled
    finally:
        if enabled:
            gc.enable()
    assert len(kept) == 57
    assert [counts["_Marker"] for counts in census.counts] == [50, 7]
    assert all(getattr(cb, "__self__", None) is not census for cb in gc.callbacks)
