"""A flush ClickHouse refuses for one row among many staged messages (the embedded ClickHouse, the
sink's staging and flush called directly: no consumer): the refused row is found in halves, in
fewer inserts than one per message; after an outage in the middle of that search the retry goes
on with what did not land and nothing is lost or left out; a refused message's neighbours all
land. A table behind its migrations is not a refusal: the flush waits."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Container, Mapping, Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from driftline.config import Settings
from driftline.operators.validate import RawRecord
from driftline.pipeline import records
from driftline.store import writer as writer_module
from driftline.store.client import connect, database_name
from driftline.store.migrate import migrate
from driftline.store.writer import SCHEMA_REFRESH_S, ClickHouseRowWriter, SchemaBehind
from driftline.streams.sink import SinkRunner

pytestmark = pytest.mark.integration

T0 = (int(time.time()) - 3600) * 1000  # recent: per-event tables have a TTL
MESSAGES = 40
BAD = 23  # the message holding the row ClickHouse refuses
UNREADABLE = 6  # messages not JSON, dead-lettered beside it


class FailingFlushes(ClickHouseRowWriter):
    """The real writer, whose flushes number ``fail_at`` (counting from 1) fail as an outage does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flushes = 0
        self.fail_at: set[int] = set()

    def flush(self) -> None:
        self.flushes += 1
        if self.flushes in self.fail_at:
            raise OperationalError("connection refused (injected)")
        super().flush()


def _batch(settings: Settings) -> dict[TopicPartition, list[RawRecord]]:
    topic = settings.topics.sink
    out = []
    for m in range(MESSAGES):
        rows = [{"run_id": "", "source_topic": "labels", "source_partition": 0, "source_offset": 10 * m + i,
                 "event_type": "label", "prediction_id": f"p{m}-{i}", "model_id": "m", "model_version": "",
                 "event_time": T0, "watermark_time": T0 + 1} for i in range(3)]
        if m == BAD:
            rows[1]["source_partition"] = "abc"  # Int32: refused when inserted, not when buffered
        (message,) = records.sink_rows(topic, "late_events", rows)
        out.append(RawRecord(topic, 0, m, T0, None, message.value))
    return {TopicPartition(topic, 0): out}


def _good_batch(settings: Settings) -> dict[TopicPartition, list[RawRecord]]:
    """:func:`_batch` without its bad value."""
    return {tp: [RawRecord(r.topic, r.partition, r.offset, r.timestamp_ms, None,
                           (r.value or b"").replace(b'"abc"', b"1"))
                 for r in records] for tp, records in _batch(settings).items()}


def test_a_refused_row_is_found_in_halves_and_an_outage_meanwhile_starts_over(settings: Settings) -> None:
    client = connect(settings)
    migrate(client, settings)
    writer = FailingFlushes(client, database_name(settings), close_client=False)
    sink = SinkRunner(settings, writer)
    batch = _batch(settings)
    sink._note_staged(batch)
    sink._stage(batch)
    writer.fail_at = {4}  # the first flush is refused; the search's third insert meets an outage
    with pytest.raises(OperationalError):
        sink._flush()
    searched_from = writer.flushes
    sink._flush()  # what the sink's retry does: the search again, for what did not land
    inserts = writer.flushes - searched_from
    assert inserts < MESSAGES, inserts  # halves, not a message at a time
    ids = {i for (i,) in client.query("SELECT prediction_id FROM late_events FINAL").result_rows}
    assert ids == {f"p{m}-{i}" for m in range(MESSAGES) for i in range(3)} - {f"p{BAD}-1"}
    dead = client.query("SELECT source_offset, error_kind, error_message FROM dead_letters FINAL").result_rows
    assert [(offset, kind) for offset, kind, _ in dead] == [(BAD, "sink_refused")]
    assert dead[0][2].startswith("1 of 3 late_events rows refused") and f'"p{BAD}-1"' in dead[0][2]
    assert not sink._searching and not sink.stats.rejected


def test_a_sink_started_on_a_table_behind_its_migrations_holds_then_waits(settings: Settings) -> None:
    """A writer that never saw the column (a sink whose table lacks one its migrations create): the
    batch's rows are held, each flush raises SchemaBehind (an outage to the sink's retry) writing
    nothing, and once the column is there the next flush writes every row, no dead letter."""
    client = connect(settings)
    migrate(client, settings)
    client.command("ALTER TABLE late_events DROP COLUMN watermark_time")
    writer = ClickHouseRowWriter(client, database_name(settings), close_client=False)
    sink = SinkRunner(settings, writer)
    batch = _good_batch(settings)
    sink._note_staged(batch)
    sink._stage(batch)
    assert list(sink._held) == ["late_events"] and sink.stats.schema_behind == {"late_events": 1}
    for _ in range(2):
        with pytest.raises(SchemaBehind, match=r"late_events lacks column\(s\) watermark_time"):
            sink._flush()
    assert client.query("SELECT count() FROM late_events").result_rows[0][0] == 0
    client.command("ALTER TABLE late_events ADD COLUMN watermark_time DateTime64(3, 'UTC')")
    writer._read_at["late_events"] -= SCHEMA_REFRESH_S  # (rather than wait a second)
    sink._flush()
    assert client.query("SELECT count() FROM late_events").result_rows[0][0] == 3 * MESSAGES
    assert client.query("SELECT count() FROM dead_letters").result_rows[0][0] == 0
    assert sink._staged_rows == {"late_events": 3 * MESSAGES} and not sink._staged_dead


class CountingWriter(ClickHouseRowWriter):
    """The real writer, counting the rows each table was given and buffered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.given: Counter[str] = Counter()

    def write(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        super().write(table, rows)
        self.given[table] += len(rows)

    def write_blocks(self, table: str,
                     blocks: Sequence[tuple[Sequence[str], Sequence[list[Any]], int]]) -> None:
        super().write_blocks(table, blocks)
        self.given[table] += sum(n for _, _, n in blocks)

    def write_sink_message(self, value: bytes, held: Container[str] = ()) -> tuple[str, int] | None:
        taken = super().write_sink_message(value, held)  # (a message read in C, as it came)
        if taken is not None:
            self.given[taken[0]] += taken[1]
        return taken


def _outcomes(settings: Settings) -> list[RawRecord]:
    """MESSAGES sink messages of 3 outcome rows each, at the sink topic's offsets 1000 on."""
    topic = settings.topics.sink
    out = []
    for m in range(MESSAGES):
        rows = [{"run_id": "", "prediction_id": f"o{m}-{i}", "model_id": "m", "model_version": "1",
                 "segment": "", "prediction_time": T0, "label_time": T0 + 5000, "label_delay_ms": 5000,
                 "predicted_label": "a", "predicted_score": 0.9, "predicted_value": None, "label": "a",
                 "label_value": None, "correct": 1, "abs_error": None, "features": "{}"} for i in range(3)]
        (message,) = records.sink_rows(topic, "outcomes", rows)
        value = message.value
        out.append(RawRecord(topic, 0, 1000 + m, T0, None, value))
    return out


def test_while_a_table_is_behind_each_flush_tries_only_its_rows_again(settings: Settings) -> None:
    """Outcomes staged with late_events rows whose table is behind its migrations, in a writer
    whose buffer fills (it flushes as it is written to): the outcomes are given to the writer once
    and land once however many flushes wait; each tries the late rows again, which land once the
    column is there."""
    client = connect(settings)
    migrate(client, settings)
    client.command("ALTER TABLE late_events DROP COLUMN watermark_time")
    writer = CountingWriter(client, database_name(settings), close_client=False, max_buffer_rows=50)
    sink = SinkRunner(settings, writer)
    (tp, late), = _good_batch(settings).items()
    batch = {tp: _outcomes(settings) + late}
    sink._note_staged(batch)
    sink._stage(batch)
    for _ in range(3):
        with pytest.raises(SchemaBehind, match=r"late_events lacks column\(s\) watermark_time"):
            sink._flush()
    assert writer.given == {"outcomes": 3 * MESSAGES}
    client.command("ALTER TABLE late_events ADD COLUMN watermark_time DateTime64(3, 'UTC')")
    writer._read_at["late_events"] -= SCHEMA_REFRESH_S  # (rather than wait a second)
    sink._flush()
    counts = {table: client.query(f"SELECT count() FROM {table}").result_rows[0][0]  # without FINAL
              for table in ("outcomes", "late_events", "dead_letters")}
    assert counts == {"outcomes": 3 * MESSAGES, "late_events": 3 * MESSAGES, "dead_letters": 0}
    assert writer.given == {"outcomes": 3 * MESSAGES, "late_events": 3 * MESSAGES}
    assert sink._staged_rows == writer.given and not sink._searching


def test_dead_letters_behind_wait_and_the_rows_beside_them_are_written_once(settings: Settings) -> None:
    """dead_letters itself behind its migrations: the dead letter waits (each flush tries it
    again), the good rows staged beside it are given to the writer once."""
    client = connect(settings)
    migrate(client, settings)
    client.command("ALTER TABLE dead_letters DROP COLUMN model_id")
    writer = CountingWriter(client, database_name(settings), close_client=False)
    sink = SinkRunner(settings, writer)
    (tp, late), = _good_batch(settings).items()
    unreadable = RawRecord(tp.topic, 0, MESSAGES, T0, None, b"not json")
    batch = {tp: [*late, unreadable]}
    sink._note_staged(batch)
    sink._stage(batch)
    for _ in range(2):
        with pytest.raises(SchemaBehind, match=r"dead_letters lacks column\(s\) model_id"):
            sink._flush()
    assert sink.stats.schema_behind == {"dead_letters": 1}
    client.command("ALTER TABLE dead_letters ADD COLUMN model_id LowCardinality(String)")
    writer._read_at["dead_letters"] -= SCHEMA_REFRESH_S
    sink._flush()
    assert client.query("SELECT count() FROM late_events").result_rows[0][0] == 3 * MESSAGES
    assert client.query("SELECT error_kind FROM dead_letters").result_rows == [("sink_unreadable",)]
    assert writer.given == {"late_events": 3 * MESSAGES, "dead_letters": 1}


@pytest.mark.parametrize("noticed", [True, False])
def test_a_search_while_a_table_is_behind_retries_only_what_did_not_land(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, noticed: bool) -> None:
    """A refused value starts the search in halves, and outcomes staged beside it are behind their
    migrations (a column dropped under the sink): each retry tries only the outcome rows again and
    inserts nothing; the late rows and the dead letter land once, the outcomes once the column is
    back. Noticed: the writer reads the columns again, a SchemaBehind refused before buffering.
    Not: the retries come within the writer's refresh interval, its inserts fail (an outage to the
    sink), and each retry used to insert the late rows again."""
    client = connect(settings)
    migrate(client, settings)
    writer = CountingWriter(client, database_name(settings), close_client=False)
    sink = SinkRunner(settings, writer)
    (tp, late), = _batch(settings).items()  # BAD's row refused when inserted: the search
    batch = {tp: late + _outcomes(settings)}
    sink._note_staged(batch)
    sink._stage(batch)
    client.command("ALTER TABLE outcomes DROP COLUMN abs_error")
    if noticed:
        writer._read_at["outcomes"] -= SCHEMA_REFRESH_S  # its insert fails: the columns read again
        error: Any = pytest.raises(SchemaBehind, match=r"outcomes lacks column\(s\) abs_error")
    else:
        monkeypatch.setattr(writer_module, "SCHEMA_REFRESH_S", 3600.0)
        error = pytest.raises(DatabaseError, match="abs_error")

    def inserted() -> dict[str, int]:
        return {table: client.query(f"SELECT count() FROM {table}").result_rows[0][0]  # without FINAL
                for table in ("outcomes", "late_events", "dead_letters")}

    # (an outage stops the search at once: the dead letter waits behind the outcomes then)
    waiting = {"outcomes": 0, "late_events": 3 * MESSAGES - 1, "dead_letters": int(noticed)}
    with error:
        sink._flush()
    assert inserted() == waiting
    for _ in range(3):  # each retry: only the outcome rows tried again, nothing more inserted
        given = writer.given.copy()
        with error:
            sink._flush()
        assert writer.given - given == ({} if noticed else {"outcomes": 3 * MESSAGES})
        assert inserted() == waiting
    client.command("ALTER TABLE outcomes ADD COLUMN abs_error Nullable(Float64)")
    writer._read_at["outcomes"] -= SCHEMA_REFRESH_S
    sink._flush()
    assert inserted() == {"outcomes": 3 * MESSAGES, "late_events": 3 * MESSAGES - 1, "dead_letters": 1}
    assert not sink._searching and sink.stats.schema_behind == ({"outcomes": 1} if noticed else {})
    assert sink._staged_rows == {"outcomes": 3 * MESSAGES, "late_events": 3 * MESSAGES - 1, "dead_letters": 1}


class DeadLetterOutage(CountingWriter):
    """The counting writer, whose flush of dead letters number ``fail_at`` (from 1) fails as an
    outage does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dead_flushes = 0
        self.fail_at = 0
        self._dead_buffered = False

    def write(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        super().write(table, rows)
        self._dead_buffered |= table == "dead_letters"

    def flush(self) -> None:
        if self._dead_buffered:
            self._dead_buffered = False
            self.dead_flushes += 1
            if self.dead_flushes == self.fail_at:
                raise OperationalError("connection refused (injected)")
        super().flush()

    def discard(self) -> None:
        self._dead_buffered = False
        super().discard()


def test_an_outage_while_the_search_writes_its_dead_letters_retries_only_those_not_landed(
        settings: Settings) -> None:
    """The search's dead letters (unreadable messages, the refused row's message) with one among
    them ClickHouse refuses (its partition past Int32): written in halves, the first half lands,
    the second meets an outage. The retry writes only the dead letters that did not land: each is
    inserted once (a count without FINAL) and counted once in the rows written; the refused one
    is a last resort, once."""
    client = connect(settings)
    migrate(client, settings)
    writer = DeadLetterOutage(client, database_name(settings), close_client=False)
    sink = SinkRunner(settings, writer)
    (tp, late), = _batch(settings).items()  # BAD's row refused when inserted: the search
    unreadable = [RawRecord(tp.topic, 0, 100 + i, T0, None, b"not json") for i in range(UNREADABLE)]
    past_int32 = RawRecord(tp.topic, 2**31, 0, T0, None, b"not json")
    batch = {tp: late + unreadable + [past_int32]}
    sink._note_staged(batch)
    sink._stage(batch)
    # flushes with dead letters: 1 the staged rows', refused; 2 the search's dead letters, refused;
    # 3 their first half, lands; 4 their second half, an outage
    writer.fail_at = 4
    with pytest.raises(OperationalError):
        sink._flush()
    assert client.query("SELECT count() FROM dead_letters").result_rows[0][0] == (UNREADABLE + 2) // 2
    sink._flush()
    dead = UNREADABLE + 1  # the unreadable messages' and BAD's; past_int32's is refused
    assert client.query("SELECT count() FROM dead_letters").result_rows[0][0] == dead  # without FINAL
    assert sink._staged_rows == {"late_events": 3 * MESSAGES - 1, "dead_letters": dead}
    assert len(sink._staged_dead) == dead and sum(sink.stats.rejected.values()) == 1
    assert not sink._searching and not sink._search_dead


class OutageInBad(CountingWriter):
    """The counting writer, whose flush of the second half of BAD's rows (the refused row and
    the one after it) fails once, as an outage does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failed = False
        self._failing = False

    def write(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        super().write(table, rows)
        self._failing |= [row.get("prediction_id") for row in rows] == [f"p{BAD}-1", f"p{BAD}-2"]

    def flush(self) -> None:
        if self._failing and not self.failed:
            self.failed = True
            raise OperationalError("connection refused (injected)")
        super().flush()

    def discard(self) -> None:
        self._failing = False
        super().discard()


def test_an_outage_while_a_refused_message_s_rows_are_isolated_retries_only_those_not_landed(
        settings: Settings) -> None:
    """The refused message's 3 rows in halves: its first row lands, the second half (the refused
    row and the last) meets an outage. The retry writes only the rows that did not land: its
    first row is inserted and counted once, the dead letter still says 1 of 3 rows refused."""
    client = connect(settings)
    migrate(client, settings)
    writer = OutageInBad(client, database_name(settings), close_client=False)
    sink = SinkRunner(settings, writer)
    batch = _batch(settings)
    sink._note_staged(batch)
    sink._stage(batch)
    with pytest.raises(OperationalError):
        sink._flush()
    assert writer.failed
    sink._flush()
    late = client.query("SELECT count() FROM late_events").result_rows[0][0]  # without FINAL
    assert late == 3 * MESSAGES - 1
    assert sink._staged_rows == {"late_events": 3 * MESSAGES - 1, "dead_letters": 1}
    (message,), = client.query("SELECT error_message FROM dead_letters").result_rows
    assert message.startswith("1 of 3 late_events rows refused, the other rows are written; "
                              "first refused, row 1")
    assert not sink._searching and not sink._landed_rows
