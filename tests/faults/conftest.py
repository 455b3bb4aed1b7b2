"""Fixtures of the fault-injection suite: one proxied broker, one recorded stream, one clean run.

Every fault test compares its tables with the same clean run (role ``all``, no faults), so the
clean run is paid once per session. The broker is a dedicated Tansu behind a TCP proxy (it
advertises the proxy's address), so the network-cut test can sever every connection.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import (
    INTERNAL,
    ProxiedBroker,
    RssSampler,
    Stream,
    dump_tables,
    run_env,
    run_to_idle,
    start_proxied_broker,
    workers,
)

from driftline.config import Settings
from driftline.demo.training import training_profiles
from driftline.kafka.admin import ensure_topics
from driftline.simulate import Scenario
from driftline.simulate.output import produce
from driftline.simulate.scenario import ConceptDrift, CovariateDrift, LabelDelay, ModelSpec

SOAK = os.environ.get("DRIFTLINE_SOAK") == "1"


@pytest.fixture(scope="session")
def fault_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def proxied_broker(fault_root: Path) -> Iterator[ProxiedBroker]:
    broker = start_proxied_broker(fault_root / "broker.log")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def fault_stream(proxied_broker: ProxiedBroker) -> Stream:
    """A recorded stream with drift, late labels and malformed messages (longer in soak runs)."""
    settings = Settings(
        kafka={"bootstrap_servers": proxied_broker.bootstrap_servers},
        topics={
            "predictions": "fault.predictions",
            "labels": "fault.labels",
            "partitions": 3,
            **{name: f"fault.{name}" for name in INTERNAL},
        },
    )
    ensure_topics(settings)
    duration = 1500 if SOAK else 420
    # Recent (event tables have a TTL) and on a minute boundary, so the same windows close every run.
    start = (int(time.time()) - duration - 600) // 60 * 60 * 1000
    scenario = Scenario(
        seed=23,
        start=start,
        duration_s=duration,
        rate=30,
        models=[
            ModelSpec(
                model_id="m",
                n_numeric=8,
                n_categorical=2,
                accuracy=0.9,
                score="positive",  # the training profile then carries CBPE's calibration too
                covariate_drift=[CovariateDrift(feature="x1", at_s=duration / 2, magnitude=1.5)],
                concept_drift=ConceptDrift(at_s=duration / 2, magnitude=0.5),
            )
        ],
        label_delay=LabelDelay(median_s=20, max_s=240),
        malformed_rate=0.005,
    )
    counts = asyncio.run(produce(scenario, settings))
    # A training profile published before each run: stage 1's sequential feature detectors then
    # watch every run from its first event, so drift_alerts are compared too; its multivariate
    # section (with CBPE's calibration) makes multivariate_drift, outlier_rate and
    # estimated_performance rows that every fault test compares as well.
    drift = settings.drift
    profiles = tuple(p.model_dump_json().encode()
                     for p in training_profiles(scenario, drift.bins, drift.top_k, effective_from_ms=0))
    return Stream(
        proxied_broker.bootstrap_servers,
        settings.topics.predictions,
        settings.topics.labels,
        settings.topics.partitions,
        counts,
        profiles,
    )


@pytest.fixture(scope="session")
def clean_tables(fault_stream: Stream, fault_root: Path) -> dict[str, list[list[str]]]:
    """The tables of an uninterrupted single-process run (role all)."""
    with workers() as started, RssSampler() as rss:
        run_to_idle(
            run_env(fault_stream, "clean", fault_root),
            fault_root / "clean.log",
            started,
            fault_root / "clean" / "home",
            rss,
        )
    rss.check()
    tables = dump_tables(fault_root, "clean")
    assert len(tables["model_drift"]) >= 5 and len(tables["outcomes"]) > 1000, {
        t: len(rows) for t, rows in tables.items()
    }
    assert tables["dead_letters"], "the stream has malformed messages"
    # x1 shifts by 1.5 sd mid-stream: the feature detectors must see it, and only it (the
    # reconstruction error may see it too: moving one feature moves events off the reference's
    # principal subspace).
    features = {row[4] for row in tables["drift_alerts"] if row[6] == "features"}
    assert features - {"__reconstruction__"} == {"x1"}, tables["drift_alerts"]
    # ... as one episode across shards (the shift lasts), not an alarm per shard or per interval
    episodes = [row for row in tables["drift_episodes"] if row[6] == "features"]
    assert sorted(row[4] for row in episodes) == sorted(features), tables["drift_episodes"]
    return tables
