"""The sink inserts staged rows once they have waited ``flush_interval_s`` (many fetched batches a
flush), and commits a batch's offsets only after the flush holding its rows succeeded (a fake
consumer and writer: no broker, no ClickHouse)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

import streams.sink as sink_module
from driftline.config import Settings
from driftline.operators.validate import RawRecord
from driftline.pipeline import records
from streams.sink import SinkRunner


@pytest.fixture
def settings() -> Settings:
    """Plain settings: nothing here reaches a broker or ClickHouse."""
    return Settings()


class FakeWriter:
    def __init__(self, events: list[Any], failing_flushes: int = 0, failing_writes: int = 0) -> None:
        self.events = events
        self.failing_flushes = failing_flushes
        self.failing_writes = failing_writes  # a write that flushed a full buffer, ClickHouse down
        self.staged: list[int] = []  # rows a block at a time
        self.inserted = 0

    def write_blocks(self, table: str, blocks: list[records.ColumnBlock]) -> None:
        if self.failing_writes:
            self.failing_writes -= 1
            self.events.append(("write failed",))
            raise OSError("ClickHouse down")
        self.staged += [block.n for block in blocks]

    def flush(self) -> None:
        if self.failing_flushes:
            self.failing_flushes -= 1
            self.events.append(("flush failed",))
            raise OSError("ClickHouse down")
        self.inserted = sum(self.staged)
        self.events.append(("flush", self.inserted))


class FakeConsumer:
    """Hands out ``batches`` one per getmany (none while paused), then asks the runner to stop."""

    def __init__(self, runner: list[SinkRunner], batches: list[dict[TopicPartition, list[Any]]],
                 events: list[Any]) -> None:
        self.runner, self.batches, self.events = runner, list(batches), events
        self.paused = False

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def subscribe(self, topics: list[str]) -> None: ...

    def assignment(self) -> set[TopicPartition]:
        return set()

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused = True

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused = False

    async def getmany(self, timeout_ms: int, max_records: int | None = None
                      ) -> dict[TopicPartition, list[Any]]:
        if self.paused:  # (the sink waiting between retries: the real one returns nothing at the timeout)
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        if not self.batches:
            self.runner[0].stop()
            return {}
        return self.batches.pop(0)

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.events.append(("commit", {tp.partition: meta.offset for tp, meta in offsets.items()}))


def _batches(settings: Settings, n: int) -> list[dict[TopicPartition, list[Any]]]:
    """``n`` batches, each one sink message of 3 rows on partition 0 and one on partition 1."""
    out = []
    for i in range(n):
        batch = {}
        for partition in (0, 1):
            rows = [{"prediction_id": f"p{i}-{partition}-{k}"} for k in range(3)]
            (message,) = records.sink_rows(settings.topics.sink, "late_events", rows)
            record = RawRecord(settings.topics.sink, partition, 10 * i + partition, 0, b"late_events",
                               message.value)
            batch[TopicPartition(settings.topics.sink, partition)] = [record]
        out.append(batch)
    return out


def _run(monkeypatch: pytest.MonkeyPatch, settings: Settings, interval: float, n: int,
         failing_flushes: int = 0, failing_writes: int = 0) -> tuple[SinkRunner, list[Any]]:
    events: list[Any] = []
    runner: list[SinkRunner] = []
    consumer = FakeConsumer(runner, _batches(settings, n), events)
    monkeypatch.setattr(sink_module, "aiokafka_consumer", lambda *args, **options: consumer)
    monkeypatch.setattr(sink_module, "MAX_BACKOFF_S", 0.0)
    writer = FakeWriter(events, failing_flushes, failing_writes)
    runner.append(SinkRunner(settings, writer, flush_interval_s=interval))  # type: ignore[arg-type]
    asyncio.run(runner[0].run())
    return runner[0], events


def test_batches_wait_for_one_flush_and_their_offsets_after_it(monkeypatch: pytest.MonkeyPatch,
                                                               settings: Settings) -> None:
    runner, events = _run(monkeypatch, settings, 3600.0, 4)  # none due: all flushed on stopping
    assert events == [("flush", 24), ("commit", {0: 31, 1: 32})]
    assert runner.stats.batches == 4 and runner.stats.flushes == 1
    assert runner.stats.rows_written["late_events"] == 24
    assert runner.stats.messages_in[settings.topics.sink] == 8


def test_no_interval_flushes_every_batch(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    runner, events = _run(monkeypatch, settings, 0.0, 3)
    assert events == [("flush", 6), ("commit", {0: 1, 1: 2}), ("flush", 12), ("commit", {0: 11, 1: 12}),
                      ("flush", 18), ("commit", {0: 21, 1: 22})]
    assert runner.stats.flushes == 3


def test_a_failed_flush_is_retried_and_nothing_is_committed_before_it_succeeds(
        monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    runner, events = _run(monkeypatch, settings, 0.0, 2, failing_flushes=2)
    assert events == [("flush failed",), ("flush failed",), ("flush", 6), ("commit", {0: 1, 1: 2}),
                      ("flush", 12), ("commit", {0: 11, 1: 12})]
    assert runner.stats.write_failures == 2 and not runner.stats.blocked


def test_a_batch_staged_again_after_an_outage_counts_its_messages_once(
        monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    runner, events = _run(monkeypatch, settings, 0.0, 2, failing_writes=2)
    assert events[:3] == [("write failed",), ("write failed",), ("flush", 6)]
    assert runner.stats.write_failures == 2 and runner.stats.rows_written["late_events"] == 12
    assert runner.stats.messages_in[settings.topics.sink] == 4  # 2 batches of 2 messages, each once


def test_the_fetch_waits_no_longer_than_the_oldest_staged_rows_may(settings: Settings) -> None:
    runner = SinkRunner(settings, FakeWriter([]), poll_timeout_ms=500, flush_interval_s=3600.0)  # type: ignore[arg-type]
    assert runner._poll_ms() == 500
    record = RawRecord("t", 0, 7, 0, None, b"")
    runner._note_staged({TopicPartition("t", 0): [record]})
    assert runner._poll_ms() == 500 and runner._staged == {TopicPartition("t", 0): 8}
    runner.flush_interval_s = 0.0
    assert runner._poll_ms() == 0


def test_the_interval_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SinkRunner(Settings(), FakeWriter([])).flush_interval_s == sink_module.FLUSH_INTERVAL_S == 0.5  # type: ignore[arg-type]
    monkeypatch.setenv("DRIFTLINE_WORKER_SINK_FLUSH_INTERVAL_S", "2.5")
    assert SinkRunner(Settings(), FakeWriter([])).flush_interval_s == 2.5  # type: ignore[arg-type]
    assert SinkRunner(Settings(), FakeWriter([]), flush_interval_s=0.0).flush_interval_s == 0.0  # type: ignore[arg-type]
