"""SinkRunner on the embedded broker and ClickHouse: every topic becomes rows; duplicates vanish."""

from __future__ import annotations

import asyncio
import base64
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from driftline.config import Settings, TopicSettings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_producer_kwargs
from driftline.pipeline.to_rows import RowMapper
from driftline.store.client import connect, database_name
from driftline.store.migrate import migrate
from driftline.store.writer import ClickHouseRowWriter
from driftline.streams.sink import SinkRunner

pytestmark = pytest.mark.integration

T0 = (int(time.time()) - 3600) * 1000  # recent: per-event tables have a TTL


def messages(settings: Settings) -> list[tuple[str, bytes]]:
    t = settings.topics
    outcome = {"run_id": "", "prediction_id": "p1", "model_id": "m", "model_version": "1", "segment": "",
               "prediction_time": T0, "label_time": T0 + 5000, "label_delay_ms": 5000,
               "predicted_label": "a", "predicted_score": 0.9, "predicted_value": None, "label": "a",
               "label_value": None, "correct": 1, "abs_error": None, "features": '{"x":1}'}
    dead = {"original": base64.b64encode(b'{"model_id":"m","bad":').decode(), "source_topic": t.predictions,
            "source_partition": 0, "source_offset": 9, "source_timestamp": T0, "error_kind": "decode_error",
            "error_message": "EOF"}
    profile = {"model_id": "m", "model_version": "1", "profile_id": "prof1", "created_at_ms": T0,
               "effective_from_ms": T0, "source": "training", "task": "classification", "features": {}}
    trigger = {"trigger_id": "t1", "model_id": "m", "model_version": "1", "reason": "drift",
               "window_start": T0, "window_end": T0 + 300_000, "triggered_at": T0 + 300_000,
               "evidence": {"psi": 0.4}}
    job = {"run_id": "", "trigger_id": "t1", "attempt": 1, "model_id": "m", "model_version": "1",
           "status": "succeeded", "started_at": T0, "finished_at": T0 + 1000, "duration_s": 1.0,
           "exit_code": 0, "log_path": "/tmp/x.log", "message": "", "updated_at": T0 + 1000}
    late = {"run_id": "", "source_topic": t.labels, "source_partition": 1, "source_offset": 4,
            "event_type": "label", "prediction_id": "p9", "model_id": "m", "model_version": "",
            "event_time": T0, "watermark_time": T0 + 1}
    once = [(t.outcomes, orjson.dumps(outcome)), (t.dead_letters, orjson.dumps(dead)),
            (t.profiles, orjson.dumps(profile)), (t.retrain_triggers, orjson.dumps(trigger)),
            (t.retrain_status, orjson.dumps(job)),
            (t.sink, orjson.dumps({"table": "late_events", "rows": [late]}))]
    poison = [(t.outcomes, b"not json"), (t.sink, b'{"table": "late_events"}')]
    return once + poison + once  # every good message twice: at-least-once delivery


def test_sink_writes_every_topic_and_duplicates_collapse(settings: Settings) -> None:
    s = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={
        "session_timeout_ms": 3000, "heartbeat_interval_ms": 500, "rebalance_timeout_ms": 3000})})
    ensure_topics(s)
    client = connect(s)
    migrate(client, s)
    writer = ClickHouseRowWriter(client, database_name(s), close_client=False)
    sink = SinkRunner(s, writer, group_id=f"sink-{s.topics.sink}", poll_timeout_ms=200)
    asyncio.run(_run(s, sink))
    assert sink.stats.rejected[s.topics.outcomes] == 1 and sink.stats.rejected[s.topics.sink] == 1
    counts = {table: client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0]
              for table in ("outcomes", "dead_letters", "reference_profiles", "retrain_triggers",
                            "retrain_jobs", "late_events")}
    assert counts == dict.fromkeys(counts, 1), counts
    query = "SELECT payload, payload_size, model_id FROM dead_letters FINAL"
    payload, size, model = client.query(query).result_rows[0]
    assert (payload, size, model) == ('{"model_id":"m","bad":', 22, "")
    evidence = client.query("SELECT evidence FROM retrain_triggers FINAL").result_rows[0][0]
    assert orjson.loads(evidence) == {"psi": 0.4}


async def _run(s: Settings, sink: SinkRunner) -> None:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(s))
    await producer.start()
    try:
        for topic, value in messages(s):
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()
    task = asyncio.create_task(sink.run())
    try:
        deadline = time.monotonic() + 40
        while sum(sink.stats.messages_in.values()) < 14 or any(sink.lag().values()):
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, sink.stats
            await asyncio.sleep(0.1)
    finally:
        sink.stop()
        await asyncio.wait_for(task, 20)


def test_dead_letter_payload_is_truncated_and_decoded_with_replacement() -> None:
    original = b"\xff" + b"a" * 70_000
    letter = {"original": base64.b64encode(original).decode(), "source_topic": "t", "source_partition": 0,
              "source_offset": 1, "source_timestamp": 0, "error_kind": "oversized", "error_message": "big"}
    _, (row,) = RowMapper(TopicSettings()).rows(TopicSettings().dead_letters, orjson.dumps(letter))
    assert row["payload_size"] == 70_001
    assert row["payload"].startswith("\ufffd") and len(row["payload"]) == 65_536
