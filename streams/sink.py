"""SinkRunner: the only writer of ClickHouse. Topics in, rows out, offsets committed after.

Consumer group ``driftline-sink`` over the sink, outcomes, dead-letter, profiles,
retrain-trigger and retrain-status topics. Each ``getmany`` batch becomes rows per table, staged
in the ClickHouseRowWriter; the staged rows are flushed (inserted) once the oldest of them has
waited ``flush_interval_s`` (:data:`FLUSH_INTERVAL_S`), and only then are the offsets of the
batches they came from committed (at-least-once; every table is a ReplacingMergeTree keyed by a
deterministic id, so a replayed batch collapses under FINAL). While ClickHouse is unreachable the
same rows are retried forever with backoff (logged once a minute) and fetching is paused: memory
stays bounded and nothing is skipped. A message that cannot be turned into rows (malformed JSON,
unknown column) is not a ClickHouse outage: it is logged, counted as rejected and passed over.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from pydantic import ValidationError

from driftline.config import Settings
from driftline.kafka.clients import aiokafka_consumer
from driftline.pipeline.records import ColumnBlock
from driftline.pipeline.to_rows import RowMapper
from driftline.store.writer import ClickHouseRowWriter

log = logging.getLogger(__name__)

SINK_GROUP = "driftline-sink"
MAX_BACKOFF_S = 10.0
LOG_EVERY_S = 60.0
FLUSH_INTERVAL_S = 0.5
"""How long staged rows wait for more before they are inserted. An insert into the embedded
ClickHouse costs ~8 ms CPU whatever its size (clickhouse-connect's Native block, chDB's INSERT
and its new part), one per table and column set: a flush of one small window's three tables
~26 ms CPU, of 20 such windows ~48 ms, of 200 ~170 ms (bench_window_rows.py --flush-every). The sink
flushed every fetched batch, so with many models (issue 19: at 1,000 a window closes every ~26
predictions) it paid that fixed cost several times a second. Half a second of waiting leaves a
window's rows inside the 2 s from its close to ClickHouse (issue 15)."""

@dataclass
class SinkStats:
    messages_in: Counter[str] = field(default_factory=Counter)  # per topic
    rows_written: Counter[str] = field(default_factory=Counter)  # per table
    rejected: Counter[str] = field(default_factory=Counter)  # per topic
    write_failures: int = 0
    commit_failures: int = 0
    batches: int = 0
    flushes: int = 0
    blocked: bool = False


class SinkRunner:
    def __init__(self, settings: Settings, writer: ClickHouseRowWriter, *, group_id: str = SINK_GROUP,
                 lock: threading.Lock | None = None, poll_timeout_ms: int = 500,
                 flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        """`lock` serialises writer calls with other users of the same engine (the /query handler);
        ``flush_interval_s`` 0 flushes every fetched batch."""
        self.settings = settings
        self.writer = writer
        self.group_id = group_id
        # The same mapping replays use, so live and replayed rows are identical.
        self._mapper = RowMapper(settings.topics)
        self.topics = self._mapper.topics
        self._lock = lock or threading.Lock()
        self.poll_timeout_ms = poll_timeout_ms
        self.stats = SinkStats()
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[TopicPartition, int] = {}
        self.flush_interval_s = flush_interval_s
        self._staged: dict[TopicPartition, int] = {}  # next offset of each partition, rows staged not flushed
        self._staged_since = 0.0  # time.monotonic() of the oldest staged batch
        self.running = False

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        consumer = aiokafka_consumer(self.settings, self.group_id)
        await consumer.start()
        self._consumer = consumer
        try:
            consumer.subscribe(self.topics)
            self.running = True
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=self._poll_ms(),
                                               max_records=self.settings.worker.batch_max_records)
                if batch:
                    await self._retrying(functools.partial(self._stage, batch))
                    self._note_staged(batch)
                if self._staged and time.monotonic() - self._staged_since >= self.flush_interval_s:
                    await self._flush_and_commit(consumer)
            if self._staged:  # stopping: what was staged goes in now, if ClickHouse takes it at once
                await self._flush_and_commit(consumer, retry=False)
        finally:
            self.running = False
            self._consumer = None
            await consumer.stop()

    def assigned(self) -> bool:
        """Whether the group has given this sink any partitions yet."""
        return self._consumer is not None and bool(self._consumer.assignment())

    def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: true end (Fetch high watermark) minus the next offset to write."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None and tp in self._positions:
                out[tp] = max(0, highwater - self._positions[tp])
        return out

    def _poll_ms(self) -> int:
        """The fetch's timeout: the poll timeout, or less when staged rows are due before it ends."""
        if not self._staged:
            return self.poll_timeout_ms
        due = self._staged_since + self.flush_interval_s - time.monotonic()
        return max(0, min(self.poll_timeout_ms, math.ceil(due * 1000)))

    def _note_staged(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        if not self._staged:
            self._staged_since = time.monotonic()
        self._staged.update({tp: records[-1].offset + 1 for tp, records in batch.items() if records})
        self.stats.batches += 1

    async def _flush_and_commit(self, consumer: AIOKafkaConsumer, *, retry: bool = True) -> None:
        """Insert every staged row, then commit the offsets of the batches they came from."""
        if retry:
            await self._retrying(self._flush)
        else:
            try:
                await asyncio.to_thread(self._flush)
            except Exception as err:  # stopping: the rows are read again by the next sink
                self.stats.write_failures += 1
                log.warning("sink: the flush on stopping failed (%s); its rows will be written again", err)
                return
        self.stats.flushes += 1
        offsets = {tp: OffsetAndMetadata(offset, "") for tp, offset in self._staged.items()}
        self._staged = {}
        self._positions.update({tp: meta.offset for tp, meta in offsets.items()})
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as err:
            # A rebalance took the partitions away; their new owner re-writes them (idempotent).
            self.stats.commit_failures += 1
            log.warning("sink: commit after write failed (%s); the rows will be written again", err)

    async def _retrying(self, step: Callable[[], None]) -> None:
        """Run ``step`` (staging a batch, or flushing) in a thread until it succeeds: while
        ClickHouse fails, retry with backoff and pause fetching."""
        backoff, last_log, failing = 0.2, 0.0, False
        while True:
            try:
                await asyncio.to_thread(step)
                break
            except Exception as err:  # ClickHouse unreachable or failing: keep the rows, retry
                self.stats.write_failures += 1
                if not failing:
                    failing = True
                    self._set_blocked(True)
                now = time.monotonic()
                if now - last_log >= LOG_EVERY_S:
                    log.error("sink: writing to ClickHouse failed (%s); retrying until it succeeds", err)
                    last_log = now
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        if failing:
            self._set_blocked(False)

    def _stage(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Convert and buffer the batch's rows (in the writer, under the engine lock)."""
        # Column blocks, not row dicts: a sink message of the columns form (records.sink_rows) goes
        # to the writer as it was decoded.
        per_table: dict[str, list[ColumnBlock]] = {}
        for tp, records in batch.items():
            for record in records:
                self.stats.messages_in[tp.topic] += 1
                if record.value is None:
                    continue
                try:
                    table, blocks = self._mapper.blocks(tp.topic, record.value)
                except (ValueError, ValidationError) as err:
                    self._reject(tp.topic, record, err)
                    continue
                per_table.setdefault(table, []).extend(blocks)
        with self._lock:
            for table, table_blocks in per_table.items():
                try:
                    self.writer.write_blocks(table, table_blocks)
                    self.stats.rows_written[table] += sum(block.n for block in table_blocks)
                except ValueError:
                    self._write_each(table, [row for block in table_blocks for row in block.rows()])

    def _write_each(self, table: str, table_rows: list[dict[str, Any]]) -> None:
        for row in table_rows:
            try:
                self.writer.write(table, [row])
                self.stats.rows_written[table] += 1
            except ValueError as err:
                self.stats.rejected[table] += 1
                log.error("sink: rejected a %s row: %s", table, err)

    def _reject(self, topic: str, record: ConsumerRecord[bytes, bytes], err: Exception) -> None:
        self.stats.rejected[topic] += 1
        log.error("sink: rejected %s[%d]@%d: %s", topic, record.partition, record.offset,
                  str(err).splitlines()[0] if str(err) else type(err).__name__)

    def _flush(self) -> None:
        with self._lock:
            self.writer.flush()

    def _set_blocked(self, blocked: bool) -> None:
        self.stats.blocked = blocked
        consumer = self._consumer
        if consumer is None:
            return
        if blocked:
            consumer.pause(*consumer.assignment())
        else:
            consumer.resume(*consumer.assignment())
