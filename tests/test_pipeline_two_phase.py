"""Drift episodes and the retrain policy end to end, through the in-process pipeline.

The issue-12 two-phase scenario: a moderate shift on some features at 1/3 of the run, a larger
shift on other features at 2/3, both lasting, no retrain in between. Expected: exactly one episode
per shifted feature (opened after its own shift), none on clean features, exactly two data-drift
triggers (one per change: a lasting shift does not trigger again, the second change re-arms the
family although the first condition never cleared). And a stationary stream opens no episode,
however it is batched.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import orjson
import pytest

from driftline.config import Settings
from driftline.demo.training import training_profiles
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import CovariateDrift, LabelDelay, ModelSpec

START = 1_767_225_600_000
DURATION_S = 3600
PHASE_1_S, PHASE_2_S = DURATION_S // 3, 2 * DURATION_S // 3
MODERATE = ("x1", "x4")  # 0.5 sd at 1/3
LARGER = ("x7", "x10")  # 1.5 sd at 2/3
WINDOW_S = 300
# Events a second. At 10/s every episode of seeds 23, 5 and 11 opens within 45 s of its shift with a
# magnitude within 0.05 of the simulator's (the tests allow 120 s and 0.15); 20/s cost twice the CPU
# (generating the stream alone was ~40 % of a run) and checked nothing more.
RATE = 10


def _settings() -> Settings:
    return Settings(
        windows={"sizes_s": [WINDOW_S], "allowed_lateness_s": 30, "metrics_interval_s": 300},
        join={"label_horizon_s": 600},
        # every drifted window may fire; the cooldown (10 min) is shorter than the gap between
        # the two changes (20 min), so only the policy's episode rule can keep it to two triggers
        triggers={"drift_k": 1, "drift_n": 1, "cooldown_s": 600},
        topics={"partitions": 2},
    )


def _scenario(drift: bool = True, shifts: list[CovariateDrift] | None = None, seed: int = 23) -> Scenario:
    if shifts is None:
        shifts = [CovariateDrift(feature=f, at_s=PHASE_1_S, magnitude=0.5) for f in MODERATE] + [
            CovariateDrift(feature=f, at_s=PHASE_2_S, magnitude=1.5) for f in LARGER
        ]
    return Scenario(
        seed=seed,
        start=START,
        duration_s=DURATION_S,
        rate=RATE,
        models=[ModelSpec(model_id="m", n_numeric=12, n_categorical=2, accuracy=0.9,
                          covariate_drift=shifts if drift else [])],
        label_delay=LabelDelay(median_s=30, max_s=300),
    )


@functools.cache  # the same training profiles for every run of a scenario seed (~2 s each)
def _profiles(scenario_seed: int = 23) -> tuple[bytes, ...]:
    settings = _settings()
    # univariate episodes only: a reconstruction episode per phase would be a third kind of
    # episode these counts do not expect (tests/test_pipeline_multivariate.py covers those)
    made = training_profiles(_scenario(seed=scenario_seed), settings.drift.bins, settings.drift.top_k,
                             effective_from_ms=0, multivariate=False)
    return tuple(p.model_dump_json().encode() for p in made)


def _run(stream: list[RawRecord], sizes: list[int], seed: int = 0,
         scenario_seed: int = 23) -> InProcessPipeline:
    pipeline = InProcessPipeline(_settings(), profiles=_profiles(scenario_seed))
    rng = random.Random(seed)
    i = 0
    while i < len(stream):
        n = rng.choice(sizes)
        pipeline.feed(stream[i : i + n])
        i += n
    return pipeline


def latest_episodes(rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """drift_episodes as FINAL reads it: the row with the highest version per episode."""
    latest: dict[str, dict[str, Any]] = {}
    for r in rows.get("drift_episodes", []):
        if r["episode_id"] not in latest or r["version"] > latest[r["episode_id"]]["version"]:
            latest[r["episode_id"]] = r
    return sorted(latest.values(), key=lambda r: (r["opened_at"], r["feature"]))


@pytest.fixture(scope="module")
def two_phase() -> list[RawRecord]:
    return logged_records(generate(_scenario()), _settings())


@pytest.fixture(scope="module")
def baseline(two_phase: list[RawRecord]) -> InProcessPipeline:
    return _run(two_phase, [2000])


def test_two_phases_one_episode_per_shifted_feature_and_two_triggers(baseline: InProcessPipeline) -> None:
    episodes = [e for e in latest_episodes(baseline.rows) if e["source"] == "features"]
    assert sorted(e["feature"] for e in episodes) == sorted(MODERATE + LARGER), episodes
    phase_1, phase_2 = START + PHASE_1_S * 1000, START + PHASE_2_S * 1000
    for e in episodes:
        at = phase_1 if e["feature"] in MODERATE else phase_2
        assert at <= e["opened_at"] < at + 120_000, e
        assert e["status"] == "open" and e["escalations"] == 0, e  # both shifts last
        size = 0.5 if e["feature"] in MODERATE else 1.5
        assert abs(e["magnitude"] - size) < 0.15, e
    drift = [orjson.loads(t) for t in baseline.triggers if orjson.loads(t)["reason"] == "drift"]
    assert len(drift) == 2, [(t["triggered_at"] - START) // 1000 for t in drift]
    first, second = drift
    assert phase_1 < first["triggered_at"] <= phase_1 + 2 * WINDOW_S * 1000
    assert phase_2 < second["triggered_at"] <= phase_2 + 2 * WINDOW_S * 1000
    ids = {e["feature"]: e["episode_id"] for e in episodes}
    assert set(first["evidence"]["episodes"]) == {ids[f] for f in MODERATE}
    # the second trigger names every open episode; the events that re-armed it are phase 2's
    assert set(second["evidence"]["episodes"]) == set(ids.values())
    assert {e["feature"] for e in second["evidence"]["episode_events"]} == set(LARGER)


def _drift_triggers(pipeline: InProcessPipeline) -> list[dict[str, Any]]:
    return [t for t in map(orjson.loads, pipeline.triggers) if t["reason"] == "drift"]


@pytest.mark.parametrize("scenario_seed", [5, 11])
def test_two_phases_give_two_triggers_in_other_seeds(scenario_seed: int) -> None:
    stream = logged_records(generate(_scenario(seed=scenario_seed)), _settings())
    pipeline = _run(stream, [2000], scenario_seed=scenario_seed)
    episodes = [e for e in latest_episodes(pipeline.rows) if e["source"] == "features"]
    assert sorted(e["feature"] for e in episodes) == sorted(MODERATE + LARGER), episodes
    drift = _drift_triggers(pipeline)
    assert len(drift) == 2, [(t["triggered_at"] - START) // 1000 for t in drift]
    assert START + PHASE_1_S * 1000 < drift[0]["triggered_at"] <= START + (PHASE_1_S + 2 * WINDOW_S) * 1000
    assert START + PHASE_2_S * 1000 < drift[1]["triggered_at"] <= START + (PHASE_2_S + 2 * WINDOW_S) * 1000


def test_a_feature_of_the_first_change_opening_a_window_late_does_not_trigger_again() -> None:
    # x4's part of the first change starts 330 s after x1's: x1 fires the trigger at the end of the
    # window it opened in, x4 opens in the next window, within the grace period (drift_n windows);
    # without it the cooldown (600 s) would only delay a second trigger for the same change.
    shifts = [CovariateDrift(feature="x1", at_s=PHASE_1_S, magnitude=0.5),
              CovariateDrift(feature="x4", at_s=PHASE_1_S + 330, magnitude=0.5)] + [
        CovariateDrift(feature=f, at_s=PHASE_2_S, magnitude=1.5) for f in LARGER]
    stream = logged_records(generate(_scenario(shifts=shifts)), _settings())
    pipeline = _run(stream, [2000])
    episodes = {e["feature"]: e for e in latest_episodes(pipeline.rows) if e["source"] == "features"}
    assert sorted(episodes) == sorted(MODERATE + LARGER), episodes
    first_window_end = START + (PHASE_1_S + WINDOW_S) * 1000
    assert episodes["x1"]["opened_at"] < first_window_end <= episodes["x4"]["opened_at"], episodes
    assert episodes["x4"]["opened_at"] < first_window_end + WINDOW_S * 1000, episodes
    drift = _drift_triggers(pipeline)
    assert [(t["triggered_at"] - START) // 1000 for t in drift] == [PHASE_1_S + WINDOW_S,
                                                                     PHASE_2_S + WINDOW_S]
    # the second trigger was armed by phase 2's openings only, and names x4 among the open episodes
    assert {e["feature"] for e in drift[1]["evidence"]["episode_events"]} == set(LARGER)
    assert episodes["x4"]["episode_id"] in drift[1]["evidence"]["episodes"]


def test_two_phases_do_not_depend_on_batching(
    two_phase: list[RawRecord], baseline: InProcessPipeline
) -> None:
    other = _run(two_phase, [1, 13, 500, 3001], seed=4)
    for table in ("drift_episodes", "drift_alerts"):
        assert sorted(map(orjson.dumps, other.rows[table])) == sorted(map(orjson.dumps, baseline.rows[table]))
    assert sorted(other.triggers) == sorted(baseline.triggers)


def test_stationary_stream_opens_no_episode_under_random_batching() -> None:
    # One random batching: that rows do not depend on batching at all is
    # test_two_phases_do_not_depend_on_batching's (a second batching here cost a whole run)
    stream = logged_records(generate(_scenario(drift=False)), _settings())
    pipeline = _run(stream, [1, 7, 300, 4999], seed=1)
    assert pipeline.rows["model_drift"]
    episodes = [e for e in latest_episodes(pipeline.rows) if e["source"] == "features"]
    assert episodes == [], episodes
    assert not [t for t in pipeline.triggers if orjson.loads(t)["reason"] == "drift"]


def test_a_larger_change_inside_a_lasting_shift_escalates_and_triggers_again() -> None:
    # x1 moves by 0.5 sd at 1/3 and by another 1.0 sd at 2/3 (the simulator adds them up)
    shifts = [CovariateDrift(feature="x1", at_s=PHASE_1_S, magnitude=0.5),
              CovariateDrift(feature="x1", at_s=PHASE_2_S, magnitude=1.0)]
    stream = logged_records(generate(_scenario(shifts=shifts)), _settings())
    pipeline = _run(stream, [2000])
    episodes = [e for e in latest_episodes(pipeline.rows) if e["source"] == "features"]
    assert [e["feature"] for e in episodes] == ["x1"], episodes
    episode = episodes[0]
    phase_2 = START + PHASE_2_S * 1000
    # one escalation across both shards, soon after the further change
    assert episode["escalations"] == 1 and episode["escalation_reason"] == "larger", episode
    assert phase_2 <= episode["escalated_at"] < phase_2 + 300_000, episode
    assert abs(episode["magnitude"] - 1.5) < 0.15 and episode["status"] == "open", episode
    events = [(a["event_kind"], a["feature"]) for a in pipeline.rows["drift_alerts"]
              if a["source"] == "features"]
    assert events == [("opened", "x1"), ("escalated", "x1")]
    drift = [orjson.loads(t) for t in pipeline.triggers if orjson.loads(t)["reason"] == "drift"]
    assert len(drift) == 2 and drift[1]["triggered_at"] > phase_2, drift
    assert [e["kind"] for e in drift[1]["evidence"]["episode_events"]] == ["escalated"]


def test_with_the_multivariate_section_still_two_triggers_and_one_reconstruction_episode(
    two_phase: list[RawRecord],
) -> None:
    """The profile's multivariate section adds a reconstruction detector: it may open one episode
    of its own (the larger second shift moves events off the principal subspace) but must not add
    triggers to the two the changes deserve."""
    settings = _settings()
    profiles = tuple(p.model_dump_json().encode() for p in training_profiles(
        _scenario(), settings.drift.bins, settings.drift.top_k, effective_from_ms=0))
    pipeline = InProcessPipeline(settings, profiles=profiles)
    for i in range(0, len(two_phase), 2000):
        pipeline.feed(two_phase[i : i + 2000])
    episodes = [e for e in latest_episodes(pipeline.rows) if e["source"] == "features"]
    univariate = sorted(e["feature"] for e in episodes if e["feature"] != "__reconstruction__")
    assert univariate == sorted(MODERATE + LARGER), episodes
    assert sum(e["feature"] == "__reconstruction__" for e in episodes) <= 1, episodes
    drift = _drift_triggers(pipeline)
    assert len(drift) == 2, [(t["triggered_at"] - START) // 1000 for t in drift]
