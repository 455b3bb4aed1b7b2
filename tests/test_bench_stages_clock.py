"""bench_stages' per-stage clock: a stage's time is exclusive of the wrapped calls it makes, and of
the timer cost each of those calls adds around its own timed interval (which lands in the caller)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest


@pytest.fixture
def bench_stages(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("bench_stages")


@pytest.mark.parametrize("outside", [0.0, 1.0])
def test_a_callers_stage_excludes_its_callees_and_their_outside_cost(
    bench_stages: ModuleType, monkeypatch: pytest.MonkeyPatch, outside: float
) -> None:
    now = [0.0]  # a clock that moves only where the functions below work

    def work(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(bench_stages, "CLOCK", lambda: now[0])
    clock = bench_stages.StageClock(outside)
    callee = clock.wrap("callee", lambda: work(5.0))

    def body() -> None:
        work(2.0)
        callee()
        callee()
        work(3.0)

    clock.wrap("caller", body)()
    assert dict(clock.seconds) == {"callee": 10.0, "caller": 5.0 - 2 * outside}
    assert dict(clock.calls) == {"callee": 2, "caller": 1}


def test_the_timer_cost_splits_into_parts_that_add_up(bench_stages: ModuleType) -> None:
    cost = bench_stages.timer_cost(calls=2_000)
    assert cost.inside >= 0.0 and cost.outside >= 0.0
    assert cost.total == cost.inside + cost.outside


def test_the_join_native_ab_runs_both_joins_and_restores_the_switch(bench_stages: ModuleType) -> None:
    """Figure (12g): the Python variant runs with the join's C switch off, both emit the same
    outputs, and the switch is as it was after each."""
    from driftline.operators.join import native

    if native.NATIVE is None:
        pytest.skip("no C fast path in this install")
    saved = native.NATIVE
    with bench_stages._join_native(False):
        assert native.NATIVE is None
    assert native.NATIVE is saved
    figure = bench_stages.measure_join_native(400, 1)
    assert figure.extra["identical"] and native.NATIVE is saved
    assert figure.extra["c"]["join"] > 0 and figure.extra["python"]["join"] > 0
