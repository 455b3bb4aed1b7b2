"""Clock discipline and duplicates through the real worker (embedded broker and ClickHouse): the
fault stream plus a producer whose clock is 40 minutes fast, at-least-once re-sends and one
conflicting re-send, all interleaved with it on the same partitions. The normal traffic's tables
are the clean run's, row for row; the fast producer's events are future_timestamp dead letters;
the re-sends are model_metrics 'duplicates' rows; the conflict is a dead letter naming both hashes."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from harness import Stream, dump_tables, read_topic, run_env, run_to_idle, workers
from kafka import KafkaProducer

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.operators.join import payload_digest
from driftline.schemas.events import LabelEvent, PredictionEvent

pytestmark = pytest.mark.integration

AHEAD_MS = 40 * 60_000
COMPARED = ("feature_windows", "drift_scores", "model_drift", "outcomes", "drift_episodes")

QUERY = textwrap.dedent("""
    import sys, orjson, clickhouse_connect
    client = clickhouse_connect.get_client(dsn=sys.argv[1])
    db = sys.argv[2]
    out = {
        "dead": client.query(
            f"SELECT error_kind, count() FROM {db}.dead_letters FINAL GROUP BY error_kind").result_rows,
        "conflicts": client.query(f"SELECT error_message, payload FROM {db}.dead_letters FINAL "
                                  "WHERE error_kind = 'conflicting_duplicate'").result_rows,
        "late": client.query(f"SELECT count() FROM {db}.late_events FINAL").result_rows,
        "duplicates": client.query(
            "SELECT sum(n_duplicate_predictions), sum(n_duplicate_labels), max(time) "
            f"FROM {db}.model_metrics FINAL WHERE row_kind = 'duplicates' AND segment = ''").result_rows,
        "resends": client.query(
            f"SELECT event_type, count() FROM {db}.unjoined_events FINAL "
            "WHERE reason = 'exact_resend' GROUP BY event_type ORDER BY event_type").result_rows,
        "unjoined": [list(map(str, r)) for r in client.query(
            f"SELECT * FROM {db}.unjoined_events FINAL WHERE reason != 'exact_resend' "
            "ORDER BY ALL").result_rows],
        "metrics": [list(map(str, r)) for r in client.query(
            f"SELECT * EXCEPT (n_duplicate_predictions, n_duplicate_labels) FROM {db}.model_metrics FINAL "
            "WHERE row_kind != 'duplicates' ORDER BY ALL").result_rows],
    }
    sys.stdout.buffer.write(orjson.dumps(out, default=str))
""")


def _query(root: Path, run: str) -> dict[str, list[list[object]]]:
    result = subprocess.run(
        [sys.executable, "-c", QUERY, f"chdb://{root / run / 'chdb'}", f"fault_{run}"],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    out: dict[str, list[list[object]]] = orjson.loads(result.stdout)
    return out


def _read_all(stream: Stream, topic: str) -> list[tuple[int, int, bytes | None, bytes]]:
    return [(m.partition, m.timestamp, m.key, m.value)
            for m in read_topic(stream.bootstrap, topic, stream.partitions)]


def _valid(value: bytes, model: type[PredictionEvent] | type[LabelEvent]) -> bool:
    try:
        model.model_validate_json(value)
    except ValueError:
        return False
    return True


def _fast(value: bytes) -> bytes:
    doc = orjson.loads(value)
    return orjson.dumps(
        {**doc, "prediction_id": f"fast-{doc['prediction_id']}", "timestamp": doc["timestamp"] + AHEAD_MS}
    )


@pytest.fixture(scope="module")
def mixed_stream(fault_stream: Stream) -> tuple[Stream, dict[str, int], tuple[bytes, bytes]]:
    """The fault stream, copied partition by partition in order, with the extra records between."""
    prefix = "faultclock"
    settings = Settings(
        kafka={"bootstrap_servers": fault_stream.bootstrap},
        topics={
            "predictions": f"{prefix}.predictions",
            "labels": f"{prefix}.labels",
            "partitions": fault_stream.partitions,
            **{name: f"{prefix}.setup.{name}" for name in ("outcomes", "dead_letters", "repartition")},
        },
    )
    ensure_topics(settings)
    rng = random.Random(13)
    extra = {"fast": 0, "resent": 0}
    conflict: tuple[bytes, bytes] | None = None
    producer = KafkaProducer(bootstrap_servers=fault_stream.bootstrap, acks="all", linger_ms=20)
    for source, target, model in (
        (fault_stream.predictions, settings.topics.predictions, PredictionEvent),
        (fault_stream.labels, settings.topics.labels, LabelEvent),
    ):
        for partition, ts, key, value in _read_all(fault_stream, source):
            producer.send(target, value=value, key=key, partition=partition, timestamp_ms=ts)
            if not _valid(value, model):
                continue
            is_prediction = model is PredictionEvent
            if is_prediction and rng.random() < 0.1:  # same partition, same record time: 40 min ahead
                producer.send(target, value=_fast(value), key=key, partition=partition, timestamp_ms=ts)
                extra["fast"] += 1
            if rng.random() < 0.03:  # an at-least-once retry: the same bytes again
                producer.send(target, value=value, key=key, partition=partition, timestamp_ms=ts)
                extra["resent"] += 1
            elif conflict is None and is_prediction:
                changed = orjson.dumps({**orjson.loads(value), "latency_ms": 123456.0})
                producer.send(target, value=changed, key=key, partition=partition, timestamp_ms=ts)
                conflict = (value, changed)
    producer.flush(120)
    producer.close()
    assert conflict is not None and extra["fast"] > 100 and extra["resent"] > 50
    stream = Stream(
        fault_stream.bootstrap,
        settings.topics.predictions,
        settings.topics.labels,
        fault_stream.partitions,
        fault_stream.counts,
        fault_stream.profiles,
    )
    return stream, extra, conflict


@pytest.mark.timeout(900)
def test_fast_clock_and_duplicates_change_no_row_of_the_normal_traffic(
    mixed_stream: tuple[Stream, dict[str, int], tuple[bytes, bytes]],
    clean_tables: dict[str, list[list[str]]],
    fault_root: Path,
) -> None:
    stream, extra, (first, changed) = mixed_stream
    root = fault_root / "clocks"
    root.mkdir(exist_ok=True)
    with workers() as started:
        run_to_idle(run_env(stream, "mixed", root), root / "mixed.log", started, root / "mixed" / "home")
    tables = dump_tables(root, "mixed", COMPARED)
    for table in COMPARED:  # the normal traffic is counted as if nothing else had been produced
        assert tables[table] == clean_tables[table], table
    got, clean = _query(root, "mixed"), _query(fault_root, "clean")
    assert got["metrics"] == clean["metrics"]
    assert got["late"] == clean["late"]  # nothing made late by the fast clock
    dead, clean_dead = dict(map(tuple, got["dead"])), dict(map(tuple, clean["dead"]))
    assert dead.pop("future_timestamp") == extra["fast"]
    assert dead.pop("conflicting_duplicate") == 1
    assert dead == clean_dead
    ((message, payload),) = got["conflicts"]
    assert payload_digest(first).hex() in str(message) and payload_digest(changed).hex() in str(message)
    assert str(payload) == changed.decode()
    ((n_predictions, n_labels, _),) = got["duplicates"]
    # every re-send is counted, but those of the intervals still open when the stream went idle
    assert 0.8 * extra["resent"] <= int(n_predictions) + int(n_labels) <= extra["resent"]
    assert int(n_predictions) > 0 and int(n_labels) > 0
    # each counted re-send is an unjoined_events row of its own, and nothing else unjoined changed
    assert got["resends"] == [["label", int(n_labels)], ["prediction", int(n_predictions)]]
    assert got["unjoined"] == clean["unjoined"]
