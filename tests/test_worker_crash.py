"""SIGKILL the real worker twice mid-stream: ClickHouse ends with exactly the rows of a clean run.

Both runs read the same recorded predictions/labels topics; each has its own internal topics,
state and database. The crashed run is killed at two different points, restarted each time, and
its final tables (read with FINAL, as BI users do) must equal the clean run's row for row.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from driftline.config import Settings, TopicSettings
from driftline.kafka.admin import ensure_topics
from driftline.local.broker import free_port
from driftline.simulate import Scenario
from driftline.simulate.output import produce
from driftline.simulate.scenario import ConceptDrift, CovariateDrift, LabelDelay, ModelSpec

pytestmark = pytest.mark.integration

TABLES = (
    "feature_windows",
    "drift_scores",
    "model_drift",
    "model_metrics",
    "outcomes",
    "dead_letters",
    "late_events",
    "reference_profiles",
    "retrain_triggers",
)
INTERNAL = tuple(t for t in TopicSettings.topic_fields() if t not in ("predictions", "labels"))


def _env(settings: Settings, run: str, chdb: str, home: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers(),
        "DRIFTLINE_CLICKHOUSE_URL": chdb,
        "DRIFTLINE_CLICKHOUSE_DATABASE": f"crash_{run}",
        "DRIFTLINE_HOME": str(home / run),
        "DRIFTLINE_TOPICS_PREDICTIONS": settings.topics.predictions,
        "DRIFTLINE_TOPICS_LABELS": settings.topics.labels,
        "DRIFTLINE_TOPICS_PARTITIONS": str(settings.topics.partitions),
        "DRIFTLINE_WINDOWS_SIZES_S": "[60, 300]",
        "DRIFTLINE_WINDOWS_ALLOWED_LATENESS_S": "10",
        "DRIFTLINE_WINDOWS_METRICS_INTERVAL_S": "60",
        "DRIFTLINE_JOIN_LABEL_HORIZON_S": "300",
        "DRIFTLINE_TRIGGERS_COOLDOWN_S": "600",
        "DRIFTLINE_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "DRIFTLINE_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "DRIFTLINE_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
        "DRIFTLINE_WORKER_CHECKPOINT_INTERVAL_S": "1",
        "DRIFTLINE_WORKER_BATCH_MAX_RECORDS": "2000",
    }
    for name in INTERNAL:
        env[f"DRIFTLINE_TOPICS_{name.upper()}"] = f"{settings.topics.predictions}.{run}.{name}"
    return env


def _start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftline.cli.main",
            "worker",
            "--web-port",
            str(port),
            "--exit-when-idle",
            "6",
            "--run-seconds",
            "240",
            "--loglevel",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def _predictions_in(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for match in re.finditer(
        r'driftline_events_in_total\{stage="shard",topic="[^"]*predictions"\} (\S+)', text
    ):
        total += float(match.group(1))
    return total


def _triggers_fired(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(float(m.group(1)) for m in re.finditer(r"driftline_stage_triggers_total\{[^}]*\} (\S+)", text))


def _kill_after(
    env: dict[str, str], log: Path, records: float = 0, triggers: int = 0, timeout: float = 120
) -> None:
    port = free_port()
    proc = _start(env, port, log)
    try:
        deadline = time.monotonic() + timeout
        while _predictions_in(port) < records or _triggers_fired(port) < triggers:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "worker made no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _run_to_idle(env: dict[str, str], log: Path) -> None:
    proc = _start(env, free_port(), log)
    try:
        assert proc.wait(300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _trigger_ids(settings: Settings, topic: str) -> list[str]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers(),
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
        auto_offset_reset="earliest",
    )
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        return [orjson.loads(message.value)["trigger_id"] for message in consumer]
    finally:
        consumer.close()


DUMP = textwrap.dedent("""
    import sys, orjson, clickhouse_connect
    client = clickhouse_connect.get_client(dsn=sys.argv[1])
    out = {}
    for db in sys.argv[3:]:
        for table in sys.argv[2].split(","):
            result = client.query(f"SELECT * FROM {db}.{table} FINAL ORDER BY ALL")
            out[f"{db}.{table}"] = [list(map(str, row)) for row in result.result_rows]
    sys.stdout.buffer.write(orjson.dumps(out))
""")


def test_sigkill_twice_leaves_exactly_the_rows_of_a_clean_run(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"topics": settings.topics.model_copy(update={"partitions": 3})})
    ensure_topics(settings)
    start = (int(time.time()) - 1800) // 60 * 60 * 1000  # recent (event tables have a TTL), minute-aligned
    scenario = Scenario(
        seed=11,
        start=start,
        duration_s=900,
        rate=40,
        models=[
            ModelSpec(
                model_id="m",
                n_numeric=8,
                n_categorical=2,
                accuracy=0.9,
                covariate_drift=[CovariateDrift(feature="x1", at_s=450, magnitude=1.5)],
                concept_drift=ConceptDrift(at_s=450, magnitude=0.5),
            )
        ],
        label_delay=LabelDelay(median_s=20, max_s=240),
        malformed_rate=0.005,
    )
    counts = asyncio.run(produce(scenario, settings))
    n_predictions = counts["predictions"]
    chdb = f"chdb://{tmp_path / 'chdb'}"
    log = tmp_path / "workers.log"

    _run_to_idle(_env(settings, "clean", chdb, tmp_path), log)
    crashed = _env(settings, "crashed", chdb, tmp_path)
    _kill_after(crashed, log, records=n_predictions * 0.25)
    _kill_after(crashed, log, records=n_predictions * 0.1)  # restarts from its checkpoint: a later point
    # Third kill right after the first retrain trigger went out, with checkpoints too rare to have
    # recorded it: the restarted worker derives the same trigger again and must not publish it twice.
    _kill_after({**crashed, "DRIFTLINE_WORKER_CHECKPOINT_INTERVAL_S": "60"}, log, triggers=1)
    _run_to_idle(crashed, log)

    dump = subprocess.run(
        [sys.executable, "-c", DUMP, chdb, ",".join(TABLES), "crash_clean", "crash_crashed"],
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout
    tables = orjson.loads(dump)
    clean_rows = sum(len(tables[f"crash_clean.{t}"]) for t in TABLES)
    assert len(tables["crash_clean.model_drift"]) >= 10 and len(tables["crash_clean.outcomes"]) > 1000
    assert tables["crash_clean.retrain_triggers"], "the injected drift should have triggered"
    for table in TABLES:
        assert tables[f"crash_crashed.{table}"] == tables[f"crash_clean.{table}"], table
    published = _trigger_ids(settings, crashed["DRIFTLINE_TOPICS_RETRAIN_TRIGGERS"])
    assert len(published) == len(set(published)) == len(tables["crash_clean.retrain_triggers"]), published
    assert clean_rows > 0
