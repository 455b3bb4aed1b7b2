"""RetrainPolicy: K-of-N drift with hysteresis and cooldown, performance and alarm paths, ids."""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest

from driftline.config import TriggerSettings
from driftline.operators.triggers import EpisodeNote, RetrainPolicy, trigger_id
from driftline.schemas.events import RetrainTrigger, TriggerReason

H = 3_600_000  # one-hour windows
M = 60_000


def feed(policy: RetrainPolicy, pattern: str, model: str = "m", version: str = "1",
         first: int = 0) -> list[RetrainTrigger]:
    """Feed hourly windows: 'D' drifted, '.' clean, ' ' no window (no traffic)."""
    out = []
    for i, c in enumerate(pattern):
        if c == " ":
            continue
        t = policy.on_drift_window(model, version, (first + i) * H, (first + i + 1) * H, c == "D",
                                   {"drifted_features": ["x"] if c == "D" else []})
        if t is not None:
            out.append(t)
    return out


def policy(**cfg: Any) -> RetrainPolicy:
    base: dict[str, Any] = {"drift_k": 3, "drift_n": 4, "cooldown_s": 0}
    base.update(cfg)
    return RetrainPolicy(TriggerSettings(**base), config_hash="cfg123")


def test_sustained_drift_fires_exactly_once() -> None:
    triggers = feed(policy(), "..DDDDDDDDDDDD")
    assert len(triggers) == 1
    t = triggers[0]
    assert t.reason == TriggerReason.DRIFT and t.model_id == "m" and t.model_version == "1"
    # fires at the end of the third drifted window; evidence window starts at the first drifted one
    assert (t.window_start, t.window_end, t.triggered_at) == (2 * H, 5 * H, 5 * H)
    assert t.config_hash == "cfg123" and t.evidence["config_hash"] == "cfg123"
    assert t.evidence["thresholds"]["drift_k"] == 3 and t.evidence["drifted_windows"] == 3
    assert [w["drifted"] for w in t.evidence["windows"]] == [False, True, True, True]
    assert t.evidence["windows"][-1]["evidence"] == {"drifted_features": ["x"]}
    assert t.trigger_id == trigger_id("m", "1", "drift", 2 * H, 5 * H)


def test_blips_never_fire() -> None:
    assert feed(policy(), "...D....D...D.....DD....D") == []
    assert feed(policy(drift_k=2, drift_n=2), "D.D.D.D.D.D") == []


def test_missing_windows_count_as_clean() -> None:
    # three drifted windows, but spread over more than N hours of the window grid
    assert feed(policy(), "D  D  D  D") == []
    assert len(feed(policy(), "DD D")) == 1  # within the last 4 windows of the grid


def test_k_must_not_exceed_n_and_k1_fires_on_one_window() -> None:
    with pytest.raises(ValueError, match="drift_k"):
        policy(drift_k=5, drift_n=4)
    assert len(feed(policy(drift_k=1, drift_n=1), "..D..")) == 1


def test_hysteresis_requires_the_condition_to_clear_before_rearming() -> None:
    # fires, stays disarmed while 3 of 4 hold, clears (1 of 4), fires again
    triggers = feed(policy(), "DDDD.DDD...DDD")
    assert [t.triggered_at // H for t in triggers] == [3, 14]
    # dipping to exactly K-1 of N clears the condition
    assert len(feed(policy(), "DDD.D..DDD")) == 2


def test_cooldown_holds_and_fires_after_it_if_the_condition_rearmed() -> None:
    p = policy(cooldown_s=10 * 3600)
    # fires at 3h; clears; holds again at 10h < 3h + 10h: suppressed, still armed; fires at 13h
    triggers = feed(p, "DDD....DDDDDDD")
    assert [t.triggered_at // H for t in triggers] == [3, 13]
    assert triggers[1].window_start == 9 * H  # the oldest drifted window among the last N


def test_models_and_versions_are_independent() -> None:
    p = policy()
    assert len(feed(p, "DD", model="a")) == 0
    assert len(feed(p, "DD", model="b")) == 0
    assert len(feed(p, "D", model="a", first=2)) == 1
    assert len(feed(p, "DDD", model="a", version="2")) == 1


def test_replayed_or_out_of_order_windows_are_ignored() -> None:
    p = policy()
    assert feed(p, "DDD") != []
    assert feed(p, "DDD") == []  # the same windows again
    p2 = policy()
    feed(p2, "DD")
    assert p2.on_drift_window("m", "1", 0, H, True, {}) is None
    assert len(feed(p2, "D", first=2)) == 1


def perf(p: RetrainPolicy, points: list[tuple[int, float, bool]], reference: float = 0.9,
         higher_is_better: bool = True) -> list[RetrainTrigger]:
    out = []
    for minute, value, alarm in points:
        out.extend(p.on_performance("m", "1", minute * M, value, reference, higher_is_better, alarm,
                                    {"metric": "accuracy"}))
    return out


def test_performance_drop_must_persist_for_the_duration() -> None:
    p = policy(performance_drop=0.1, performance_duration_s=30 * 60, alarm_persist_s=3600)
    # degraded at 0..25 then recovers: never 30 minutes continuously
    pts = [(m, 0.7, False) for m in range(0, 30, 5)[:-1]] + [(25, 0.85, False)]
    assert perf(p, pts) == []
    # degraded from 30 on: fires at 60 (30 minutes), once
    triggers = perf(p, [(m, 0.75, False) for m in range(30, 120, 5)])
    assert len(triggers) == 1
    t = triggers[0]
    assert t.reason == TriggerReason.PERFORMANCE
    assert (t.window_start, t.window_end) == (30 * M, 60 * M)
    assert t.evidence["metric"]["value"] == 0.75 and t.evidence["metric"]["reference"] == 0.9
    assert t.evidence["thresholds"]["performance_drop"] == 0.1
    assert t.evidence["observation"] == {"metric": "accuracy"}
    assert t.trigger_id == trigger_id("m", "1", "performance", 30 * M, 60 * M)


def test_performance_lower_is_better_hysteresis_and_cooldown() -> None:
    p = policy(performance_drop=1.0, performance_duration_s=600, alarm_persist_s=3600, cooldown_s=3600)
    bad, good = 3.5, 2.0  # MAE against a reference of 2.0
    pts = [(0, bad, False), (10, bad, False), (20, bad, False), (30, good, False),  # fire at 10, clear
           (40, bad, False), (50, bad, False),  # condition again at 50 but cooldown until 70
           (60, bad, False), (70, bad, False), (80, bad, False)]  # fires at 70, once
    triggers = perf(p, pts, reference=2.0, higher_is_better=False)
    assert [t.triggered_at // M for t in triggers] == [10, 70]
    assert triggers[1].window_start == 40 * M


def test_alarm_persistence_definition() -> None:
    p = policy(performance_duration_s=10**6, alarm_persist_s=15 * 60)
    # a single alarm never fires; a second one 20 minutes later (gap > 15) starts a new episode
    assert perf(p, [(0, 0.9, True), (10, 0.9, False), (20, 0.9, True)]) == []
    # alarms at 20, 30, 35: span 15 minutes with gaps <= 15 -> fires at 35
    triggers = perf(p, [(30, 0.9, True), (35, 0.9, True), (40, 0.9, True)])
    assert len(triggers) == 1
    t = triggers[0]
    assert t.reason == TriggerReason.CONCEPT_DRIFT
    assert (t.window_start, t.window_end) == (20 * M, 35 * M)
    assert t.evidence["alarms"] == {"first": 20 * M, "last": 35 * M, "count": 3}
    # alarms keep coming: no second trigger until a quiet gap re-arms the family
    assert perf(p, [(45, 0.9, True), (55, 0.9, True)]) == []
    assert perf(p, [(80, 0.9, False), (90, 0.9, True), (100, 0.9, True), (105, 0.9, True)]) != []


def test_alarm_persist_zero_means_a_single_alarm_fires() -> None:
    p = policy(performance_duration_s=10**6, alarm_persist_s=0)
    pts = [(0, 0.9, False), (5, 0.9, True), (6, 0.9, True), (7, 0.9, False), (8, 0.9, True)]
    assert len(perf(p, pts)) == 2


def test_families_are_independent_of_clock_interleaving() -> None:
    cfg = {"performance_drop": 0.1, "performance_duration_s": 600, "alarm_persist_s": 600, "cooldown_s": 7200}
    drift = [(i * H, (i + 1) * H, c == "D") for i, c in enumerate("..DDDD....DDDD..")]
    perf_pts = [(i * 10 * M, 0.7 if 3 <= i < 30 else 0.9, i in (40, 41, 42)) for i in range(60)]
    results = []
    for seed in range(5):
        p = policy(**cfg)
        events: list[tuple[str, Any]] = [("d", w) for w in drift] + [("p", x) for x in perf_pts]
        random.Random(seed).shuffle(events)
        # keep each family in its own order, interleave the two arbitrarily
        d_iter, p_iter = iter(drift), iter(perf_pts)
        out = []
        for kind, _ in events:
            if kind == "d":
                s, e, dr = next(d_iter)
                t = p.on_drift_window("m", "1", s, e, dr, {})
                fired = [] if t is None else [t]
            else:
                tm, v, al = next(p_iter)
                fired = p.on_performance("m", "1", tm, v, 0.9, True, al, {})
            out.extend(f.model_dump_json() for f in fired)
        results.append(sorted(out))
    assert all(r == results[0] for r in results)
    assert len(results[0]) >= 3


def test_deterministic_and_picklable_mid_stream() -> None:
    pattern = "..DD.DDD.....DDDD...D.DDDD"
    whole = [t.model_dump_json() for t in feed(policy(cooldown_s=4 * 3600), pattern)]
    p = policy(cooldown_s=4 * 3600)
    first = feed(p, pattern[:9])
    restored: RetrainPolicy = pickle.loads(pickle.dumps(p))
    rest = feed(restored, pattern[9:], first=9)
    assert [t.model_dump_json() for t in first + rest] == whole
    assert len({t.trigger_id for t in first + rest}) == len(whole) >= 2


def note(episode: str, kind: str, hour: int, feature: str = "x", magnitude: float = 0.5) -> EpisodeNote:
    return EpisodeNote(episode, feature, kind, hour * H + 1, magnitude, "sd")


def feed_episodes(p: RetrainPolicy, n_windows: int, notes: list[EpisodeNote],
                  drifted: bool = False) -> list[RetrainTrigger]:
    """Hourly windows 0..n-1 whose batch verdict is `drifted`, with the episode events given."""
    out = []
    for i in range(n_windows):
        here = [n for n in notes if i * H <= n.event_time < (i + 1) * H]
        t = p.on_drift_window("m", "1", i * H, (i + 1) * H, drifted, {}, here)
        if t is not None:
            out.append(t)
    return out


def test_a_lasting_episode_fires_once_however_long_it_lasts() -> None:
    # An episode that never closes, with every window drifted by the batch scorer too: one trigger
    # in 2,000 windows, even with no cooldown at all (a storm is impossible by construction).
    triggers = feed_episodes(policy(cooldown_s=0), 2000, [note("e1", "opened", 2)], drifted=True)
    assert len(triggers) == 1
    assert triggers[0].evidence["episodes"] == ["e1"]
    assert triggers[0].evidence["episode_events"][0]["kind"] == "opened"


def test_an_open_episode_counts_as_drift_and_a_closed_one_no_longer() -> None:
    # batch verdicts all clean: the open episode alone makes windows 2.. drifted -> fires at 5h
    notes = [note("e1", "opened", 2), note("e1", "closed", 6)]
    triggers = feed_episodes(policy(), 12, notes)
    assert [t.triggered_at // H for t in triggers] == [5]
    off = RetrainPolicy(TriggerSettings(drift_k=3, drift_n=4, cooldown_s=0), "cfg123",
                        episodes_count_as_drift=False)
    assert feed_episodes(off, 12, notes) == []


def test_escalation_or_new_episode_rearms_without_clearing_and_cooldown_still_holds() -> None:
    notes = [note("e1", "opened", 1), note("e1", "escalated", 20, magnitude=1.5),
             note("e2", "opened", 40, feature="y")]
    triggers = feed_episodes(policy(cooldown_s=0), 60, notes, drifted=True)
    # fires on the first change (K=3 reached at 3h), then at each further change at once
    assert [t.triggered_at // H for t in triggers] == [3, 21, 41]
    assert triggers[1].evidence["episodes"] == ["e1"]
    assert [e["kind"] for e in triggers[1].evidence["episode_events"]] == ["escalated"]
    assert triggers[2].evidence["episodes"] == ["e1", "e2"]
    # with a 30 h cooldown the escalation at 20h waits until 33h; e2 at 40h waits until 63h
    cooled = feed_episodes(policy(cooldown_s=30 * 3600), 70, notes, drifted=True)
    assert [t.triggered_at // H for t in cooled] == [3, 33, 63]


def test_episode_events_before_a_trigger_do_not_rearm_after_it() -> None:
    # three features open episodes one hour apart, all before the trigger: one trigger
    notes = [note("e1", "opened", 0), note("e2", "opened", 1, feature="y"),
             note("e3", "opened", 2, feature="z")]
    triggers = feed_episodes(policy(), 30, notes, drifted=True)
    assert len(triggers) == 1 and triggers[0].evidence["episodes"] == ["e1", "e2", "e3"]


@pytest.mark.parametrize(("k", "n"), [(3, 4), (1, 1)])
def test_stragglers_of_one_change_within_the_grace_period_do_not_trigger_again(k: int, n: int) -> None:
    # One change reaches four features some windows apart: e1 opens at 1h and fires the trigger,
    # e2..e4 open within the grace period (drift_n windows after the trigger) and join that change;
    # e5, opened after it, is a new change and re-arms.
    fired = 1 + k  # window 1..k drifted: fires at the end of window k
    stragglers = [fired + i * n // 3 for i in range(3)]  # from the trigger to the end of the grace
    notes = [note("e1", "opened", 1)] + [note(f"e{i}", "opened", h, feature=f"x{i}")
                                         for i, h in enumerate(stragglers, 2)]
    notes.append(note("e5", "opened", fired + n + 2, feature="y"))
    triggers = feed_episodes(policy(drift_k=k, drift_n=n, cooldown_s=0), 40, notes)
    assert [t.triggered_at // H for t in triggers] == [fired, fired + n + 3], stragglers
    assert triggers[0].evidence["episodes"] == ["e1"]
    # the second trigger names every open episode, and only e5 as what armed it
    assert triggers[1].evidence["episodes"] == ["e1", "e2", "e3", "e4", "e5"]
    assert [e["episode_id"] for e in triggers[1].evidence["episode_events"]] == ["e5"]


def test_performance_and_concept_drift_do_not_block_each_other() -> None:
    p = policy(performance_drop=0.1, performance_duration_s=30 * 60, alarm_persist_s=10 * 60,
               cooldown_s=6 * 3600)
    # alarms from minute 0 on at a healthy accuracy: concept drift fires at 10; then accuracy
    # collapses from 20 on while the alarms go on: performance still fires, 30 minutes later
    pts = [(m, 0.9 if m < 20 else 0.15, True) for m in range(0, 120, 5)]
    triggers = perf(p, pts)
    assert [(t.reason, t.triggered_at // M) for t in triggers] == [
        (TriggerReason.CONCEPT_DRIFT, 10), (TriggerReason.PERFORMANCE, 50)]
    # and the other way round: a long degradation does not block concept drift
    q = policy(performance_drop=0.1, performance_duration_s=10 * 60, alarm_persist_s=10 * 60)
    pts = [(m, 0.5, m >= 30) for m in range(0, 60, 5)]
    assert [(t.reason, t.triggered_at // M) for t in perf(q, pts)] == [
        (TriggerReason.PERFORMANCE, 10), (TriggerReason.CONCEPT_DRIFT, 40)]
    # both conditions reached at the same observation: both fire
    r = policy(performance_drop=0.1, performance_duration_s=0, alarm_persist_s=0)
    assert {t.reason for t in perf(r, [(0, 0.5, True)])} == {TriggerReason.PERFORMANCE,
                                                            TriggerReason.CONCEPT_DRIFT}


def test_a_checkpoint_from_when_both_performance_reasons_shared_one_family_restores() -> None:
    from driftline.operators.triggers import _PerformanceState

    old = _PerformanceState()
    old.__dict__ = {"last_time": 10, "degraded_since": None, "alarm_first": None, "alarm_last": None,
                    "alarm_count": 0, "armed": False, "last_fired": 10}  # the pre-split layout
    restored = pickle.loads(pickle.dumps(old))
    assert (restored.performance.armed, restored.performance.last_fired) == (False, 10)
    assert (restored.concept_drift.armed, restored.concept_drift.last_fired) == (False, 10)
    assert restored.performance is not restored.concept_drift
    assert not hasattr(restored, "armed")
