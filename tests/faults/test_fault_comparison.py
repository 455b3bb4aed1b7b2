"""Champion/challenger comparison through the real worker, clean and SIGKILLed.

A champion and its challenger score the same requests (the simulator's ids ``<request>-v<version>``,
paired with ``comparison.request_separator``); the champion loses its concept half-way. The worker
(role all, embedded broker and ClickHouse) must decide the challenger worse, then better (two
``comparison`` triggers), and write the very same version_comparison and retrain_triggers rows
when it is SIGKILLed twice mid-run and restarted.
"""

from __future__ import annotations

import asyncio
import json
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
    kill_after_progress,
    run_env,
    run_to_idle,
    start_watched,
    workers,
)

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.simulate import Scenario
from driftline.simulate.output import produce
from driftline.simulate.scenario import ConceptDrift, LabelDelay, ModelSpec

pytestmark = pytest.mark.integration

DURATION_S = 480
TABLES = ("version_comparison", "retrain_triggers")
EXTRA = {
    "DRIFTLINE_COMPARISON_PAIRS": json.dumps(
        [{"model_id": "m", "champion": "1", "challenger": "2", "mode": "shadow"}]),
    "DRIFTLINE_COMPARISON_REQUEST_SEPARATOR": "-v",
    "DRIFTLINE_COMPARISON_TRIGGERS": "true",
}


@pytest.fixture(scope="module")
def shadow_stream(proxied_broker: ProxiedBroker) -> Stream:
    settings = Settings(
        kafka={"bootstrap_servers": proxied_broker.bootstrap_servers},
        topics={"predictions": "comparison.predictions", "labels": "comparison.labels", "partitions": 3},
    )
    ensure_topics(settings)
    start = (int(time.time()) - DURATION_S - 600) // 60 * 60 * 1000
    scenario = Scenario(
        seed=31,
        start=start,
        duration_s=DURATION_S,
        rate=15,
        models=[ModelSpec(model_id="m", n_numeric=4, n_categorical=1, accuracy=0.9, challenger=True,
                          challenger_accuracy=0.8,
                          concept_drift=ConceptDrift(at_s=DURATION_S / 2, magnitude=0.5))],
        label_delay=LabelDelay(median_s=10, max_s=60),
    )
    counts = asyncio.run(produce(scenario, settings))
    return Stream(proxied_broker.bootstrap_servers, settings.topics.predictions, settings.topics.labels,
                  settings.topics.partitions, counts)


@pytest.fixture(scope="module")
def comparison_tables(shadow_stream: Stream, fault_root: Path) -> dict[str, list[list[str]]]:
    run = "comparison_clean"
    with workers() as started, RssSampler() as rss:
        run_to_idle(run_env(shadow_stream, run, fault_root, **EXTRA), fault_root / f"{run}.log", started,
                    fault_root / run / "home", rss)
    return dump_tables(fault_root, run, TABLES)


@pytest.mark.timeout(900)  # a worker run on a loaded machine
def test_comparison_through_the_worker(comparison_tables: dict[str, list[list[str]]]) -> None:
    # columns in table order: version_comparison ... segment (4), paired (8), n_unpaired (12),
    # decision (22), decided_now (23)
    overall = [row for row in comparison_tables["version_comparison"] if row[4] == ""]
    assert len(overall) >= 6, comparison_tables["version_comparison"]
    assert all(row[8] == "1" for row in overall), overall  # paired by request id
    decided = [row[22] for row in overall if row[23] == "1"]
    assert decided == ["challenger_worse", "challenger_better"], overall
    reasons = [row[4] for row in comparison_tables["retrain_triggers"]]
    assert reasons.count("comparison") == 2, comparison_tables["retrain_triggers"]


@pytest.mark.timeout(900)
def test_comparison_survives_sigkill(
    shadow_stream: Stream, fault_root: Path, comparison_tables: dict[str, list[list[str]]]
) -> None:
    rng = random.Random(11)
    run = "comparison_kill"
    env = run_env(shadow_stream, run, fault_root, **EXTRA)
    log, home = fault_root / f"{run}.log", fault_root / run / "home"
    n = shadow_stream.counts["predictions"]
    with workers() as started, RssSampler() as rss:
        for _ in range(2):
            worker = start_watched(started, rss, env, log, home=home, idle=None)
            kill_after_progress(worker, rng.uniform(0.2, 0.45) * n)
        run_to_idle(env, log, started, home, rss)
    assert_same_tables(dump_tables(fault_root, run, TABLES), comparison_tables)
