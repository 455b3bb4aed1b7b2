"""Drift episodes through the real worker: the issue-12 two-phase scenario, clean and SIGKILLed.

A moderate shift on two features at 1/3 of the stream, a larger one on two others at 2/3, both
lasting, no retrain in between. The worker (role all, embedded broker and ClickHouse) must write
exactly one drift episode per shifted feature and none for clean ones, exactly two data-drift
triggers, and the very same drift_episodes / drift_alerts / retrain_triggers rows when it is
SIGKILLed mid-run and restarted.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from harness import (
    ProxiedBroker,
    RssSampler,
    Stream,
    assert_same_tables,
    dump_tables,
    run_env,
    run_to_idle,
    start_watched,
    workers,
)

from driftline.config import Settings
from driftline.demo.training import training_profiles
from driftline.kafka.admin import ensure_topics
from driftline.simulate import Scenario
from driftline.simulate.output import produce
from driftline.simulate.scenario import CovariateDrift, LabelDelay, ModelSpec

pytestmark = pytest.mark.integration

DURATION_S = 600
MODERATE = ("x1", "x3")  # 0.5 sd at 1/3
LARGER = ("x5", "x6")  # 1.5 sd at 2/3
TABLES = ("drift_episodes", "drift_alerts", "retrain_triggers")
# Every drifted minute may fire; 3 minutes of cooldown, shorter than the 200 s between the
# changes and than the run after them, so only the episode rule keeps a lasting shift from
# triggering again once the cooldown is over.
EXTRA = {"DRIFTLINE_TRIGGERS_COOLDOWN_S": "180", "DRIFTLINE_TRIGGERS_DRIFT_K": "1",
         "DRIFTLINE_TRIGGERS_DRIFT_N": "1"}


@pytest.fixture(scope="module")
def two_phase_stream(proxied_broker: ProxiedBroker) -> Stream:
    settings = Settings(
        kafka={"bootstrap_servers": proxied_broker.bootstrap_servers},
        topics={"predictions": "episodes.predictions", "labels": "episodes.labels", "partitions": 3},
    )
    ensure_topics(settings)
    start = (int(time.time()) - DURATION_S - 600) // 60 * 60 * 1000
    shifts = [CovariateDrift(feature=f, at_s=DURATION_S / 3, magnitude=0.5) for f in MODERATE] + [
        CovariateDrift(feature=f, at_s=2 * DURATION_S / 3, magnitude=1.5) for f in LARGER
    ]
    scenario = Scenario(
        seed=29,
        start=start,
        duration_s=DURATION_S,
        rate=20,
        models=[ModelSpec(model_id="m", n_numeric=8, n_categorical=2, accuracy=0.9, covariate_drift=shifts)],
        label_delay=LabelDelay(median_s=20, max_s=240),
    )
    counts = asyncio.run(produce(scenario, settings))
    drift = settings.drift
    profiles = tuple(p.model_dump_json().encode()
                     for p in training_profiles(scenario, drift.bins, drift.top_k, effective_from_ms=0))
    return Stream(proxied_broker.bootstrap_servers, settings.topics.predictions, settings.topics.labels,
                  settings.topics.partitions, counts, profiles)


@pytest.fixture(scope="module")
def two_phase_tables(two_phase_stream: Stream, fault_root: Path) -> dict[str, list[list[str]]]:
    run = "episodes_clean"
    with workers() as started, RssSampler() as rss:
        run_to_idle(run_env(two_phase_stream, run, fault_root, **EXTRA), fault_root / f"{run}.log", started,
                    fault_root / run / "home", rss)
    return dump_tables(fault_root, run, TABLES)


@pytest.mark.timeout(900)  # a worker run on a loaded machine
def test_two_phases_through_the_worker(two_phase_tables: dict[str, list[list[str]]]) -> None:
    # columns in table order: drift_episodes ... feature (4), source (6), status (7), escalations
    episodes = [row for row in two_phase_tables["drift_episodes"] if row[6] == "features"]
    assert sorted(row[4] for row in episodes) == sorted(MODERATE + LARGER), episodes
    assert all(row[7] == "open" for row in episodes), episodes  # both shifts last
    events = [row for row in two_phase_tables["drift_alerts"] if row[6] == "features"]
    assert len(events) == len(MODERATE + LARGER), events  # one opening each, no alarm flood
    reasons = [row[4] for row in two_phase_tables["retrain_triggers"]]
    assert reasons.count("drift") == 2, two_phase_tables["retrain_triggers"]


@pytest.mark.timeout(900)
def test_two_phases_survive_sigkill(
    two_phase_stream: Stream, fault_root: Path, two_phase_tables: dict[str, list[list[str]]]
) -> None:
    rng = random.Random(7)
    run = "episodes_kill"
    env = run_env(two_phase_stream, run, fault_root, **EXTRA)
    log, home = fault_root / f"{run}.log", fault_root / run / "home"
    n = two_phase_stream.counts["predictions"]
    with workers() as started, RssSampler() as rss:
        for _ in range(2):
            worker = start_watched(started, rss, env, log, home=home, idle=None)
            records = rng.uniform(0.2, 0.45) * n
            t0 = time.monotonic()
            while worker.predictions_in() < records and time.monotonic() - t0 < 90:
                assert worker.alive(), worker.tail()
                time.sleep(0.05)
            worker.kill()
        run_to_idle(env, log, started, home, rss)
    assert_same_tables(dump_tables(fault_root, run, TABLES), two_phase_tables)
