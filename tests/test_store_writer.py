"""RowWriter: every contract table round-trips; re-inserted rows collapse under FINAL; the sink path."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.insert import InsertContext
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from driftline.config import Settings, TopicSettings
from driftline.pipeline.to_rows import RowMapper
from driftline.store.client import connect
from driftline.store.migrate import migrate
from driftline.store.owner import claim_owner, owner_path
from driftline.store.writer import (
    MAX_SINK_MESSAGE_BYTES,
    SCHEMA_REFRESH_S,
    ClickHouseRowWriter,
    KafkaSinkRowWriter,
    RowRefused,
    SchemaBehind,
    migration_columns,
    open_row_writer,
)

pytestmark = pytest.mark.integration

# Yesterday 00:00:00.123 UTC in epoch ms: recent enough that the tables' TTL keeps the rows.
T0 = (int(time.time()) // 86_400 - 1) * 86_400_000 + 123
DT0 = datetime.fromtimestamp(T0 / 1000, UTC)
W0 = T0 - T0 % 300_000
MODEL = dict(run_id="", model_id="m", model_version="1")
WINDOW = dict(MODEL, window_size_s=300, segment="", window_start=W0, window_end=W0 + 300_000)

ROWS: dict[str, dict[str, Any]] = {
    "dead_letters": dict(
        run_id="", source_topic="driftline.predictions", source_partition=3, source_offset=42,
        source_timestamp=T0, error_kind="schema", error_message="missing model_id", payload='{"x":1}',
        payload_size=7, model_id="",
    ),
    "late_events": dict(
        MODEL, source_topic="driftline.labels", source_partition=1, source_offset=7, event_type="label",
        prediction_id="p1", event_time=T0, watermark_time=T0 + 60_000,
    ),
    "outcomes": dict(
        MODEL, prediction_id="p1", segment="region=eu", prediction_time=DT0,
        label_time=(DT0 + timedelta(seconds=1)).isoformat(), label_delay_ms=1000, predicted_label="cat",
        predicted_score=0.9, predicted_value=None, label="cat", label_value=None, correct=1, abs_error=None,
        features={"age": 31, "tags": ["a", "b"]},
    ),
    "feature_windows": dict(
        WINDOW, run_id="bt1", feature="age", feature_kind="numeric", count=100, missing=2, invalid=0,
        out_of_range=1, mean=30.5, variance=4.0, min=18.0, max=80.0, p50=30.0, p90=50.0, p99=None,
        bin_edges=[18.0, 30.0, 80.0], bin_labels=["[18,30)", "[30,80]"], histogram=[0.4, 0.6],
        reference_histogram=[0.5, 0.5], reference_id="ref1",
    ),
    "drift_scores": dict(
        WINDOW, feature="age", feature_kind="numeric", count=100, psi=0.3, ks_stat=0.2, ks_pvalue=0.001,
        ks_pvalue_adj=0.002, js_distance=0.1, wasserstein=1.5, chi2_stat=None, chi2_pvalue=None,
        chi2_pvalue_adj=None, drifted=True, drifted_by=["psi", "ks"], reference_id="ref1", config_hash="abc",
    ),
    "model_drift": dict(
        WINDOW, n_events=100, n_features=3, n_drifted=1, drifted=1, drifted_features=["age"],
        reference_id="ref1", config_hash="abc",
    ),
    "model_metrics": dict(
        MODEL, segment="", row_kind="interval", time=T0, interval_s=300, n_outcomes=50, n_outcomes_total=500,
        n_expired=2, label_coverage=0.96, accuracy=0.9, accuracy_ew=0.91, mae=None, mae_ew=None, rmse=None,
        rmse_ew=None, baseline=0.93, label_delay_p50_ms=1000.0, label_delay_p90_ms=2000.0,
        label_delay_p99_ms=5000.0, detector="adwin", alarm=0, alarms_total=0,
    ),
    "retrain_triggers": dict(
        MODEL, trigger_id="t1", reason="data_drift", message="3 of 4 windows drifted", window_start=T0,
        window_end=T0 + 1_200_000, triggered_at=T0 + 1_200_000, evidence={"windows": [T0], "psi": [0.3]},
        config_hash="abc",
    ),
    "retrain_jobs": dict(
        MODEL, trigger_id="t1", attempt=1, status="started",
        started_at=datetime(2023, 11, 14, 23, 0, tzinfo=timezone(timedelta(hours=2))), finished_at=None,
        duration_s=None, exit_code=None, log_path="/tmp/t1-1.log", message="", updated_at=T0,
    ),
    "reference_profiles": dict(
        MODEL, profile_id="ref1", created_at=T0, effective_from=0, source="training",
        profile={"features": {"age": {"bins": 2}}},
    ),
}


def _expected(value: Any) -> Any:
    """What reading a written value back (times as epoch ms, JSON parsed) gives."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, str) and value[:4].isdigit() and "T" in value:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    if isinstance(value, bool):
        return int(value)
    return value


@pytest.fixture
def store(settings: Settings) -> Iterator[tuple[Settings, Client]]:
    client = connect(settings)
    migrate(client, settings)
    yield settings, client
    client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse.database}`")
    client.close()


def _read_back(client: Client, db: str, table: str, final: bool = True) -> list[dict[str, Any]]:
    types = {name: type_name for name, type_name in client.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String}",
        parameters={"db": db, "t": table}).result_rows}
    select = ", ".join(f"toUnixTimestamp64Milli(`{n}`) AS `{n}`" if "DateTime64" in t else f"`{n}`"
                       for n, t in types.items())
    result = client.query(f"SELECT {select} FROM `{db}`.`{table}` {'FINAL' if final else ''}")
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def test_every_table_round_trips(store: tuple[Settings, Client]) -> None:
    settings, client = store
    db = settings.clickhouse.database
    writer = ClickHouseRowWriter(client, db, close_client=False)
    for table, row in ROWS.items():
        writer.write(table, [row])
    assert _read_back(client, db, "outcomes") == []  # buffered until flush
    writer.flush()
    for table, row in ROWS.items():
        [back] = _read_back(client, db, table)
        for column, value in row.items():
            got = orjson.loads(back[column]) if isinstance(value, dict) else back[column]
            assert got == _expected(value), (table, column)
    # the views see the live rows
    latest = client.query(f"SELECT feature, psi, drifted FROM `{db}`.latest_drift").result_rows
    assert latest == [("age", 0.3, 1)]
    accuracy = client.query(f"SELECT model_id, accuracy FROM `{db}`.accuracy_over_time").result_rows
    assert accuracy == [("m", 0.9)]


def test_reinserted_rows_collapse_under_final(store: tuple[Settings, Client]) -> None:
    settings, client = store
    db = settings.clickhouse.database
    writer = ClickHouseRowWriter(client, db, close_client=False)
    scores = [dict(ROWS["drift_scores"], feature=f"f{i}") for i in range(5)]
    for _ in range(2):  # a restarted stage re-produces identical rows
        writer.write("drift_scores", scores)
        writer.flush()
    assert len(_read_back(client, db, "drift_scores", final=False)) == 10
    assert len(_read_back(client, db, "drift_scores")) == 5

    newer = dict(ROWS["retrain_jobs"], status="succeeded", exit_code=0, updated_at=T0 + 5000)
    writer.write("retrain_jobs", [newer])
    writer.write("retrain_jobs", [ROWS["retrain_jobs"]])  # an older status arriving late loses
    writer.flush()
    [job] = _read_back(client, db, "retrain_jobs")
    assert (job["status"], job["exit_code"]) == ("succeeded", 0)


class _Id(str):
    """A str that can be weakly referenced, to see when ClickHouse-bound values are freed."""


def test_flushed_rows_are_freed_without_the_cyclic_gc(store: tuple[Settings, Client]) -> None:
    # The worker makes the cyclic GC rare (driftline.runtime.tune_gc): anything a flush leaves in a
    # reference cycle stays in memory. A sink grew ~100 MB per 10 minutes that way.
    settings, client = store
    db = settings.clickhouse.database
    writer = ClickHouseRowWriter(client, db, close_client=False)
    gc.collect()
    gc.disable()
    try:
        contexts_before = sum(isinstance(o, InsertContext) for o in gc.get_objects())
        refs = []
        for flush in range(5):
            ids = [_Id(f"p{flush}-{i}") for i in range(20)]
            refs += [weakref.ref(i) for i in ids]
            writer.write("outcomes", [dict(ROWS["outcomes"], prediction_id=i) for i in ids])
            writer.write("late_events", [ROWS["late_events"]])
            del ids
            writer.flush()
        assert [r for r in refs if r() is not None] == []
        # one reused context per (table, columns), not one per insert
        assert sum(isinstance(o, InsertContext) for o in gc.get_objects()) - contexts_before == 2
    finally:
        gc.enable()
    assert len(_read_back(client, db, "outcomes")) == 100


def test_omitted_columns_get_defaults_and_bad_rows_are_refused(store: tuple[Settings, Client]) -> None:
    settings, client = store
    db = settings.clickhouse.database
    writer = ClickHouseRowWriter(client, db, close_client=False)
    writer.write("outcomes", [dict(model_id="m", model_version="1", prediction_id="p9", prediction_time=T0)])
    with pytest.raises(ValueError, match="no column"):
        writer.write("outcomes", [dict(model_id="m", prediction_id="p8"), dict(model_id="m", bogus=1)])
    with pytest.raises(ValueError, match="not Nullable"):
        writer.write("outcomes", [dict(model_id=None, prediction_id="p7")])
    with pytest.raises(ValueError, match="unknown table"):
        writer.write("no_such_table", [{"a": 1}])
    writer.flush()
    [row] = _read_back(client, db, "outcomes")  # the refused batches left nothing behind
    assert (row["prediction_id"], row["prediction_time"], row["label_time"]) == ("p9", T0, 0)
    assert (row["run_id"], row["label"], row["predicted_score"], row["correct"]) == ("", "", None, None)


class _Sent:
    """A send's future, already acknowledged at ``offset`` of partition 0."""

    def __init__(self, offset: int) -> None:
        self.partition, self.offset = 0, offset

    def get(self, timeout: float | None = None) -> _Sent:
        return self


class _RecordingProducer:
    """Stands in for KafkaProducer where only the produced bytes matter."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []
        self.closed = False

    def send(self, topic: str, key: bytes, value: bytes) -> _Sent:
        self.messages.append((topic, key, value))
        return _Sent(len(self.messages) - 1)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_sink_messages_are_chunked_and_insert_back(store: tuple[Settings, Client]) -> None:
    settings, client = store
    producer = _RecordingProducer()
    sink = KafkaSinkRowWriter(producer, "sink-topic")
    rows = [dict(ROWS["dead_letters"], source_offset=i, payload="x" * 20_000, source_timestamp=DT0)
            for i in range(150)]
    sink.write("dead_letters", rows)
    sink.close()
    assert producer.closed and len(producer.messages) >= 4
    assert all(len(value) < MAX_SINK_MESSAGE_BYTES and key == b"dead_letters" and topic == "sink-topic"
               for topic, key, value in producer.messages)
    # the columns form stage 2 writes: one block of 37-38 rows a message (150 rows halved twice)
    assert [[block["n"] for block in orjson.loads(value)["blocks"]] for _, _, value in producer.messages] == [
        [37], [38], [37], [38]]
    writer = ClickHouseRowWriter(client, settings.clickhouse.database, close_client=False)
    mapper = RowMapper(TopicSettings(sink="sink-topic"))
    written = 0
    for topic, _, value in producer.messages:
        table, rows = mapper.rows(topic, value)
        writer.write(table, rows)
        written += len(rows)
    assert written == 150
    writer.flush()
    back = _read_back(client, settings.clickhouse.database, "dead_letters")
    assert sorted(r["source_offset"] for r in back) == list(range(150))
    assert {r["source_timestamp"] for r in back} == {T0}
    with pytest.raises(ValueError, match="sink message"):
        mapper.rows("sink-topic", b'{"table": "dead_letters", "rows": 3}')
    with pytest.raises(ValueError, match="not JSON"):
        mapper.rows("sink-topic", b"\xff")


def test_open_row_writer_uses_the_sink_topic_while_another_process_owns_the_engine(
    store: tuple[Settings, Client],
) -> None:
    settings, client = store
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers())
    admin.create_topics([NewTopic(settings.topics.sink, num_partitions=1, replication_factor=1)])
    admin.close()
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim_owner(settings.home, "http://127.0.0.1:9/query")  # then hand the record to the stand-in
        record = owner_path(settings.home)
        record.write_bytes(record.read_bytes().replace(str(os.getpid()).encode(), str(stand_in.pid).encode()))
        writer = open_row_writer(settings)
        assert isinstance(writer, KafkaSinkRowWriter)
        writer.write("model_drift", [ROWS["model_drift"], dict(ROWS["model_drift"], segment="region=eu")])
        writer.close()
    finally:
        stand_in.kill()
        stand_in.wait()

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(settings.topics.sink, 0)])
    consumer.seek_to_beginning()
    direct = ClickHouseRowWriter(client, settings.clickhouse.database, close_client=False)
    message = next(iter(consumer))  # both rows fit in one sink message
    consumer.close()
    table, rows = RowMapper(settings.topics).rows(settings.topics.sink, message.value)
    assert table == "model_drift" and len(rows) == 2
    direct.write(table, rows)
    direct.flush()
    back = _read_back(client, settings.clickhouse.database, "model_drift")
    assert sorted(r["segment"] for r in back) == ["", "region=eu"]


def test_the_migrations_columns_are_the_tables(store: tuple[Settings, Client]) -> None:
    """What the writer takes for "this version's columns" (parsed from the migration files) is what
    `db migrate` builds: a table it misreads would make the sink wait forever or dead-letter rows."""
    settings, client = store
    built: dict[str, set[str]] = {}
    for table, name in client.query(
            "SELECT table, name FROM system.columns WHERE database = {db:String}"
            " AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')",
            parameters={"db": settings.clickhouse.database}).result_rows:
        built.setdefault(table, set()).add(name)
    known = migration_columns()
    assert {table: set(names) for table, names in known.items()} == {
        table: names for table, names in built.items() if table in known}
    engines = dict(client.query("SELECT name, engine FROM system.tables WHERE database = {db:String}",
                                parameters={"db": settings.clickhouse.database}).result_rows)
    assert {engines[table] for table in set(built) - set(known) - {"schema_migrations"}} == {"View"}


def test_a_column_added_meanwhile_is_written_and_one_behind_waits(store: tuple[Settings, Client]) -> None:
    """The writer reads a table's columns again when a row names one it lacks: a column a migration
    added under a running writer is written (not refused), one the table lacks but the migrations
    create is SchemaBehind (nothing buffered), one nobody knows a RowRefused."""
    settings, client = store
    db = settings.clickhouse.database
    late = dict(ROWS["late_events"])
    client.command("ALTER TABLE late_events DROP COLUMN watermark_time")  # an upgrade before migrate
    writer = ClickHouseRowWriter(client, db, close_client=False)
    with pytest.raises(SchemaBehind, match=r"late_events lacks column\(s\) watermark_time.*db migrate"):
        writer.write("late_events", [dict(late, prediction_id="p2")])
    with pytest.raises(RowRefused, match=r"no column\(s\) bogus; .*upgrade the sink\?"):
        writer.write("late_events", [dict(late, watermark_time=None, bogus=1)])
    assert writer._buffered == 0
    client.command("ALTER TABLE late_events ADD COLUMN watermark_time DateTime64(3, 'UTC')")
    writer._read_at["late_events"] -= SCHEMA_REFRESH_S  # (rather than wait a second)
    writer.write("late_events", [dict(late, prediction_id="p3")])
    writer.flush()
    assert [row["prediction_id"] for row in _read_back(client, db, "late_events")] == ["p3"]


def test_a_write_that_fills_the_buffer_inserts_what_was_there_first(store: tuple[Settings, Client]) -> None:
    """The flush a full buffer makes comes before the call's rows are buffered: when it fails (a
    column dropped since), nothing of the call is buffered, so the caller can keep its rows and
    write them again (the sink holds a table behind its schema) without buffering them twice."""
    settings, client = store
    db = settings.clickhouse.database
    writer = ClickHouseRowWriter(client, db, close_client=False, max_buffer_rows=2)
    writer.write("late_events", [ROWS["late_events"]])
    client.command("ALTER TABLE late_events DROP COLUMN watermark_time")
    writer._read_at["late_events"] -= SCHEMA_REFRESH_S
    with pytest.raises(SchemaBehind, match="watermark_time"):
        writer.write("outcomes", [ROWS["outcomes"]])
    assert writer._buffered == 1  # the late row, kept for the next flush
    client.command("ALTER TABLE late_events ADD COLUMN watermark_time DateTime64(3, 'UTC')")
    writer.write("outcomes", [ROWS["outcomes"]])
    writer.flush()
    counts = [len(_read_back(client, db, table, final=False)) for table in ("late_events", "outcomes")]
    assert counts == [1, 1]


def test_an_insert_into_a_column_dropped_since_is_schema_behind(store: tuple[Settings, Client]) -> None:
    """Rows buffered while the column was there, the column dropped before the flush: the insert's
    refusal is SchemaBehind (the batch kept), and once the column is back the same flush lands it."""
    settings, client = store
    db = settings.clickhouse.database
    writer = ClickHouseRowWriter(client, db, close_client=False)
    writer.write("late_events", [ROWS["late_events"]])
    client.command("ALTER TABLE late_events DROP COLUMN watermark_time")
    writer._read_at["late_events"] -= SCHEMA_REFRESH_S
    with pytest.raises(SchemaBehind, match="watermark_time"):
        writer.flush()
    assert writer._buffered == 1
    client.command("ALTER TABLE late_events ADD COLUMN watermark_time DateTime64(3, 'UTC')")
    writer.flush()
    assert [row["prediction_id"] for row in _read_back(client, db, "late_events", final=False)] == ["p1"]
