"""EpisodeMerger when shards disagree: a row's unit and peak are a function of all shards' evidence,
and one shard's escalation neither flips the row's unit nor stands for another shard's further
change of another kind. Hand-built shard reports (the monitors' report contract), no broker."""

from __future__ import annotations

import pickle
import random
from typing import Any

from driftline.pipeline.episodes import EpisodeMerger

ROW_FIELDS = ("status", "unit", "magnitude", "peak_magnitude", "escalations", "opened_at", "last_seen",
              "closed_at", "close_reason", "events_seen", "version")


def report(shard: int, kind: str, t: int, count: int, magnitude: float, *, unit: str = "sd",
           reason: str = "", peak: float | None = None) -> dict[str, Any]:
    return {"shard": shard, "model_id": "m", "model_version": "1", "feature": "x",
            "feature_kind": "numeric", "unit": unit, "kind": kind, "reason": reason, "event_time": t,
            "count": count, "magnitude": magnitude,
            "peak_magnitude": magnitude if peak is None else peak,
            "component": "", "statistic": 0.0, "threshold": 0.0, "prediction_id": f"p{shard}-{count}",
            "reference_id": "r1", "reference_from": 0, "arl": 1e6}


def merger() -> EpisodeMerger:
    return EpisodeMerger(grid_ms=1000, source="features", run_id="r", config_hash="c")


def test_a_spread_told_by_one_shard_does_not_flip_the_rows_unit_or_restart_its_peak() -> None:
    """A location episode (+2 sd) whose shard 0 (most of the values) tells its spread (x3, reason
    "kind", in sd_ratio): the shard's own state still reads the location, so the row does too, and
    its peak stays the location's. Before, the row read sd_ratio 3.0 until shard 0's next status,
    then sd again with its peak restarted at the current mean (2.1 lost)."""
    m = merger()
    for r in [report(0, "opened", 1010, 100, 2.0), report(1, "opened", 1100, 10, 1.9),
              report(0, "status", 1999, 5_000, 2.0, peak=2.1), report(1, "status", 1999, 500, 1.9)]:
        m.add(r)
    before = m.advance(2000).rows[-1]
    assert (before["unit"], before["peak_magnitude"]) == ("sd", 2.1)
    m.add(report(0, "escalated", 2500, 5_600, 3.0, unit="sd_ratio", reason="kind"))
    told = m.advance(3000)
    assert [(e["event_kind"], e["reason"], e["unit"], e["magnitude"]) for e in told.events] == [
        ("escalated", "kind", "sd_ratio", 3.0)]  # the alert tells the spread in its own unit
    row = told.rows[-1]
    assert (row["unit"], row["peak_magnitude"], row["escalations"]) == ("sd", 2.1, 1), row
    m.add(report(0, "status", 3999, 7_000, 1.95, peak=2.1))
    m.add(report(1, "status", 3999, 700, 1.9))
    later = m.advance(4000).rows[-1]
    assert (later["unit"], later["peak_magnitude"]) == ("sd", 2.1), later


def test_one_shards_escalation_of_one_kind_does_not_mask_anothers_of_another_kind() -> None:
    """NOAA feat_4 during development: shard 0 told a spread that was not there (x1.15 on a cycle's
    wander, reason "kind"); then the sensor's fault tripled the standing shift (+0.9 -> +2.35 sd)
    and shards 1-3 escalated "larger" by location, each its first. Counted per shard, their first
    escalation was read as the one shard 0 already reported, and the retrain policy never heard
    of the fault. Counted by what changed, the shift is its own further change, told once."""
    m = merger()
    for shard in range(4):
        m.add(report(shard, "opened", 1010 + shard, 100, 0.9))
    m.add(report(0, "escalated", 2500, 2_200, 1.15, unit="sd_ratio", reason="kind"))
    for shard in (1, 2, 3):
        m.add(report(shard, "escalated", 5100 + shard, 3_000, 2.35 + shard / 100, reason="larger"))
    out = m.advance(7000)
    assert [(e["event_kind"], e["reason"], e["unit"], e["shard"]) for e in out.events] == [
        ("opened", "alarm", "sd", 0), ("escalated", "kind", "sd_ratio", 0),
        ("escalated", "larger", "sd", 1)]
    assert out.rows[-1]["escalations"] == 2 and out.rows[-1]["escalation_reason"] == "larger"
    # shard 0 seeing the shift grow too is that same change, not a third one
    m.add(report(0, "escalated", 7100, 3_500, 2.3, reason="larger"))
    assert m.advance(8000).events == []


def test_a_row_flipping_units_keeps_each_units_peak() -> None:
    """Shards genuinely disagree (a sensor stuck in part of the traffic): the row reads the unit most
    of the open shards' values are in; when that changes back, the peak in the unit it returns to
    is the largest reading any shard gave in it, not restarted at the current mean."""
    m = merger()
    for r in [report(0, "opened", 1010, 100, 1.5), report(1, "opened", 1100, 100, 1.4),
              report(0, "status", 1999, 1_000, 1.2, peak=1.5), report(1, "status", 1999, 1_000, 1.1)]:
        m.add(r)
    assert m.advance(2000).rows[-1]["peak_magnitude"] == 1.5
    m.add(report(0, "status", 2999, 4_000, 0.0, unit="sd_ratio"))  # shard 0 now reads a stuck value
    stuck = m.advance(3000).rows[-1]
    assert (stuck["unit"], stuck["peak_magnitude"]) == ("sd_ratio", 0.0)
    m.add(report(1, "status", 3999, 9_000, 1.0))  # shard 1 has seen more values since: sd again
    back = m.advance(4000).rows[-1]
    assert (back["unit"], back["peak_magnitude"]) == ("sd", 1.5), back


def _random_reports(seed: int, shards: int = 4) -> list[dict[str, Any]]:
    """A random but well-formed stream of shard reports: statuses and escalations of every shard at
    the same grid instants (so the merger applies them in shard order), reading the change in sd or
    sd_ratio and escalating in either; openings and closings at instants of their own."""
    rng = random.Random(seed)
    count = dict.fromkeys(range(shards), 0)
    is_open = dict.fromkeys(range(shards), False)
    out = []
    for step in range(1, 30):
        t = step * 1000 + 500
        for shard in range(shards):
            count[shard] += rng.randint(50, 400)
            unit = rng.choice(["sd", "sd", "sd_ratio"])
            value = rng.choice([0.0, 0.4, 2.5]) if unit == "sd_ratio" else round(rng.uniform(-2, 2), 2)
            peak = value if unit == "sd_ratio" else round(value * rng.uniform(1.0, 1.5), 3)
            if not is_open[shard]:
                if rng.random() < 0.6:
                    out.append(report(shard, "opened", t - 300 + 10 * shard, count[shard], value, unit=unit))
                    is_open[shard] = True
                continue
            roll = rng.random()
            if roll < 0.12:
                out.append(report(shard, "closed", t + 300 + 10 * shard, count[shard], 0.01,
                                  reason="back_to_reference"))
                is_open[shard] = False
            elif roll < 0.35:
                out.append(report(shard, "escalated", t, count[shard], value, unit=unit,
                                  reason=rng.choice(["larger", "kind", "reversal"])))
            else:
                out.append(report(shard, "status", t, count[shard], value, unit=unit, peak=peak))
    return out


def _relabelled(reports: list[dict[str, Any]], mapping: dict[int, int]) -> list[dict[str, Any]]:
    return [{**r, "shard": mapping[r["shard"]], "prediction_id": f"p{mapping[r['shard']]}-{r['count']}"}
            for r in reports]


def _what_rows_say(reports: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    m = merger()
    for r in reports:
        m.add(r)
    out = m.advance(40_000)
    rows = [tuple(r[f] for f in ROW_FIELDS) for r in out.rows]
    events = [(e["event_kind"], e["unit"], e["event_time"]) for e in out.events]
    return rows, sorted(events)


def test_rows_do_not_depend_on_which_shard_is_which() -> None:
    """Shards report at the same instants, so the merger applies their reports in shard order: the
    rows (unit, magnitude, peak, escalations, ...) and the events' kinds and units must not depend on
    that order, i.e. on how shards are numbered. Before, a row whose unit flipped and flipped back
    within one bucket restarted its peak, and a tie kept whichever unit the previous report left."""
    for seed in range(40):
        reports = _random_reports(seed)
        want = _what_rows_say(reports)
        for perm_seed in range(3):
            labels = list(range(4))
            random.Random(1000 * seed + perm_seed).shuffle(labels)
            got = _what_rows_say(_relabelled(reports, dict(enumerate(labels))))
            assert got == want, (seed, labels)


def test_a_checkpoint_from_before_counts_by_unit_restores() -> None:
    """A merger pickled before escalations were counted by unit and peaks kept per unit (its
    episodes and shard parts lack those fields) restores and goes on: its escalations read as in
    the unit the episode opened in, its peak as in the row's unit."""
    m = merger()
    for shard in range(2):
        m.add(report(shard, "opened", 1010 + shard, 100, 0.9, peak=1.2))
    m.add(report(0, "escalated", 1500, 900, 1.6, reason="larger"))
    m.advance(2000)
    episode = next(iter(m.open.values()))
    for name in ("by_unit", "peak_by_unit"):
        del episode.__dict__[name]
    for part in episode.parts.values():
        del part.__dict__["by_unit"]
    restored: EpisodeMerger = pickle.loads(pickle.dumps(m))
    restored.add(report(1, "escalated", 2500, 950, 1.5, reason="larger"))  # that same change
    restored.add(report(1, "escalated", 2600, 990, 2.9, unit="sd_ratio", reason="kind"))  # news
    out = restored.advance(3000)
    assert [(e["event_kind"], e["reason"], e["unit"]) for e in out.events] == [
        ("escalated", "kind", "sd_ratio")]
    assert (out.rows[-1]["escalations"], out.rows[-1]["peak_magnitude"]) == (2, 1.6)


def test_a_row_keeps_its_unit_until_another_holds_a_clear_majority() -> None:
    """Two shards of four read a location shift, two a spread, and their weights (values seen in
    the episode) overtake each other by a few values from one status to the next. Before, the row
    took whichever unit weighed more at the moment and changed unit with every bucket, no event
    telling why. It keeps the unit it showed until another holds a clear majority (more than 1.5
    times the shown unit's weight): here when shard 0 closes (2 shards' weight against 1's)."""
    m = merger()
    for shard in range(4):
        m.add(report(shard, "opened", 1010 + shard, 0, 1.0))
    for step in range(1, 7):  # shards 2 and 3 read the spread, one step ahead then one behind
        lead = 10 if step % 2 else -10
        t = 1000 * step + 1500
        m.add(report(0, "status", t, 1000 * step, 1.0))
        m.add(report(1, "status", t, 1000 * step, 1.0))
        m.add(report(2, "status", t, 1000 * step + lead, 1.8, unit="sd_ratio"))
        m.add(report(3, "status", t, 1000 * step + lead, 1.8, unit="sd_ratio"))
    rows = m.advance(8000).rows
    assert [r["unit"] for r in rows] == ["sd"] * 7, [(r["version"], r["unit"]) for r in rows]
    assert rows[-1]["magnitude"] == 1.0
    m.add(report(0, "closed", 8100, 7000, 0.0, reason="back_to_reference"))
    m.add(report(1, "status", 8500, 7000, 1.0))
    row = m.advance(9000).rows[-1]
    assert (row["status"], row["unit"], round(row["magnitude"], 9)) == ("open", "sd_ratio", 1.8), row
