"""EpisodeMerger: shard-level episode reports -> one model-level episode, whatever the arrival order."""

from __future__ import annotations

import pickle
import random
from typing import Any

from driftline.config import Settings
from driftline.operators.episodes import DEFAULT_LEARNING, DEFAULT_MIN_EFFECT_SD, DEFAULT_MIN_RATE_RATIO
from driftline.pipeline.episodes import EpisodeMerger


def report(shard: int, kind: str, t: int, count: int, magnitude: float, *, feature: str = "x",
           reason: str = "", reference: str = "r1", reference_from: int = 0) -> dict[str, Any]:
    return {"shard": shard, "model_id": "m", "model_version": "1", "feature": feature,
            "feature_kind": "numeric", "unit": "sd", "kind": kind, "reason": reason, "event_time": t,
            "count": count, "magnitude": magnitude, "peak_magnitude": magnitude,
            "component": f"mean{magnitude:+.2f}", "statistic": 15.0, "threshold": 14.0,
            "prediction_id": f"p{shard}-{count}", "reference_id": reference,
            "reference_from": reference_from, "arl": 1e6}


def merger() -> EpisodeMerger:
    return EpisodeMerger(grid_ms=1000, source="features", run_id="r", config_hash="c")


# Three shards see one shift at t ~ 1000 (0.5 sd) and a further one at t ~ 5000 (1.5 sd); shard 2
# goes back to the reference at 7000 and reopens at 7500; all are back by 9000. Feature y: a
# single shard's false start that closes again.
REPORTS = [
    report(0, "opened", 1010, 100, 0.45),
    report(1, "opened", 1200, 120, 0.55),
    report(2, "opened", 1900, 130, 0.50),
    report(0, "status", 1999, 190, 0.50),
    report(1, "status", 1999, 200, 0.52),
    report(2, "status", 1999, 140, 0.48),
    report(0, "escalated", 5100, 600, 1.50, reason="larger"),
    report(2, "escalated", 5150, 610, 1.45, reason="larger"),
    report(1, "escalated", 5300, 650, 1.65, reason="larger"),
    report(2, "closed", 7000, 800, 0.02, reason="back_to_reference"),
    report(2, "opened", 7500, 850, 1.40),
    report(0, "closed", 8000, 900, 0.01, reason="back_to_reference"),
    report(1, "closed", 8500, 950, 0.03, reason="back_to_reference"),
    report(2, "closed", 8900, 990, 0.00, reason="back_to_reference"),
    report(1, "opened", 3000, 300, -0.3, feature="y"),
    report(1, "closed", 3500, 350, 0.0, feature="y", reason="back_to_reference"),
]


def run(reports: list[dict[str, Any]], clock: list[int]) -> tuple[list[Any], list[Any]]:
    m = merger()
    rows, events = [], []
    pending = list(reports)
    for tick in clock:
        # a report is always delivered before the clock passes its time (stage 1's progress
        # follows its reports); which ones arrive before an earlier tick is up to the interleaving
        arrived = [r for r in pending if r["event_time"] < tick]
        for r in arrived:
            m.add(r)
            pending.remove(r)
        out = m.advance(tick)
        rows.extend(out.rows)
        events.extend(out.events)
    return rows, events


def test_one_episode_across_shards_with_a_known_answer() -> None:
    rows, events = run(REPORTS, [20_000])
    x = [e for e in events if e["feature"] == "x"]
    assert [(e["event_kind"], e["shard"], e["reason"]) for e in x] == [
        ("opened", 0, "alarm"),
        # shards 2 and 1 report the same change: no new event, although shard 1's estimate (1.65)
        # exceeds shard 0's (1.50) by more than the minimum effect (noise, not a further change)
        ("escalated", 0, "larger"),
        ("closed", 2, "back_to_reference"),  # when the last open shard closes
    ]
    assert len({e["episode_id"] for e in x}) == 1
    final = [r for r in rows if r["feature"] == "x"][-1]
    assert final["status"] == "closed" and final["closed_at"] == 8900 and final["opened_at"] == 1010
    assert final["close_reason"] == "back_to_reference" and final["escalations"] == 1
    assert final["shards"] == [0, 1, 2] and final["open_shards"] == []
    assert final["peak_magnitude"] == 1.65 and final["escalated_at"] == 5100
    assert final["escalated_component"] == "mean+1.50" and final["opened_component"] == "mean+0.45"
    # values seen: shard 0 100..900, shard 1 120..950, shard 2 130..800 and 850..990
    assert final["events_seen"] == 801 + 831 + 671 + 141
    # one row per grid bucket in which the episode changed, versioned by the bucket's end
    assert [r["version"] for r in rows if r["feature"] == "x"] == [2000, 6000, 8000, 9000]
    first = next(r for r in rows if r["feature"] == "x")
    # status at 1999: the mean of the shards' estimates weighted by the values each has seen
    assert abs(first["magnitude"] - (91 * 0.50 + 81 * 0.52 + 11 * 0.48) / 183) < 1e-12
    y = [e for e in events if e["feature"] == "y"]
    assert [e["event_kind"] for e in y] == ["opened", "closed"] and y[0]["magnitude"] == -0.3


def test_results_do_not_depend_on_arrival_or_clock_ticks() -> None:
    want = run(REPORTS, [20_000])
    for seed in range(20):
        rng = random.Random(seed)
        shuffled = rng.sample(REPORTS, len(REPORTS))
        ticks = [*sorted(rng.sample(range(0, 20_000), rng.randint(1, 30))), 20_000]
        assert run(shuffled, ticks) == want, seed


def test_resent_reports_are_ignored_before_and_after_they_applied() -> None:
    m = merger()
    for r in REPORTS[:3]:
        m.add(r)
    m.add(REPORTS[0])  # re-sent before the clock passed it
    first = m.advance(2000)
    restored: EpisodeMerger = pickle.loads(pickle.dumps(m))
    restored.add(REPORTS[1])  # re-sent after it was applied
    assert restored.duplicates == 2 and restored.advance(3000).rows == []
    assert [e["event_kind"] for e in first.events] == ["opened"]


def test_reversal_escalates_and_a_newer_profile_closes() -> None:
    m = merger()
    m.add(report(0, "opened", 100, 10, 0.8))
    m.add(report(1, "escalated", 200, 20, -0.7, reason="reversal"))  # not part of it: ignored
    m.add(report(1, "opened", 300, 30, 0.7))
    m.add(report(1, "escalated", 1500, 90, -0.6, reason="reversal"))
    m.add(report(0, "opened", 2500, 10, 0.9, reference="r2", reference_from=2000))
    m.add(report(1, "status", 2600, 120, -0.6))  # from the replaced profile: stale
    out = m.advance(3000)
    assert [(e["event_kind"], e["reason"], e["reference_id"]) for e in out.events] == [
        ("opened", "alarm", "r1"), ("escalated", "reversal", "r1"), ("closed", "new_profile", "r1"),
        ("opened", "alarm", "r2")]
    assert m.stale == 1 and m.open_count() == 1 and m.is_open("m", "1", "x")
    closed = [r for r in out.rows if r["status"] == "closed"]
    assert len(closed) == 1 and closed[0]["close_reason"] == "new_profile" and closed[0]["closed_at"] == 2500


def test_a_shard_closing_for_a_new_profile_closes_the_episode_and_retires_the_old_profile() -> None:
    m = merger()
    m.add(report(0, "opened", 100, 10, 0.8))
    m.add(report(1, "opened", 200, 20, 0.7))
    m.add(report(0, "closed", 1100, 50, 0.8, reason="new_profile"))  # shard 0 switched profiles
    m.add(report(1, "opened", 1500, 60, 0.9, feature="y"))  # shard 1, still on the old profile
    out = m.advance(2000)
    assert [(e["feature"], e["event_kind"], e["reason"]) for e in out.events] == [
        ("x", "opened", "alarm"), ("x", "closed", "new_profile")]
    assert m.stale == 1 and m.open_count() == 0


def test_settings_defaults_are_the_monitor_defaults() -> None:
    sequential = Settings().sequential
    assert sequential.min_effect_sd == DEFAULT_MIN_EFFECT_SD
    assert sequential.learning == DEFAULT_LEARNING
    assert sequential.min_error_ratio == DEFAULT_MIN_RATE_RATIO
    # the former per-interval rate limit still loads (old settings files), and means nothing
    assert Settings(sequential={"alert_interval_s": 60}).sequential == sequential


def test_a_scale_change_reads_in_its_own_unit_by_the_larger_weight() -> None:
    """Shards report a stuck sensor's episode first as a location shift, then (their learned samples)
    as a scale change, sd over the reference's ~0: the row follows the unit most of the open shards'
    values are read in, averages the estimates in that unit only (not a mean of 0.08 sd and 0.0
    ratios) and restarts its peak in it. Before, every row kept the opening's unit."""
    def scale(r: dict[str, Any], value: float) -> dict[str, Any]:
        return {**r, "unit": "sd_ratio", "magnitude": value, "peak_magnitude": value}

    m = merger()
    for r in [report(0, "opened", 1010, 100, -1.2), report(1, "opened", 1100, 100, -1.0),
              report(0, "status", 1999, 150, -1.1), report(1, "status", 1999, 150, -1.0)]:
        m.add(r)
    first = m.advance(2000).rows[-1]
    assert (first["unit"], round(first["magnitude"], 2)) == ("sd", -1.05)
    m.add(scale(report(0, "status", 2999, 2_000, 0.08), 0.0))  # shard 0 has seen more values
    m.add(report(1, "status", 2999, 300, 0.08))
    row = m.advance(3000).rows[-1]
    assert (row["unit"], row["magnitude"], row["peak_magnitude"], row["status"]) == (
        "sd_ratio", 0.0, 0.0, "open")
    m.add(scale(report(1, "status", 3999, 2_500, 0.0), 0.02))
    row = m.advance(4000).rows[-1]
    # a ratio's peak is the one furthest from 1 by its log: 0 (stuck) stays it
    assert row["unit"] == "sd_ratio" and 0.0 < row["magnitude"] < 0.02 and row["peak_magnitude"] == 0.0


def test_an_alert_reads_its_magnitude_in_the_unit_the_shard_read_it_in() -> None:
    """The episode's row reads a scale change (most of its shards' values), one shard escalates on
    a shift: the drift_alerts row carries that shard's magnitude in sd, not in the row's sd_ratio
    (elec2's nswprice read "larger sd_ratio -1.72": a -1.72 sd shift labelled a ratio)."""
    m = merger()
    for r in [report(0, "opened", 1010, 100, 2.0), report(1, "opened", 1100, 100, 2.1)]:
        m.add({**r, "unit": "sd_ratio"})
    opened = m.advance(2000)
    read = [(e["event_kind"], e["unit"], e["magnitude"]) for e in opened.events]
    assert read == [("opened", "sd_ratio", 2.0)]
    m.add({**report(1, "status", 2400, 3_000, 2.2), "unit": "sd_ratio"})  # shard 1 has seen more
    m.add(report(0, "escalated", 2500, 900, -1.72, reason="larger"))
    escalated = m.advance(3000)
    assert escalated.rows[-1]["unit"] == "sd_ratio"  # shard 1 still reads the scale change, by weight
    assert [(e["event_kind"], e["unit"], e["magnitude"]) for e in escalated.events] == [
        ("escalated", "sd", -1.72)]


def test_a_shard_back_in_the_episode_on_a_change_of_another_kind_escalates_it() -> None:
    """Shard 0 closes back to the reference while shard 1 holds the episode open (a shift); shard 0
    then opens again on a scale change (a stuck sensor): that is a further change, escalated once
    with reason "kind" (NOAA feat_1: before, the stuck sensor joined the open shift silently, and
    the retrain policy heard of it only when shard 1's own learned sample escalated, 2.2 h later).
    A shard that opens again on the episode's own kind of change only rejoins it."""
    m = merger()
    for r in [report(0, "opened", 1010, 100, 1.2), report(1, "opened", 1100, 100, 1.1),
              report(0, "closed", 2100, 2_100, 0.02, reason="back_to_reference")]:
        m.add(r)
    assert [e["event_kind"] for e in m.advance(3000).events] == ["opened"]
    m.add(report(0, "opened", 3100, 2_300, 1.0))  # the shift again: rejoins
    assert m.advance(4000).events == []
    m.add(report(0, "closed", 4100, 4_300, 0.0, reason="back_to_reference"))
    m.add({**report(0, "opened", 5100, 5_300, 0.0), "unit": "sd_ratio"})
    m.add({**report(0, "opened", 5200, 5_300, 0.0), "shard": 2, "unit": "sd_ratio"})  # new: joins
    out = m.advance(6000)
    assert [(e["event_kind"], e["reason"], e["unit"], e["shard"]) for e in out.events] == [
        ("escalated", "kind", "sd_ratio", 0)]
    assert out.rows[-1]["escalations"] == 1 and out.rows[-1]["status"] == "open"
    # shard 1's own learned sample reading the same change later is that change, not another
    m.add({**report(1, "escalated", 6100, 6_000, 0.0, reason="kind"), "unit": "sd_ratio"})
    assert m.advance(7000).events == []


def test_a_closed_episode_reads_its_shards_closing_estimates() -> None:
    """The closed row's magnitude is the closing shards' (back within the reference), not the last
    status of the shards open before (NOAA feat_3 closed back_to_reference reading +1.56 sd)."""
    m = merger()
    for r in [report(0, "opened", 1010, 100, 1.5), report(1, "opened", 1100, 100, 1.6),
              report(0, "status", 1999, 900, 1.5), report(1, "status", 1999, 900, 1.6),
              report(0, "closed", 2100, 2_100, 0.02, reason="back_to_reference"),
              report(1, "closed", 2200, 2_100, -0.04, reason="back_to_reference")]:
        m.add(r)
    out = m.advance(3000)
    row = out.rows[-1]
    assert row["status"] == "closed" and abs(row["magnitude"]) < 0.05, row
    assert out.events[-1]["event_kind"] == "closed" and abs(out.events[-1]["magnitude"]) < 0.05
