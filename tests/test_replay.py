"""Replay: topic replay == the in-process pipeline on the same records == a file replay; time
bounds [from, to); runs under different configs stay apart in ClickHouse; re-runs are idempotent."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftline.cli.main import main
from driftline.config import DriftSettings, JoinSettings, Settings, TopicSettings, WindowSettings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.partitioner import partition_for_key
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.replay.engine import RunIdError, check_run_id
from driftline.replay.files import read_events, to_records
from driftline.replay.run import replay_files, replay_topics
from driftline.simulate import Scenario, generate, produce, write_jsonl
from driftline.simulate.scenario import CovariateDrift, LabelDelay, ModelSpec
from driftline.store.client import connect, database_name
from driftline.store.migrate import migrate
from driftline.store.writer import ClickHouseRowWriter, MemoryRowWriter, open_row_writer

# Yesterday 00:00 UTC: recent enough for the tables' TTL, minute-aligned for the windows.
START = (int(time.time()) // 86_400 - 1) * 86_400_000


def _configure(base: Settings, psi_threshold: float = 0.2, js_threshold: float = 0.1) -> Settings:
    return base.model_copy(update={
        "topics": base.topics.model_copy(update={"partitions": 2, "model_events_partitions": 2}),
        "windows": WindowSettings(sizes_s=[60], allowed_lateness_s=10, metrics_interval_s=60),
        "join": JoinSettings(label_horizon_s=120),
        "drift": DriftSettings(psi_threshold=psi_threshold, js_threshold=js_threshold),
    })


def _scenario() -> Scenario:
    return Scenario(
        seed=11, start=START, duration_s=600, rate=20,
        models=[ModelSpec(model_id="m", n_numeric=4, n_categorical=2,
                          covariate_drift=[CovariateDrift(feature="x1", at_s=300, magnitude=1.5)])],
        label_delay=LabelDelay(median_s=5, max_s=60),
        malformed_rate=0.01, malformed_kinds=["wrong_types", "nan_latency", "unknown_schema_version"],
    )


def _direct_records(settings: Settings, scenario: Scenario) -> list[RawRecord]:
    """The records as the default partitioner stores them (what produce() sends)."""
    return logged_records(generate(scenario), settings)


Rows = dict[str, list[dict[str, Any]]]


def _direct_rows(settings: Settings, records: list[RawRecord], run_id: str,
                 end_ms: int | None = None) -> Rows:
    """The in-process pipeline's rows, its input ended like a replay's: at ``end_ms``, else just
    after the last record timestamp."""
    pipeline = InProcessPipeline(settings, run_id)
    for i in range(0, len(records), 2000):
        pipeline.feed(records[i : i + 2000])
    pipeline.finish(end_ms if end_ms is not None else max(r.timestamp_ms for r in records) + 1)
    return pipeline.rows


def _canonical(rows: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    return {t: sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rs)
            for t, rs in rows.items() if rs}


# -- unit -------------------------------------------------------------------------------------------


def test_run_id_must_not_be_empty() -> None:
    for bad in ("", "  "):
        with pytest.raises(RunIdError):
            check_run_id(bad)
    assert main(["replay", "--run-id", "", "--predictions", "x.jsonl"]) == 2


def _event(pid: str, ts: int | str, **extra: Any) -> dict[str, Any]:
    return {"prediction_id": pid, "model_id": "m", "model_version": "1", "timestamp": ts,
            "features": {"x": 1.5, "c": "a"}, "prediction": {"label": "yes", "score": 0.9}, **extra}


def test_file_records_partitioned_ordered_and_bounded(tmp_path: Path) -> None:
    settings = Settings(topics=TopicSettings(partitions=3))
    lines = [_event("p2", 2000), _event("p1", 1000), _event("p3", "1970-01-01T00:00:03Z")]
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(orjson.dumps(d) for d in lines) + b"\n\n{bad json\n")
    label = {"prediction_id": "p1", "label": "yes", "timestamp": 1000}
    (tmp_path / "l.jsonl").write_bytes(orjson.dumps(label))
    preds, labels = read_events(tmp_path / "p.jsonl"), read_events(tmp_path / "l.jsonl")
    assert [(e.key, e.timestamp_ms) for e in preds] == [
        (b"p2", 2000), (b"p1", 1000), (b"p3", 3000), (None, 3000)]
    records = to_records(settings, preds, labels)
    assert [r.timestamp_ms for r in records] == sorted(r.timestamp_ms for r in records)
    # the prediction precedes its label at equal times; partitions as Kafka's default partitioner
    assert [(r.topic, r.key) for r in records[:2]] == [(settings.topics.predictions, b"p1"),
                                                       (settings.topics.labels, b"p1")]
    for r in records:
        assert r.partition == (partition_for_key(r.key, 3) if r.key else 0)
    per_partition: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in records:
        per_partition[(r.topic, r.partition)].append(r.offset)
    assert all(offsets == list(range(len(offsets))) for offsets in per_partition.values())
    bounded = to_records(settings, preds, labels, from_ms=1000, to_ms=3000)
    assert sorted(r.timestamp_ms for r in bounded) == [1000, 1000, 2000]  # 3000 excluded
    # offsets stay those of the whole file
    assert {r.key: r.offset for r in bounded} == {r.key: r.offset for r in records if r.key in (b"p1", b"p2")}


def test_parquet_json_string_and_struct_columns_equal_jsonl(tmp_path: Path) -> None:
    docs = [_event(f"p{i}", 1000 + i, segment={"region": "eu"}) for i in range(5)]
    as_json = pa.table({
        "prediction_id": [d["prediction_id"] for d in docs],
        "model_id": ["m"] * 5, "model_version": ["1"] * 5,
        "timestamp": [d["timestamp"] for d in docs],
        "features": [orjson.dumps(d["features"]).decode() for d in docs],
        "prediction": [orjson.dumps(d["prediction"]).decode() for d in docs],
        "segment": [orjson.dumps(d["segment"]).decode() for d in docs],
    })
    as_struct = pa.Table.from_pylist(docs)
    pq.write_table(as_json, tmp_path / "a.parquet")
    pq.write_table(as_struct, tmp_path / "b.parquet")
    expected = [orjson.loads(orjson.dumps(d)) for d in docs]
    for name in ("a.parquet", "b.parquet"):
        events = read_events(tmp_path / name)
        assert [orjson.loads(e.value) for e in events] == expected
        assert [(e.key, e.timestamp_ms) for e in events] == [(d["prediction_id"].encode(), d["timestamp"])
                                                             for d in docs]


def _window_starts(rows: Rows, table: str = "feature_windows") -> set[int]:
    return {r["window_start"] for r in rows[table] if r["segment"] == ""}


def test_bounded_input_writes_every_window_ending_by_its_end(tmp_path: Path) -> None:
    """60 s windows, lateness 10 s, 605 s of predictions: the live watermark (last event - 10 s)
    never passes 600 s, so the window [540 s, 600 s) stays open; a replay knows its input ended
    and writes it. The window [600 s, 660 s) extends past the end: listed as partial, not
    written. With --to at 660 s it is complete and written."""
    settings = _configure(Settings())
    scenario = _scenario().model_copy(update={"duration_s": 605, "malformed_rate": 0.0})
    write_jsonl(scenario, tmp_path)
    predictions, labels = tmp_path / "predictions.jsonl", tmp_path / "labels.jsonl"
    records = to_records(settings, read_events(predictions), [])
    last_ms = max(r.timestamp_ms for r in records)
    assert START + 600_000 <= last_ms < START + 605_000

    live = InProcessPipeline(settings, "e")
    live.feed(records)
    assert START + 540_000 not in _window_starts(live.rows)  # what the live pipeline holds open

    writer = MemoryRowWriter()
    result = replay_files(settings, "e", writer, predictions, None)
    assert result.end_ms == last_ms + 1
    assert _window_starts(writer.rows) == {START + i * 60_000 for i in range(10)}
    assert _window_starts(writer.rows, "model_drift") == {START + i * 60_000 for i in range(1, 10)}
    assert [(w.model_id, w.window_size_s, w.window_start, w.window_end, w.written)
            for w in result.partial_windows] == [("m", 60, START + 600_000, START + 660_000, False)]
    assert writer.flushed

    to_end = MemoryRowWriter()
    result = replay_files(settings, "e", to_end, predictions, None, to_ms=START + 660_000)
    assert result.partial_windows == []
    assert _window_starts(to_end.rows) == {START + i * 60_000 for i in range(11)}

    # labels (delays up to 60 s) end the input later, inside an outcome interval: every interval up
    # to that one is written, so each outcome row is counted by exactly one interval (its label time's)
    with_labels = MemoryRowWriter()
    result = replay_files(settings, "e", with_labels, predictions, labels)
    assert result.end_ms is not None and result.end_ms % 60_000 != 0
    intervals = {r["time"]: r["n_outcomes"] for r in with_labels.rows["model_metrics"]
                 if r["row_kind"] == "interval" and r["segment"] == ""}
    assert max(intervals) == result.end_ms - result.end_ms % 60_000 + 60_000 == result.intervals_end_ms
    by_label_time = Counter(o["label_time"] - o["label_time"] % 60_000 + 60_000
                            for o in with_labels.rows["outcomes"])
    assert max(o["label_time"] for o in with_labels.rows["outcomes"]) >= max(intervals) - 60_000
    assert by_label_time == {end: n for end, n in intervals.items() if n}

    # a replay from mid-window writes that window with what it has, and says so
    mid = MemoryRowWriter()
    result = replay_files(settings, "e", mid, predictions, None, from_ms=START + 90_000,
                          to_ms=START + 600_000)
    assert [(w.window_start, w.written) for w in result.partial_windows] == [(START + 60_000, True)]
    assert min(_window_starts(mid.rows)) == START + 60_000


@pytest.mark.integration
def test_a_replay_into_clickhouse_writes_its_outcome_messages_as_the_stages_made_them(
        settings: Settings, tmp_path: Path) -> None:
    """A replay whose writer reads JSON rows in C hands it the outcome messages (which carry the
    run's id) instead of a dict a row: the same outcome rows as a writer taking rows."""
    configured = _configure(settings)
    client = connect(configured)
    migrate(client, configured)
    write_jsonl(_scenario().model_copy(update={"malformed_rate": 0.0}), tmp_path)
    results, taken = {}, {}
    for run_id, in_c in (("rows", False), ("in_c", True)):
        writer = ClickHouseRowWriter(client, database_name(configured), close_client=False)
        writer.native_rows = in_c
        results[run_id] = replay_files(configured, run_id, writer, tmp_path / "predictions.jsonl",
                                       tmp_path / "labels.jsonl")
        taken[run_id] = writer.native_taken
    query = "SELECT * EXCEPT run_id FROM outcomes FINAL WHERE run_id = {r:String} ORDER BY prediction_id"
    rows = {run: client.query(query, parameters={"r": run}).result_rows for run in results}
    assert len(rows["in_c"]) == results["in_c"].rows["outcomes"] == results["rows"].rows["outcomes"] > 1000
    assert rows["in_c"] == rows["rows"]
    assert taken == {"rows": 0, "in_c": len(rows["in_c"])}


def test_replay_summary_lists_partial_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    scenario = _scenario().model_copy(update={"duration_s": 605, "malformed_rate": 0.0})
    write_jsonl(scenario, tmp_path)
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRIFTLINE_CLICKHOUSE_URL", f"chdb://{tmp_path / 'ch'}")
    monkeypatch.setenv("DRIFTLINE_TOPICS_PARTITIONS", "2")
    monkeypatch.setenv("DRIFTLINE_WINDOWS_SIZES_S", "[60]")
    assert main(["db", "migrate"]) == 0
    code = main(["replay", "--run-id", "s", "--no-progress",
                 "--predictions", str(tmp_path / "predictions.jsonl")])
    out = capsys.readouterr().out
    assert code == 0, out
    stamp = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ms / 1000))  # noqa: E731
    assert "windows left partial, extending past the end (not written):\n" \
           f"  m v1 60s {stamp(START + 600_000)} .. {stamp(START + 660_000)}\n" in out, out
    # the default 300 s metrics interval holding the end closes too
    assert f"outcome intervals closed up to {stamp(START + 900_000)}: the last one counts" in out, out


# -- integration -------------------------------------------------------------------------------------


@pytest.fixture
def produced(settings: Settings) -> tuple[Settings, Scenario]:
    configured = _configure(settings)
    ensure_topics(configured)
    scenario = _scenario()
    asyncio.run(produce(scenario, configured))
    return configured, scenario


@pytest.mark.integration
def test_topic_replay_equals_direct_pipeline_and_file_replay(produced: tuple[Settings, Scenario],
                                                             tmp_path: Path) -> None:
    settings, scenario = produced
    direct = _direct_rows(settings, _direct_records(settings, scenario), "r1")
    assert direct["model_drift"] and direct["dead_letters"] and direct["outcomes"]
    assert any(r["drifted"] for r in direct["model_drift"])

    from_topics = MemoryRowWriter()
    result = asyncio.run(replay_topics(settings, "r1", from_topics, batch_size=3000))
    assert result.records == sum(1 for _ in generate(scenario))
    assert _canonical(from_topics.rows) == _canonical(direct)

    write_jsonl(scenario, tmp_path)
    from_files = MemoryRowWriter()
    replay_files(settings, "r1", from_files, tmp_path / "predictions.jsonl", tmp_path / "labels.jsonl")
    assert _canonical(from_files.rows) == _canonical(direct)


@pytest.mark.integration
def test_time_bounds_include_from_and_exclude_to(produced: tuple[Settings, Scenario], tmp_path: Path) -> None:
    settings, scenario = produced
    lo, hi = START + 120_000, START + 420_000
    everything = _direct_records(settings, scenario)
    assert any(r.timestamp_ms == lo for r in everything) and any(r.timestamp_ms == hi for r in everything)
    inside = [r for r in everything if lo <= r.timestamp_ms < hi]

    writer = MemoryRowWriter()
    result = asyncio.run(replay_topics(settings, "bounded", writer, lo, hi))
    assert (result.records, result.first_ms) == (len(inside), lo)
    assert result.last_ms is not None and result.last_ms < hi
    assert _canonical(writer.rows) == _canonical(_direct_rows(settings, inside, "bounded", hi))

    write_jsonl(scenario, tmp_path)
    files = MemoryRowWriter()
    replay_files(settings, "bounded", files, tmp_path / "predictions.jsonl", tmp_path / "labels.jsonl",
                 lo, hi)
    assert _canonical(files.rows) == _canonical(writer.rows)


def _counts(settings: Settings, table: str) -> dict[str, tuple[int, tuple[str, ...]]]:
    client = connect(settings)
    try:
        rows = client.query(
            f"SELECT run_id, count(), groupUniqArray(config_hash) FROM {table} FINAL GROUP BY run_id"
        ).result_rows
    finally:
        client.close()
    return {run: (n, tuple(sorted(hashes))) for run, n, hashes in rows}


@pytest.mark.integration
def test_runs_with_different_configs_stay_apart_and_reruns_are_idempotent(
    produced: tuple[Settings, Scenario],
) -> None:
    base, _ = produced
    client = connect(base)
    try:
        migrate(client, base)
    finally:
        client.close()
    strict = _configure(base, psi_threshold=0.05)
    loose = _configure(base, psi_threshold=100.0, js_threshold=1.0)
    results = {}
    for run_id, settings in (("strict", strict), ("loose", loose), ("strict", strict)):
        writer = open_row_writer(settings)
        try:
            results[run_id] = asyncio.run(replay_topics(settings, run_id, writer))
        finally:
            writer.close()
    scores = _counts(base, "drift_scores")
    assert set(scores) == {"strict", "loose"}  # nothing live ('')
    for run_id, settings in (("strict", strict), ("loose", loose)):
        # row counts under FINAL equal one run's rows: the re-run replaced, not added
        assert scores[run_id] == (results[run_id].rows["drift_scores"], (settings.config_hash(),))
        assert _counts(base, "model_drift")[run_id][0] == results[run_id].rows["model_drift"]
    client = connect(base)
    try:
        result = client.query("SELECT run_id, countIf(drifted = 1) FROM drift_scores FINAL GROUP BY run_id")
        drifted = {str(run): int(n) for run, n in result.result_rows}
    finally:
        client.close()
    assert drifted["strict"] > drifted["loose"] == 0
