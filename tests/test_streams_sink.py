"""SinkRunner on the embedded broker and ClickHouse: every topic becomes rows; duplicates vanish;
what cannot be written is a dead_letters row with the reason, and the rows around it land."""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from driftline.config import Settings, TopicSettings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_consumer, aiokafka_producer_kwargs
from driftline.operators.validate import RawRecord
from driftline.pipeline import records
from driftline.pipeline.to_rows import RowMapper
from driftline.store.client import connect, database_name
from driftline.store.migrate import migrate
from driftline.store.writer import ClickHouseRowWriter
from driftline.streams import sink as sink_module
from driftline.streams.metrics import render
from driftline.streams.sink import SinkRunner
from driftline.streams.worker import WorkerRuntime

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
    return once + poison + refused(settings) + once + refused(settings)  # at-least-once: twice


def refused(settings: Settings) -> list[tuple[str, bytes]]:
    """Messages the sink turns into rows of which some are refused, and invalid profiles."""
    t = settings.topics

    def late(i: int, **changed: object) -> dict[str, object]:
        return {"run_id": "", "source_topic": t.labels, "source_partition": 1, "source_offset": 100 + i,
                "event_type": "label", "prediction_id": f"r{i}", "model_id": "m", "model_version": "",
                "event_time": T0, "watermark_time": T0 + 1, **changed}

    # the writer's check refuses an unknown column (rows form) ...
    checked = {"table": "late_events", "rows": [late(1), late(2, bogus=1), late(3)]}
    # ... ClickHouse a value its Int32 column cannot hold, only when the rows are inserted (blocks form)
    (inserted,) = records.sink_rows(t.sink, "late_events",
                                    [late(4), late(5), late(6, source_partition="abc"), late(7)])
    no_task = {"model_id": "m2", "model_version": "1", "profile_id": "p2", "created_at_ms": T0,
               "effective_from_ms": T0, "source": "training", "features": {}}
    no_model = {"model_version": "1", "profile_id": "p3"}  # the row mapping alone would raise KeyError
    return [(t.sink, orjson.dumps(checked)), (t.sink, inserted.value),
            (t.profiles, orjson.dumps(no_task)), (t.profiles, orjson.dumps(no_model))]


def test_sink_writes_every_topic_and_duplicates_collapse(settings: Settings) -> None:
    s = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={
        "session_timeout_ms": 3000, "heartbeat_interval_ms": 500, "rebalance_timeout_ms": 3000})})
    ensure_topics(s)
    client = connect(s)
    migrate(client, s)
    writer = ClickHouseRowWriter(client, database_name(s), close_client=False)
    sink = SinkRunner(s, writer, group_id=f"sink-{s.topics.sink}", poll_timeout_ms=200)
    asyncio.run(_run(s, sink, len(messages(s))))
    assert not sink.stats.rejected, sink.stats
    counts = {table: client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0]
              for table in ("outcomes", "reference_profiles", "retrain_triggers", "retrain_jobs")}
    assert counts == dict.fromkeys(counts, 1), counts
    query = "SELECT payload, payload_size, model_id FROM dead_letters FINAL WHERE source_topic = {t:String}"
    payload, size, model = client.query(query, parameters={"t": s.topics.predictions}).result_rows[0]
    assert (payload, size, model) == ('{"model_id":"m","bad":', 22, "")
    ids = client.query("SELECT prediction_id FROM late_events FINAL ORDER BY prediction_id").result_rows
    assert [i for (i,) in ids] == ["p9", "r1", "r3", "r4", "r5", "r7"]  # the refused rows' neighbours land
    dead = client.query("SELECT source_topic, error_kind, error_message, payload, model_id FROM dead_letters"
                        " FINAL WHERE source_topic != {t:String} ORDER BY source_topic, source_offset",
                        parameters={"t": s.topics.predictions}).result_rows
    t = s.topics
    kinds = Counter((topic, kind, model) for topic, kind, _, _, model in dead)
    assert kinds == {(t.outcomes, "sink_unreadable", ""): 1, (t.sink, "sink_unreadable", ""): 1,
                     (t.sink, "sink_refused", "m"): 4,  # two messages, each sent twice: 4 offsets
                     (t.profiles, "invalid_profile", "m2"): 2, (t.profiles, "invalid_profile", ""): 2}, kinds
    messages_of = {(topic, kind, model): message for topic, kind, message, _, model in dead}
    assert messages_of[(t.outcomes, "sink_unreadable", "")].startswith("not JSON")
    assert "task: Field required" in messages_of[(t.profiles, "invalid_profile", "m2")]
    refusals = [message for topic, kind, message, _, _ in dead if kind == "sink_refused"]
    assert refusals[0].startswith("1 of 3 late_events rows refused") and "bogus" in refusals[0]
    assert "upgrade the sink?" in refusals[0]  # a column no migration of this version creates
    assert refusals[1].startswith("1 of 4 late_events rows refused") and '"prediction_id":"r6"' in refusals[1]
    assert refusals[2:] == refusals[:2]
    assert sink.stats.dead_lettered[t.sink] >= 5 and sink.stats.dead_lettered[t.profiles] >= 4
    # Each row counted once it is flushed, whichever path wrote it (the refused "inserted" message's
    # rows were found by a search that writes the staged messages again): 2 dead letters from the
    # dead-letter topic + the sink's own 10 (2 unreadable, 4 refused, 4 invalid profiles); late rows
    # p9 twice, r1 r3 r4 r5 r7 twice.
    assert (sink.stats.rows_written["dead_letters"], sink.stats.rows_written["late_events"]) == (12, 12)
    # Every offset read again (a sink that wrote and crashed before committing): the same rows.
    table_counts = "SELECT count() FROM {table:Identifier} FINAL"
    before = {table: client.query(table_counts, parameters={"table": table}).result_rows[0][0]
              for table in ("dead_letters", "late_events", "reference_profiles")}
    again = SinkRunner(s, writer, group_id=f"again-{s.topics.sink}", poll_timeout_ms=200)
    asyncio.run(_consume(again, len(messages(s))))
    after = {table: client.query(table_counts, parameters={"table": table}).result_rows[0][0]
             for table in before}
    assert after == before == {"dead_letters": 11, "late_events": 6, "reference_profiles": 1}, (before, after)
    assert (again.stats.rows_written["dead_letters"], again.stats.rows_written["late_events"]) == (12, 12)
    evidence = client.query("SELECT evidence FROM retrain_triggers FINAL").result_rows[0][0]
    assert orjson.loads(evidence) == {"psi": 0.4}


def test_a_refused_dead_letter_is_logged_and_counted_once_and_the_sink_moves_on(settings: Settings) -> None:
    """The last resort: ClickHouse refuses the dead letters themselves (a constraint here), at the
    flush. The sink writes the staged messages one at a time, drops the dead letters with a log
    line and a count, writes the good rows and commits: nothing loops."""
    s = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={
        "session_timeout_ms": 3000, "heartbeat_interval_ms": 500, "rebalance_timeout_ms": 3000})})
    ensure_topics(s)
    client = connect(s)
    migrate(client, s)
    client.command("ALTER TABLE dead_letters ADD CONSTRAINT no_sink CHECK error_kind NOT LIKE 'sink%'")
    writer = ClickHouseRowWriter(client, database_name(s), close_client=False)
    sink = SinkRunner(s, writer, group_id=f"sink-{s.topics.sink}", poll_timeout_ms=200)
    t = s.topics
    late = {"run_id": "", "source_topic": t.labels, "source_partition": 1, "source_offset": 4,
            "event_type": "label", "prediction_id": "p9", "model_id": "m", "model_version": "",
            "event_time": T0, "watermark_time": T0 + 1}
    sent = [(t.outcomes, b"not json"), (t.sink, orjson.dumps({"table": "late_events", "rows": [late]})),
            (t.sink, b"{}")]
    asyncio.run(_run(s, sink, len(sent), sent))
    assert sink.stats.rejected == {t.outcomes: 1, t.sink: 1}, sink.stats
    assert not sink.stats.dead_lettered
    assert client.query("SELECT count() FROM late_events FINAL").result_rows[0][0] == 1
    assert client.query("SELECT count() FROM dead_letters FINAL").result_rows[0][0] == 0


WATERMARK_TIME = ("watermark_time DateTime64(3, 'UTC') COMMENT "
                  "'partition watermark the event fell behind (UTC)'")  # as migration 002 has it


def test_a_table_behind_its_migrations_makes_the_sink_wait_and_resume_after_migrate(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """A column this version's migrations create, missing from the table (an upgrade before `db
    migrate`; here dropped under the running sink): the sink waits, says so (log, gauge), writes no
    dead letter and commits nothing; once the column is back the rows land once and it goes on."""
    s = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={
        "session_timeout_ms": 3000, "heartbeat_interval_ms": 500, "rebalance_timeout_ms": 3000})})
    ensure_topics(s)
    client = connect(s)
    migrate(client, s)
    writer = ClickHouseRowWriter(client, database_name(s), close_client=False)
    sink = SinkRunner(s, writer, group_id=f"sink-{s.topics.sink}", poll_timeout_ms=200)

    def count(sql: str) -> int:
        return int(client.query(sql).result_rows[0][0])

    async def scenario() -> None:
        task = asyncio.create_task(sink.run())
        producer = AIOKafkaProducer(**aiokafka_producer_kwargs(s))
        await producer.start()

        async def until(done: Callable[[], Any], what: str) -> None:
            await _until(task, sink, done, what, 40)

        try:
            await producer.send_and_wait(*_late(s, 0), key=b"k")  # the writer reads the table's columns
            await until(lambda: count("SELECT count() FROM late_events") == 1, "the first row")
            client.command("ALTER TABLE late_events DROP COLUMN watermark_time")
            for i in (1, 2, 3):
                await producer.send_and_wait(*_late(s, i), key=b"k")
            await until(lambda: sink.stats.schema_behind.get("late_events") == 1, "waiting")
            await until(lambda: sink.stats.write_failures >= 3, "retrying")
            assert count("SELECT count() FROM late_events") == 1
            assert count("SELECT count() FROM dead_letters") == 0
            assert any(sink.lag().values()), "nothing committed while the rows wait"
            assert b'driftline_sink_schema_behind{table="late_events"} 1.0' in render([], sink)
            health = WorkerRuntime.health(SimpleNamespace(  # type: ignore[arg-type]  # the parts it reads
                runners=[], sink=sink, failure=None, role="sink"))
            assert (health["ok"], health["ready"], health["sink_schema_behind"]) == (
                True, False, ["late_events"])
            client.command(f"ALTER TABLE late_events ADD COLUMN IF NOT EXISTS {WATERMARK_TIME}")  # migrate
            await until(lambda: not any(sink.lag().values()) and sink.stats.schema_behind["late_events"] == 0,
                        "resumed")
        finally:
            await producer.stop()
            sink.stop()
            await asyncio.wait_for(task, 20)

    with caplog.at_level(logging.ERROR, logger="driftline.streams.sink"):
        asyncio.run(scenario())
    assert count("SELECT count() FROM late_events") == 4  # each row once, without FINAL
    assert count("SELECT count() FROM dead_letters") == 0 and not sink.stats.rejected
    assert b'driftline_sink_schema_behind{table="late_events"} 0.0' in render([], sink)
    assert any("late_events lacks column(s) watermark_time" in r.message and "driftline db migrate"
               in r.message for r in caplog.records), caplog.text


MAX_POLL_MS = 2000


def test_a_wait_longer_than_max_poll_interval_keeps_the_sink_in_its_group(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka leaves the group when no getmany ran for ``max_poll_interval_ms`` (300 s by default,
    2 s here): a sink waiting for `db migrate` longer than that must still hold its partitions, so
    that once the column is there its rows land and commit once, none fetched again."""
    s = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={
        "session_timeout_ms": 3000, "heartbeat_interval_ms": 500, "rebalance_timeout_ms": 3000})})
    ensure_topics(s)
    client = connect(s)
    migrate(client, s)
    client.command("ALTER TABLE late_events DROP COLUMN watermark_time")  # an upgrade before migrate
    monkeypatch.setattr(sink_module, "aiokafka_consumer",
                        functools.partial(aiokafka_consumer, max_poll_interval_ms=MAX_POLL_MS))
    writer = ClickHouseRowWriter(client, database_name(s), close_client=False)
    sink = SinkRunner(s, writer, group_id=f"sink-{s.topics.sink}", poll_timeout_ms=200)
    generations: list[int] = []

    async def scenario() -> None:
        task = asyncio.create_task(sink.run())
        producer = AIOKafkaProducer(**aiokafka_producer_kwargs(s))
        await producer.start()

        async def until(done: Callable[[], Any], what: str) -> None:
            await _until(task, sink, done, what, 60)

        try:
            for i in range(3):
                await producer.send_and_wait(*_late(s, i), key=b"k")
            await until(lambda: sink.stats.schema_behind.get("late_events") == 1, "waiting")
            generations.append(_generation(sink))
            # Backoffs 0.2 + 0.4 + ... + 3.2 s: six failures are over 6 s of waiting, 3x max_poll_interval.
            await until(lambda: sink.stats.write_failures >= 6, "a long wait")
            generations.append(_generation(sink))
            client.command(f"ALTER TABLE late_events ADD COLUMN IF NOT EXISTS {WATERMARK_TIME}")  # migrate
            await until(lambda: sink.stats.flushes and not any(sink.lag().values()), "resumed")
            generations.append(_generation(sink))
        finally:
            await producer.stop()
            sink.stop()
            await asyncio.wait_for(task, 20)

    asyncio.run(scenario())
    assert -1 not in generations and len(set(generations)) == 1, generations  # no leave, no rejoin
    assert sink.stats.messages_in[s.topics.sink] == 3 and not sink.stats.commit_failures, sink.stats
    assert client.query("SELECT count() FROM late_events").result_rows[0][0] == 3  # each once, without FINAL


def test_stop_ends_a_blocked_sink_promptly_and_its_rows_are_read_again(settings: Settings) -> None:
    """A sink retrying a write (a table behind its schema) with a long backoff: stop() returns
    within a second or two, not once a write succeeds; nothing staged is committed, so the next
    sink reads the rows again and writes them once the table is migrated."""
    ensure_topics(settings)
    client = connect(settings)
    migrate(client, settings)
    client.command("ALTER TABLE late_events DROP COLUMN watermark_time")
    writer = ClickHouseRowWriter(client, database_name(settings), close_client=False)
    group = f"sink-{settings.topics.sink}"
    sink = SinkRunner(settings, writer, group_id=group, poll_timeout_ms=200)

    async def blocked_then_stopped() -> float:
        task = asyncio.create_task(sink.run())
        producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(*_late(settings, i), key=b"k")
            # Backoffs 0.2 + 0.4 + 0.8 + 1.6 s: the fifth failure starts a 3.2 s wait.
            await _until(task, sink, lambda: sink.stats.write_failures >= 5, "blocked", 60)
        finally:
            await producer.stop()
        sink.stop()
        started = time.monotonic()
        await asyncio.wait_for(task, 10)
        return time.monotonic() - started

    stopped_in = asyncio.run(blocked_then_stopped())
    assert stopped_in < 2.0, stopped_in  # a wait slice (0.5 s) and one more failed attempt
    assert sink.stats.messages_in[settings.topics.sink] == 3 and not sink.stats.flushes, sink.stats
    client.command(f"ALTER TABLE late_events ADD COLUMN IF NOT EXISTS {WATERMARK_TIME}")  # migrate
    again = SinkRunner(settings, writer, group_id=group, poll_timeout_ms=200)
    asyncio.run(_consume(again, 3))
    assert again.stats.messages_in[settings.topics.sink] == 3, again.stats  # uncommitted: read again
    assert client.query("SELECT count() FROM late_events").result_rows[0][0] == 3


def _late(s: Settings, i: int) -> tuple[str, bytes]:
    """A sink message of one late_events row (the column-blocks form stage 2 writes)."""
    t = s.topics
    row = {"run_id": "", "source_topic": t.labels, "source_partition": 0, "source_offset": i,
           "event_type": "label", "prediction_id": f"w{i}", "model_id": "m", "model_version": "",
           "event_time": T0, "watermark_time": T0 + 1}
    (message,) = records.sink_rows(t.sink, "late_events", [row])
    return t.sink, message.value


def _generation(sink: SinkRunner) -> int:
    """The sink consumer's group generation (aiokafka has no public handle on it): -1 once it left."""
    consumer = sink._consumer
    assert consumer is not None
    return int(consumer._coordinator.generation)


async def _run(s: Settings, sink: SinkRunner, n_messages: int,
               sent: list[tuple[str, bytes]] | None = None) -> None:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(s))
    await producer.start()
    try:
        for topic, value in messages(s) if sent is None else sent:
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()
    await _consume(sink, n_messages)


async def _until(task: asyncio.Task[None], sink: SinkRunner, done: Callable[[], Any], what: str,
                 seconds: float) -> None:
    """Poll ``done`` until true while ``task`` (the sink's run) lives, failing after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not done():
        assert not task.done(), task.exception()
        assert time.monotonic() < deadline, (what, sink.stats)
        await asyncio.sleep(0.1)


async def _consume(sink: SinkRunner, n_messages: int) -> None:
    """Run ``sink`` until it has read ``n_messages`` and committed up to the end of its topics."""
    task = asyncio.create_task(sink.run())
    try:
        await _until(task, sink, lambda: sum(sink.stats.messages_in.values()) >= n_messages
                     and not any(sink.lag().values()), "every message written", 40)
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


def test_outcomes_go_in_as_native_blocks_and_a_batch_with_a_bad_one_row_by_row(settings: Settings) -> None:
    """The outcomes topic's messages (and the sink topic's) reach ClickHouse through the C pass
    (counted in /metrics), with the values the row-by-row way writes; a fetched batch holding one it
    cannot read goes row by row, its good outcomes written, the bad one a dead letter."""
    ensure_topics(settings)
    client = connect(settings)
    migrate(client, settings)
    writer = ClickHouseRowWriter(client, database_name(settings), close_client=False)
    t = settings.topics

    def outcome(i: int) -> bytes:
        return orjson.dumps({
            "run_id": "", "prediction_id": f"n{i}", "model_id": "m", "model_version": "1", "segment": "",
            "prediction_time": T0 + i, "label_time": T0 + 5000 + i, "label_delay_ms": 5000,
            "predicted_label": "a", "predicted_score": 0.25 + i / 1000, "predicted_value": None,
            "label": "b" if i % 3 else "a", "label_value": None, "correct": int(i % 3 == 0),
            "abs_error": None, "features": orjson.dumps({"x": i / 7, "c": "caf\u00e9 \"q\""}).decode()})

    sent = [(t.outcomes, outcome(i)) for i in range(40)] + [_late(settings, i) for i in range(3)]
    sink = SinkRunner(settings, writer, group_id=f"sink-native-{t.sink}", poll_timeout_ms=200)
    asyncio.run(_run(settings, sink, len(sent), sent))
    assert sink.stats.native_rows == {"outcomes": 40, "late_events": 3}, sink.stats  # (a sink message too)
    late = client.query("SELECT prediction_id FROM late_events FINAL ORDER BY prediction_id").result_rows
    assert late == [("w0",), ("w1",), ("w2",)]
    assert b'driftline_sink_native_rows_total{table="outcomes"} 40.0' in render([], sink)
    rows = client.query("SELECT prediction_id, toUnixTimestamp64Milli(label_time), predicted_score, correct,"
                        " features FROM outcomes FINAL ORDER BY prediction_time").result_rows
    assert rows == [(f"n{i}", T0 + 5000 + i, 0.25 + i / 1000, int(i % 3 == 0),
                     orjson.dumps({"x": i / 7, "c": "caf\u00e9 \"q\""}).decode()) for i in range(40)]
    # a bad one among good ones in one fetched batch (staged as the sink stages a fetch: how the
    # broker groups records into fetches is not this test's): the batch goes row by row, its
    # neighbours land, the bad one is a dead letter
    values = [outcome(100), b'{"run_id": "", "prediction_id": ', outcome(101)]
    fetched = [RawRecord(t.outcomes, 0, 100 + i, T0, None, value) for i, value in enumerate(values)]
    batch = {TopicPartition(t.outcomes, 0): fetched}
    again = SinkRunner(settings, writer, group_id=f"sink-native-{t.sink}", poll_timeout_ms=200)
    again._note_staged(batch)
    again._stage(batch)
    again._flush()
    assert not again.stats.native_rows, again.stats
    ids = client.query("SELECT prediction_id FROM outcomes FINAL WHERE prediction_id IN ('n100', 'n101')"
                       " ORDER BY prediction_id").result_rows
    assert ids == [("n100",), ("n101",)]
    kinds = client.query("SELECT error_kind FROM dead_letters FINAL WHERE source_topic = {t:String}",
                         parameters={"t": t.outcomes}).result_rows
    assert kinds == [("sink_unreadable",)]
