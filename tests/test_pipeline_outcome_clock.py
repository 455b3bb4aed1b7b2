"""Stage 2's label clock on hand-computed buckets: outcomes of several segment tags, classifiers'
and regressions' in one bucket, arriving in records of many rows or one row each."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from driftline.config import Settings
from driftline.operators.triggers import RetrainPolicy
from driftline.pipeline.outcomes import OutcomeClock
from driftline.pipeline.records import Outcomes, Progress
from driftline.pipeline.references import ProfileBook

START = 1_767_225_600_000
# (id, segment tags, label time, delay, correct, abs_error, rerouted), all in the first minute
OUTCOMES = [
    ("p1", "region=eu", START + 1_000, 10, 1, None, 0),
    ("p2", "region=eu;tier=gold", START + 2_000, 20, 0, None, 0),
    ("p3", "", START + 3_000, 30, None, 2.0, 0),
    ("p4", "region=eu", START + 4_000, 40, 1, None, 1),
    ("p5", "tier=gold", START + 5_000, 50, None, 1.0, 0),
    ("p3", "", START + 3_000, 30, None, 2.0, 0),  # a re-sent outcome counts once
]


def _clock() -> OutcomeClock:
    settings = Settings(topics={"partitions": 1}, windows={"metrics_interval_s": 60})  # type: ignore[arg-type]
    return OutcomeClock(0, 1, settings, "", ProfileBook(), RetrainPolicy(settings.triggers, "h"))


def _record(rows: list[tuple[Any, ...]]) -> Outcomes:
    columns = [list(column) for column in zip(*rows, strict=True)]
    return Outcomes(0, "m", "1", *columns)


@pytest.mark.parametrize("per_row", [False, True])
def test_interval_rows_count_each_outcome_in_its_segments(per_row: bool) -> None:
    clock = _clock()
    for rows in ([[row] for row in OUTCOMES] if per_row else [OUTCOMES]):
        clock.add_outcomes(_record(rows))
    clock.advance(Progress(0, START + 60_000, START + 60_000, START + 60_000))
    rows, _ = clock.close()
    got = {r["segment"]: (r["n_outcomes"], r["accuracy"], r["mae"], r["n_rerouted"], r["label_delay_p50_ms"])
           for r in rows["model_metrics"] if r["row_kind"] == "interval"}
    assert got == {
        "": (5, 2 / 3, 1.5, 1, 30.0),
        "region=eu": (3, 2 / 3, None, 1, 20.0),
        "tier=gold": (2, 0.0, 1.0, 0, 35.0),
    }
    # each segment's online estimators are those of the kind of its first outcome
    assert {segment: perf.task for (_, _, segment), perf in clock.performance.items()} == {
        "": "classification", "region=eu": "classification", "tier=gold": "classification"}
    assert clock.outcomes_total == {("m", "1", ""): 5, ("m", "1", "region=eu"): 3, ("m", "1", "tier=gold"): 2}
    assert clock.totals["duplicate_outcomes"] == 0


def test_an_outcome_of_a_closed_bucket_is_counted_as_a_duplicate() -> None:
    clock = _clock()
    clock.add_outcomes(_record(OUTCOMES[:2]))
    clock.advance(Progress(0, START + 60_000, START + 60_000, START + 60_000))
    clock.close()
    clock.add_outcomes(_record([OUTCOMES[2], ("p6", "", START + 61_000, 5, 1, None, 0), OUTCOMES[3]]))
    assert clock.totals["duplicate_outcomes"] == 2
    assert list(clock.buckets[("m", "1")]) == [START + 60_000]


@pytest.mark.parametrize("regression", [False, True])
def test_one_target_buckets_count_as_outcome_by_outcome(regression: bool, monkeypatch: pytest.MonkeyPatch,
                                                        bench_module: Callable[[str], ModuleType]) -> None:
    """A bucket of one target is tallied a column at a time (_tally_one_target): every row, total,
    float sum and online estimator state equal to the outcome-by-outcome loop's, on the records
    bench_stage_steps times it on (a shift halfway, so alarm rows; re-routed outcomes; errors
    beyond the bound)."""
    made = bench_module("bench_stage_steps").one_target_records(7, regression)

    def run() -> tuple[Any, ...]:
        clock = _clock()
        for record in made:
            clock.add_outcomes(record)
        clock.advance(Progress(0, START + 400_000, START + 400_000, START + 400_000))
        rows, triggers = clock.close()
        perf = {key: (p.n, p.alarms_total, p.get()) for key, p in clock.performance.items()}
        return rows, triggers, dict(clock.outcomes_total), perf

    columns = run()
    monkeypatch.setattr(OutcomeClock, "_tally_one_target", lambda *args: False)
    assert columns == run()
    metrics = columns[0]["model_metrics"]
    assert sum(r["row_kind"] == "alarm" for r in metrics) > 0  # the shift alarmed: alarm rows compared
    assert sum(r["n_outcomes"] for r in metrics if r["row_kind"] == "interval") > 1_000
