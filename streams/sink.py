"""SinkRunner: the only writer of ClickHouse. Topics in, rows out, offsets committed after.

Consumer group ``driftline-sink`` over the sink, outcomes, dead-letter, profiles,
retrain-trigger and retrain-status topics. Each ``getmany`` batch becomes rows per table, staged
in the ClickHouseRowWriter; the staged rows are flushed (inserted) once the oldest of them has
waited ``worker.sink_flush_interval_s`` (:data:`FLUSH_INTERVAL_S`), and only then are the offsets of the
batches they came from committed (at-least-once; every table is a ReplacingMergeTree keyed by a
deterministic id, so a replayed batch collapses under FINAL). While ClickHouse is unreachable the
same rows are retried forever with backoff (logged once a minute) and fetching is paused: memory
stays bounded and nothing is skipped. The waits between retries are ``getmany`` calls on the
paused partitions (:func:`~driftline.streams.group_wait.wait_in_group`), so however long the wait
the sink keeps its group membership and partitions. ``stop()`` ends such a wait within half a
second: what is staged is then not committed, and read again by the next sink.

What is not an outage does not count and is not dropped either: it becomes a ``dead_letters``
row keyed by the message's own topic, partition and offset, staged and flushed with the batch's
other rows (so committed only once durable, and a replay lands on the same row):

- ``sink_unreadable``: a message that cannot be turned into rows (not JSON, not of a sink
  message's form, a malformed block, an outcome or dead letter of the wrong shape);
- ``invalid_profile``: a message of the profiles topic that is not a valid reference profile (the
  workers skip it; this is where the user learns why the model has no drift scores);
- ``sink_refused``: rows of a message that the writer's check (an unknown table or column, None
  in a non-Nullable column, an unreadable time) or ClickHouse (a value its column cannot hold)
  refuses; the message's other rows are written. A flush failing with an error of a value while
  ClickHouse still answers ``SELECT 1`` (``SinkRunner._refusal``) writes the staged messages again
  in halves, then a refused message's rows in halves, until the refused rows are found (a table
  at a time: a table behind its schema meanwhile waits while the others are written; a retry
  writes only what did not land).

A dead-letter row that is itself refused is the last resort: logged and counted in
``stats.rejected``, never written again (nothing loops).

A table behind this version's schema is not a row's fault either: a column the migrations create
that the table lacks (:class:`~driftline.store.writer.SchemaBehind`: ``driftline db migrate`` not
run since an upgrade, or the column dropped) makes the sink wait and retry as for an outage,
logging an ERROR that names the table and columns, with ``stats.schema_behind[table]`` 1
(``driftline_sink_schema_behind``) until a flush lands. Only what the table refused is tried
again: its rows (from the first message refused on) are held out of the writer and each flush
writes them again first, while the other tables' rows wait in the writer, inserted once (the
offsets still committed only once every staged row is in). A column no migration of this version
knows (a newer worker's, or garbage) is a ``sink_refused`` dead letter ("upgrade the sink?").
``stats.rows_written`` counts rows once flushed, the sink's own dead letters under ``dead_letters``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import OffsetAndMetadata
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from driftline.config import Settings, WorkerSettings
from driftline.kafka.clients import aiokafka_consumer
from driftline.kafka.groups import consumer_group
from driftline.kafka.offsets import unread
from driftline.kafka.records import as_raw
from driftline.operators.profile import parse_profile
from driftline.operators.validate import RawRecord
from driftline.pipeline.records import ColumnBlock, joined_blocks
from driftline.pipeline.to_rows import INVALID_PROFILE, RowMapper, error_text, named_model
from driftline.pipeline.to_rows import dead_letter_row as record_dead_letter
from driftline.store.writer import ClickHouseRowWriter, RowRefused, SchemaBehind
from driftline.streams.group_wait import wait_in_group

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0
LOG_EVERY_S = 60.0
FLUSH_INTERVAL_S: float = WorkerSettings.model_fields["sink_flush_interval_s"].default
"""How long staged rows wait for more before they are inserted: the default of
``worker.sink_flush_interval_s`` (``DRIFTLINE_WORKER_SINK_FLUSH_INTERVAL_S``). An insert into the embedded
ClickHouse costs ~8 ms CPU whatever its size (clickhouse-connect's Native block, chDB's INSERT
and its new part), one per table and column set: a flush of one small window's three tables
~26 ms CPU, of 20 such windows ~48 ms, of 200 ~170 ms (bench_window_rows.py --flush-every). The sink
flushed every fetched batch, so with many models (issue 19: at 1,000 a window closes every ~26
predictions) it paid that fixed cost several times a second. Half a second of waiting leaves a
window's rows inside the 2 s from its close to ClickHouse (issue 15)."""
DEAD_LETTERS = "dead_letters"
UNREADABLE = "sink_unreadable"
REFUSED = "sink_refused"
MAX_QUOTED_ROW_CHARS = 1000  # of the first refused row, quoted in error_message
# Errors of a value a column cannot hold: the writer's checks and clickhouse-connect's native
# encoder raise these ...
_VALUE_ERRORS = (ValueError, TypeError, AttributeError, OverflowError, struct.error, DataError)
# ... and the server these codes: CANNOT_PARSE_TEXT, CANNOT_PARSE_INPUT_ASSERTION_FAILED,
# TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE, INCORRECT_DATA,
# VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE, VIOLATED_CONSTRAINT. Not NO_SUCH_COLUMN_IN_TABLE (16) nor
# THERE_IS_NO_COLUMN (8): a column the table lacks is the schema's, not the row's; the writer names
# it (SchemaBehind: the sink waits for `driftline db migrate`; RowRefused: a column this version
# does not know either), and one it cannot name is retried as an outage.
_VALUE_CODES = frozenset({6, 27, 53, 69, 70, 117, 321, 469})
_CODE = re.compile(r"Code: (\d+)")
_Sources = list[tuple[RawRecord, list[ColumnBlock]]]  # a table's messages and their rows


class _Stopped(Exception):
    """stop() came while a write failed: give up the retries, commit nothing staged."""


@dataclass
class SinkStats:
    messages_in: Counter[str] = field(default_factory=Counter)  # per topic
    rows_written: Counter[str] = field(default_factory=Counter)  # per table, once flushed (dead letters too)
    native_rows: Counter[str] = field(default_factory=Counter)  # per table, rows staged through the C pass
    dead_lettered: Counter[str] = field(default_factory=Counter)  # messages, per topic read
    rejected: Counter[str] = field(default_factory=Counter)  # dead letters not written either, per topic
    write_failures: int = 0
    commit_failures: int = 0
    batches: int = 0
    flushes: int = 0
    blocked: bool = False  # a write failing, retried with fetching paused (an outage, a table behind)
    # 1 while a table lacks columns this version's migrations create (the sink waits), 0 once written
    schema_behind: dict[str, int] = field(default_factory=dict)


class SinkRunner:
    def __init__(self, settings: Settings, writer: ClickHouseRowWriter, *, group_id: str | None = None,
                 lock: threading.Lock | None = None, poll_timeout_ms: int = 500,
                 flush_interval_s: float | None = None) -> None:
        """`lock` serialises writer calls with other users of the same engine (the /query handler);
        ``flush_interval_s`` (default: the setting) 0 flushes every fetched batch."""
        self.settings = settings
        self.writer = writer
        self.group_id = group_id or consumer_group(settings, "sink")
        # The same mapping replays use, so live and replayed rows are identical.
        self._mapper = RowMapper(settings.topics)
        self.topics = self._mapper.topics
        self._lock = lock or threading.Lock()
        self.poll_timeout_ms = poll_timeout_ms
        self.stats = SinkStats()
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[TopicPartition, int] = {}
        self.flush_interval_s = (settings.worker.sink_flush_interval_s if flush_interval_s is None
                                 else flush_interval_s)
        self._staged: dict[TopicPartition, int] = {}  # next offset of each partition, rows staged not flushed
        self._staged_since = 0.0  # time.monotonic() of the oldest staged batch
        self._staged_records: list[RawRecord] = []  # what the staged rows came from
        self._searching = False  # a flush was refused: write the staged records again in halves
        # A search under way (None: none): the staged records' indices it wrote (or dead-lettered),
        # the rows of a refused record that landed before an outage ended its isolation (by staged
        # index) and the dead letters it found not written yet; a retry writes only the rest.
        self._landed: set[int] | None = None
        self._landed_rows: dict[int, set[int]] = {}
        self._search_dead: list[dict[str, Any]] = []
        self._staged_dead: dict[tuple[str, int, int], dict[str, Any]] = {}  # by topic, partition, offset
        self._staged_rows: Counter[str] = Counter()  # rows buffered per table, counted once flushed
        # What a table behind its schema kept out of the writer, and each flush tries again (the
        # rows already buffered wait there): its messages' blocks; dead letters, dead_letters behind.
        self._held: dict[str, _Sources] = {}
        self._held_dead: list[dict[str, Any]] = []
        self._held_by: SchemaBehind | None = None  # the last hold's error
        self._behind_said = -math.inf  # when _note_behind last logged (a table newly behind)
        self._profiles_topic = settings.topics.profiles
        # topics the writer reads in C as they came, the same rows as the mapper's (the outcomes
        # topic's JSON object a row: its table; the sink topic's columns form: None): a replay's
        # mapper tags its rows with its run, so only a live one's
        self._native_tables: dict[str, str | None] = {settings.topics.outcomes: "outcomes",
                                                      settings.topics.sink: None} \
            if self._mapper.run_id is None and hasattr(writer, "write_json_objects") else {}
        self.running = False

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        consumer = aiokafka_consumer(self.settings, self.group_id, raw_records=True)
        await consumer.start()
        self._consumer = consumer
        try:
            consumer.subscribe(self.topics)
            self.running = True
            while not self._stopping.is_set():
                fetched = await consumer.getmany(timeout_ms=self._poll_ms(),
                                                 max_records=self.settings.worker.batch_max_records)
                batch = {tp: as_raw(records) for tp, records in fetched.items()}
                if batch:
                    self._note_staged(batch)
                    await self._retrying(consumer, functools.partial(self._stage, batch))
                if self._staged and time.monotonic() - self._staged_since >= self.flush_interval_s:
                    await self._flush_and_commit(consumer)
            if self._staged:  # stopping: what was staged goes in now, if ClickHouse takes it at once
                await self._flush_and_commit(consumer, retry=False)
        except _Stopped:  # (the batch being staged may be partly in the writer: nothing is flushed)
            log.warning("sink: stopped while writing to ClickHouse failed; the %d staged messages are not "
                        "committed and will be read again", len(self._staged_records))
        finally:
            self.running = False
            self._consumer = None
            await consumer.stop()

    def assigned(self) -> bool:
        """Whether the group has given this sink any partitions yet."""
        return self._consumer is not None and bool(self._consumer.assignment())

    def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: the records still to write (:func:`unread`)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out = {}
        for tp in consumer.assignment():
            left = unread(consumer, tp, self._positions[tp]) if tp in self._positions else None
            if left is not None:
                out[tp] = left
        return out

    def _poll_ms(self) -> int:
        """The fetch's timeout: the poll timeout, or less when staged rows are due before it ends."""
        if not self._staged:
            return self.poll_timeout_ms
        due = self._staged_since + self.flush_interval_s - time.monotonic()
        return max(0, min(self.poll_timeout_ms, math.ceil(due * 1000)))

    def _note_staged(self, batch: dict[TopicPartition, list[RawRecord]]) -> None:
        if not self._staged:
            self._staged_since = time.monotonic()
        self._staged.update({tp: records[-1].offset + 1 for tp, records in batch.items() if records})
        self._staged_records.extend(record for records in batch.values() for record in records)
        for tp, records in batch.items():  # here, not in _stage: an outage mid-staging stages it again
            self.stats.messages_in[tp.topic] += len(records)
        self.stats.batches += 1

    async def _flush_and_commit(self, consumer: AIOKafkaConsumer, *, retry: bool = True) -> None:
        """Insert every staged row, then commit the offsets of the batches they came from."""
        if retry:
            await self._retrying(consumer, self._flush)
        else:
            try:
                await asyncio.to_thread(self._flush)
            except Exception as err:  # stopping: the rows are read again by the next sink
                self.stats.write_failures += 1
                log.warning("sink: the flush on stopping failed (%s); its rows will be written again", err)
                return
        self.stats.flushes += 1
        self.stats.rows_written.update(self._staged_rows)
        self._staged_rows = Counter()
        for table in self.stats.schema_behind:
            self.stats.schema_behind[table] = 0
        for row in self._staged_dead.values():
            self._noted(row)
        offsets = {tp: OffsetAndMetadata(offset, "") for tp, offset in self._staged.items()}
        self._staged = {}
        self._staged_records = []
        self._staged_dead = {}
        self._positions.update({tp: meta.offset for tp, meta in offsets.items()})
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as err:
            # A rebalance took the partitions away; their new owner re-writes them (idempotent).
            self.stats.commit_failures += 1
            log.warning("sink: commit after write failed (%s); the rows will be written again", err)

    async def _retrying(self, consumer: AIOKafkaConsumer, step: Callable[[], None]) -> None:
        """Run ``step`` (staging a batch, or flushing) in a thread until it succeeds: while
        ClickHouse fails, retry with backoff and pause fetching. Raises :class:`_Stopped` when
        ``stop()`` came meanwhile and the attempt after it failed too."""
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
                if isinstance(err, SchemaBehind):
                    self._note_behind(err)  # (says it once, when the table is newly behind)
                    last_log = max(last_log, self._behind_said)
                now = time.monotonic()
                if now - last_log >= LOG_EVERY_S:
                    if isinstance(err, SchemaBehind):
                        log.error("sink: %s; retrying until it succeeds", err)
                    else:
                        log.error("sink: writing to ClickHouse failed (%s); retrying until it succeeds", err)
                    last_log = now
                if self._stopping.is_set():
                    raise _Stopped from err
                # keeps the partitions however long it takes; ends early on stop() (one more try)
                await wait_in_group(consumer, backoff, until=self._stopping)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        if failing:
            self._set_blocked(False)

    def _note_behind(self, err: SchemaBehind) -> None:
        if not self.stats.schema_behind.get(err.table):
            log.error("sink: %s; retrying until it succeeds", err)
            self._behind_said = time.monotonic()
        self.stats.schema_behind[err.table] = 1

    def _stage(self, batch: dict[TopicPartition, list[RawRecord]]) -> None:
        """Convert and buffer the batch's rows, and the dead letters of what it cannot write (in
        the writer, under the engine lock)."""
        # Column blocks, not row dicts: a sink message of the columns form (records.sink_rows) goes
        # to the writer as it was decoded.
        per_table: dict[str, _Sources] = {}
        dead: list[dict[str, Any]] = []
        # a partition's records the writer reads in C (the table of a JSON object a row, or None for
        # sink messages of the columns form): in the writer's lock, below
        native: list[tuple[str | None, list[RawRecord]]] = []
        for tp, records in batch.items():
            if tp.topic in self._native_tables:
                native.append((self._native_tables[tp.topic], records))
            else:
                self._map_into(per_table, records, dead)
        with self._lock:
            if self._searching:  # the next flush writes every staged record again anyway
                return
            try:
                for table, records in native:
                    if table is None:
                        self._map_into(per_table, self._write_sink_messages(records), dead)
                    elif not self._write_native(table, records):
                        self._map_into(per_table, records, dead)
                self._write_tables(per_table, dead)
                self._write_dead(dead)
            except SchemaBehind as err:  # a row behind after others of its message went in: the
                self._note_behind(err)  # flush writes every staged record again (and waits)
                self._searching = True
            except Exception as err:  # a write that flushed a full buffer, refused by ClickHouse
                if not self._refusal(err):
                    raise
                self._searching = True

    def _map_into(self, per_table: dict[str, _Sources], records: list[RawRecord],
                  dead: list[dict[str, Any]]) -> None:
        """Each record's rows into ``per_table`` (the dead letters of those it cannot map, ``dead``)."""
        for record in records:
            mapped = self._map(record, dead)
            if mapped is not None:
                per_table.setdefault(mapped[0], []).append((record, mapped[1]))

    def _write_native(self, table: str, records: list[RawRecord]) -> bool:
        """A partition's records of a JSON object a row (the outcomes topic) to the writer as they
        came, read into a Native block in one C pass (``ClickHouseRowWriter.write_json_objects``);
        False, nothing written, where it does not take them as they stand (a tombstone, a value
        it does not read, a table behind its schema): then they are mapped row by row."""
        values = [record.value for record in records]
        if table in self._held or None in values:
            return False
        if not self.writer.write_json_objects(table, cast("list[bytes]", values)):
            return False
        self._staged_rows[table] += len(values)
        self.stats.native_rows[table] += len(values)
        return True

    def _write_sink_messages(self, records: list[RawRecord]
                             ) -> list[RawRecord]:
        """Sink messages of the columns form to the writer as they came, each read into Native
        blocks in one C pass (``ClickHouseRowWriter.write_sink_message``); those it does not take as
        they stand (a tombstone, the rows form, a value it does not read, a table behind its schema),
        to be mapped row by row."""
        left = []
        for record in records:
            taken = None if record.value is None else self.writer.write_sink_message(record.value, self._held)
            if taken is None:
                left.append(record)
                continue
            table, rows = taken
            self._staged_rows[table] += rows
            self.stats.native_rows[table] += rows
        return left

    def _write_tables(self, per_table: dict[str, _Sources], dead: list[dict[str, Any]]) -> None:
        """Buffer each table's rows (a refused message's: its dead letter added to ``dead``). A
        table behind its schema is held from the message it refused on (nothing of it buffered)."""
        for table, sources in per_table.items():
            if table in self._held:  # behind what waits already, in order
                self._held[table].extend(sources)
                continue
            # (one block a run of one layout: the outcomes topic's messages are a row each)
            table_blocks = joined_blocks([block for _, blocks in sources for block in blocks])
            try:
                self.writer.write_blocks(table, table_blocks)
                self._staged_rows[table] += sum(block.n for block in table_blocks)
                continue
            except RowRefused:  # the writer's check refused a row: find it, a message at a time
                pass
            except SchemaBehind as err:
                self._hold(err, table, sources)
                continue
            for index, (record, blocks) in enumerate(sources):
                try:
                    self.writer.write_blocks(table, blocks)
                except RowRefused:
                    dead.extend(self._write_checked(table, record, blocks))
                except SchemaBehind as err:
                    self._hold(err, table, sources[index:])
                    break
                else:
                    self._staged_rows[table] += sum(block.n for block in blocks)

    def _hold(self, err: SchemaBehind, table: str, sources: _Sources) -> None:
        self._note_behind(err)
        self._held_by = err
        self._held[table] = list(sources)

    def _write_held(self) -> None:
        """Buffer what was held; raise SchemaBehind while a table still is behind (the rest
        buffered). Any other error may leave part of it buffered: the flush searches instead."""
        held, self._held = self._held, {}
        dead, self._held_dead = self._held_dead, []
        try:
            self._write_tables(held, dead)
            self._write_dead(dead)
        except Exception:
            self._searching = True  # the search writes every staged record again
            raise
        if self._held or self._held_dead:
            assert self._held_by is not None
            raise self._held_by

    def _map(self, record: RawRecord,
             dead: list[dict[str, Any]]) -> tuple[str, list[ColumnBlock]] | None:
        """The record's table and rows; None for a tombstone, or (with its dead letter added to
        ``dead``) for a record that cannot become rows."""
        if record.value is None:
            return None
        try:
            if record.topic == self._profiles_topic:
                # What the workers check before they use a profile: one they skip is not written
                # as if it were in use, it is dead-lettered (once: this is one consumer group).
                parse_profile(record.value)  # a worker's stages of this process parsed it too: shared
            return self._mapper.blocks(record.topic, record.value)
        except Exception as err:  # mapping is pure (no I/O): whatever fails is the message's fault
            kind = INVALID_PROFILE if record.topic == self._profiles_topic else UNREADABLE
            dead.append(dead_letter_row(record, kind, error_text(err)))
            return None

    def _write_checked(self, table: str, record: RawRecord,
                       blocks: list[ColumnBlock]) -> list[dict[str, Any]]:
        """Buffer a record's rows (blocks the writer's check refused) one at a time: the dead
        letter of those it refuses."""
        rows = [row for block in blocks for row in block.rows()]
        refused = self._write_each(table, rows)
        self._staged_rows[table] += len(rows) - len(refused)
        return [refused_row(record, table, len(rows), refused)] if refused else []

    def _write_each(self, table: str, rows: list[dict[str, Any]]
                    ) -> list[tuple[int, dict[str, Any], Exception]]:
        """Buffer the rows one at a time: those the writer's check refuses, (index, row, error)."""
        refused: list[tuple[int, dict[str, Any], Exception]] = []
        for index, row in enumerate(rows):
            try:
                self.writer.write(table, [row])
            except RowRefused as err:
                refused.append((index, row, err))
        return refused

    def _write_dead(self, dead: list[dict[str, Any]]) -> None:
        if not dead:
            return
        if self._held_dead:  # dead_letters behind its schema: behind what waits already
            self._held_dead.extend(dead)
            return
        try:
            self.writer.write(DEAD_LETTERS, dead)
            written = dead
        except SchemaBehind as behind:  # nothing of it buffered
            self._note_behind(behind)
            self._held_by = behind
            self._held_dead = list(dead)
            return
        except RowRefused:  # some dead letter the writer's check refuses: the others go in
            refused = self._write_each(DEAD_LETTERS, dead)
            for _, row, err in refused:
                self._last_resort(row, err)
            dropped = {index for index, _, _ in refused}
            written = [row for index, row in enumerate(dead) if index not in dropped]
        self._staged_rows[DEAD_LETTERS] += len(written)
        self._staged_dead.update((_position(row), row) for row in written)

    def _last_resort(self, row: dict[str, Any], err: Exception) -> None:
        """A dead letter that cannot be written either: logged and counted, not tried again."""
        self.stats.rejected[row["source_topic"]] += 1
        log.error("sink: dropped %s[%d]@%d (%s: %s); its dead letter was refused too: %s",
                  row["source_topic"], row["source_partition"], row["source_offset"], row["error_kind"],
                  row["error_message"], error_text(err))

    def _refusal(self, err: Exception) -> bool:
        """Whether a failed write or flush refused a value (a row's fault) rather than failed to
        reach ClickHouse: an error of a value, and ClickHouse still answers."""
        if isinstance(err, RowRefused):
            return True
        if isinstance(err, OperationalError):
            return False
        if not isinstance(err, _VALUE_ERRORS):
            code = _CODE.search(str(err)) if isinstance(err, DatabaseError) else None
            if code is None or int(code.group(1)) not in _VALUE_CODES:
                return False
        try:
            self.writer.client.query("SELECT 1")
        except Exception:  # a failing engine can raise the same errors: an outage, retried
            return False
        return True

    def _flush(self) -> None:
        with self._lock:
            if not self._searching:
                if self._held or self._held_dead:
                    self._write_held()
                try:
                    self.writer.flush()
                    return
                except Exception as err:
                    if not self._refusal(err):
                        raise
                    log.warning("sink: ClickHouse refused a staged row (%s); writing the %d staged "
                                "messages again in halves to find it", error_text(err),
                                len(self._staged_records))
                    self._searching = True
            # Restartable: an outage in here (or a table behind) leaves _searching set, and the
            # retry goes on with what did not land (rows written twice collapse under FINAL).
            self._search_refused()
            self._searching = False

    def _search_refused(self) -> None:
        """Write the staged records again, a table at a time, in halves until the refused rows are
        found: a few inserts per refused row (not one per staged message), then the dead letters
        likewise. A retry (after an outage, or while a table is behind its schema: the other
        tables go on, then SchemaBehind is raised) writes only what did not land."""
        self.writer.discard()  # buffered, not inserted: written again below
        if self._landed is None:  # a new search: everything staged is written again
            self._landed, self._landed_rows, self._search_dead = set(), {}, []
            self._staged_dead, self._staged_rows = {}, Counter()
            self._held, self._held_dead = {}, []
        tables: dict[str, list[tuple[int, RawRecord, str, list[dict[str, Any]]]]] = {}
        for index, record in enumerate(self._staged_records):
            if index in self._landed:
                continue
            mapped = self._map(record, self._search_dead)
            if mapped is None:  # its dead letter (if any) is written below
                self._landed.add(index)
                continue
            table, blocks = mapped
            rows = [row for block in blocks for row in block.rows()]
            tables.setdefault(table, []).append((index, record, table, rows))
        behind: SchemaBehind | None = None
        for group in tables.values():
            try:
                self._write_halves(group)
            except SchemaBehind as table_behind:  # this table waits for `db migrate`; the others go on
                self._note_behind(table_behind)
                behind = table_behind
        dead, landed = self._search_dead, set[int]()
        try:
            refused_dead = self._isolate(DEAD_LETTERS, list(enumerate(dead)), landed)
        finally:  # an outage midway (or dead_letters behind): a retry writes only those not landed
            self._staged_dead.update((_position(dead[i]), dead[i]) for i in landed)
            self._search_dead = [row for i, row in enumerate(dead) if i not in landed]
        self._search_dead = []
        for _, row, err in refused_dead:
            self._last_resort(row, err)
        if behind is not None:
            raise behind
        self._landed = None

    def _write_halves(self, group: list[tuple[int, RawRecord, str, list[dict[str, Any]]]]
                      ) -> None:
        """Write and flush the records' rows (staged index, record, table, rows); when refused,
        each half again; for one record, find its refused rows (:meth:`_isolate`) and keep its
        dead letter for the search's. Each record whose rows landed is noted in ``_landed``."""
        if not group:
            return
        assert self._landed is not None
        if len(group) == 1:
            index, record, table, rows = group[0]
            landed = self._landed_rows.setdefault(index, set())  # (a retry: those that did not land)
            left = [(i, row) for i, row in enumerate(rows) if i not in landed]
            refused = self._isolate(table, left, landed)
            del self._landed_rows[index]
            if refused:
                self._search_dead.append(refused_row(record, table, len(rows), refused))
            self._landed.add(index)
            return
        try:
            for _, _, table, rows in group:
                self.writer.write(table, rows)
            self.writer.flush()
            for index, _, table, rows in group:
                self._staged_rows[table] += len(rows)
                self._landed.add(index)
            return
        except Exception as err:
            self.writer.discard()  # rows of tables inserted before the refusal go in again: collapsed
            if not self._refusal(err):
                raise
        middle = len(group) // 2
        self._write_halves(group[:middle])
        self._write_halves(group[middle:])

    def _noted(self, row: dict[str, Any]) -> None:
        """Count and log a dead letter written (flushed)."""
        self.stats.dead_lettered[row["source_topic"]] += 1
        log.warning("sink: %s[%d]@%d is a dead letter (%s): %s", row["source_topic"],
                    row["source_partition"], row["source_offset"], row["error_kind"], row["error_message"])

    def _isolate(self, table: str, rows: list[tuple[int, dict[str, Any]]], landed: set[int] | None = None
                 ) -> list[tuple[int, dict[str, Any], Exception]]:
        """Write and flush ``rows`` (index, row); when refused, each half again: the refused rows
        with their errors (a few inserts per refused row, not one per row). The indices of the
        rows inserted go into ``landed`` as they land (an outage may end the search midway)."""
        if not rows:
            return []
        try:
            self.writer.write(table, [row for _, row in rows])
            self.writer.flush()
            self._staged_rows[table] += len(rows)
            if landed is not None:
                landed.update(index for index, _ in rows)
            return []
        except Exception as err:
            self.writer.discard()
            if not self._refusal(err):
                raise
            if len(rows) == 1:
                return [(rows[0][0], rows[0][1], err)]
        middle = len(rows) // 2
        return self._isolate(table, rows[:middle], landed) + self._isolate(table, rows[middle:], landed)

    def _set_blocked(self, blocked: bool) -> None:
        self.stats.blocked = blocked
        consumer = self._consumer
        if consumer is None:
            return
        if blocked:
            consumer.pause(*consumer.assignment())
        else:
            consumer.resume(*consumer.assignment())


def _position(row: dict[str, Any]) -> tuple[str, int, int]:
    """Where a dead letter's record is: its key (a record staged twice is noted once)."""
    return row["source_topic"], row["source_partition"], row["source_offset"]


def dead_letter_row(record: RawRecord, kind: str, message: str,
                    model_id: str | None = None) -> dict[str, Any]:
    """The ``dead_letters`` row of a record the sink cannot write, keyed by where the record is."""
    return record_dead_letter(record.topic, record.partition, record.offset, record.timestamp_ms,
                              record.value, kind, message, model_id)


def refused_row(record: RawRecord, table: str, n_rows: int,
                refused: list[tuple[int, dict[str, Any], Exception]]) -> dict[str, Any]:
    """The dead letter of a message some of whose rows were refused: how many, the first one's
    reason, and the row itself (quoted, bounded)."""
    index, row, err = refused[0]
    quoted = orjson.dumps(row, default=repr).decode()
    if len(quoted) > MAX_QUOTED_ROW_CHARS:
        quoted = quoted[:MAX_QUOTED_ROW_CHARS] + " ..."
    message = (f"{len(refused)} of {n_rows} {table} rows refused, the other rows are written; "
               f"first refused, row {index}: {error_text(err)}; the row: {quoted}")
    return dead_letter_row(record, REFUSED, message, named_model(row) or named_model(record.value))
