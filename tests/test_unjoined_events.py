"""Every event the join did not turn into an outcome is an ``unjoined_events`` row with its id and
reason, not only a count in model_metrics: predictions without a label in the horizon
('no_label'), predictions evicted at ``join.max_pending`` ('evicted'), labels no prediction joined
('no_prediction'), and exact re-sends ('exact_resend').

In process (stage 1 and stage 2 over in-memory topics), then the rows through the ClickHouse writer
into the real engine.
"""

from __future__ import annotations

import time
from collections import Counter

import orjson
import pytest

from driftline.config import Settings
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline
from driftline.store.client import connect
from driftline.store.migrate import migrate
from driftline.store.writer import ClickHouseRowWriter

START = (int(time.time()) // 86_400 - 1) * 86_400_000  # yesterday: inside the table's TTL
INTERVAL_S = 300
HORIZON_S = 600
N = 1_800  # one prediction a second for 30 minutes


def _settings(max_pending: int = 2_000_000, expired_rows: bool = True) -> Settings:
    return Settings(
        topics={"partitions": 2, "model_events_partitions": 1},
        windows={"sizes_s": [INTERVAL_S], "allowed_lateness_s": 5, "metrics_interval_s": INTERVAL_S,
                 "segment_keys": ["region"]},
        join={"label_horizon_s": HORIZON_S, "max_pending": max_pending, "expired_rows": expired_rows},
    )


def _records(settings: Settings) -> list[RawRecord]:
    """Labels 120 s after their predictions, except every tenth prediction (no label); every 50th
    label names a prediction id no one sent; every 40th prediction and every 30th label is re-sent
    byte for byte 5 s later."""
    events: list[tuple[int, int, str, bytes]] = []

    def add(ts: int, topic: str, value: bytes) -> None:
        events.append((ts, len(events), topic, value))

    for i in range(N):
        ts = START + i * 1_000
        prediction = orjson.dumps({
            "prediction_id": f"p{i}", "model_id": "m", "timestamp": ts,
            "segment": {"region": "eu" if i % 2 else "us"},
            "features": {"x": float(i % 7)}, "prediction": {"label": "a"}})
        add(ts, settings.topics.predictions, prediction)
        if i % 40 == 0:
            add(ts + 5_000, settings.topics.predictions, prediction)
        if i % 10:
            label_ts = ts + 120_000
            pid = f"ghost{i}" if i % 50 == 1 else f"p{i}"
            label = orjson.dumps({"prediction_id": pid, "model_id": "m", "label": "a", "timestamp": label_ts})
            add(label_ts, settings.topics.labels, label)
            if i % 30 == 1:
                add(label_ts + 5_000, settings.topics.labels, label)
    events.sort()
    offsets: Counter[tuple[str, int]] = Counter()
    out = []
    for ts, order, topic, value in events:
        partition = order % settings.topics.partitions
        out.append(RawRecord(topic, partition, offsets[(topic, partition)], ts, None, value))
        offsets[(topic, partition)] += 1
    return out


def _run(settings: Settings, batch: int = 500) -> InProcessPipeline:
    pipeline = InProcessPipeline(settings)
    records = _records(settings)
    for i in range(0, len(records), batch):
        pipeline.feed(records[i : i + batch])
    pipeline.finish(START + N * 1_000 + 2 * HORIZON_S * 1_000)
    return pipeline


def _by_reason(rows: list[dict]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row["reason"], set()).add(row["prediction_id"])
    return found


def test_each_prediction_is_an_outcome_or_an_unjoined_row_and_each_orphan_label_a_row() -> None:
    pipeline = _run(_settings())
    unjoined = pipeline.rows["unjoined_events"]
    found = _by_reason(unjoined)
    no_label = {f"p{i}" for i in range(N) if i % 10 == 0}
    ghosts = {f"ghost{i}" for i in range(N) if i % 10 and i % 50 == 1}
    assert found["no_label"] == no_label | {f"p{i}" for i in range(N) if i % 10 and i % 50 == 1}
    assert found["no_prediction"] == ghosts
    assert "evicted" not in found
    # a ghost label re-sent is a second label no prediction joined: a row of its own (its record)
    orphan_rows = [r for r in unjoined if r["reason"] == "no_prediction"]
    resent_ghosts = sum(1 for i in range(N) if i % 10 and i % 50 == 1 and i % 30 == 1)
    assert len(orphan_rows) == len(ghosts) + resent_ghosts > len(ghosts)
    assert len({(r["prediction_id"], r["source_partition"], r["source_offset"]) for r in orphan_rows}) \
        == len(orphan_rows) and all(r["source_offset"] >= 0 for r in orphan_rows)
    assert len(orphan_rows) == sum(shard.join.counters["orphan_labels"] for shard in pipeline.shards)
    joined = {row["prediction_id"] for row in pipeline.rows["outcomes"]}
    assert joined.isdisjoint(found["no_label"]) and len(joined) + len(found["no_label"]) == N
    for row in unjoined:
        if row["reason"] == "exact_resend":
            continue  # test_exact_resends_are_rows_with_their_ids_and_records
        if row["event_type"] == "prediction":
            i = int(row["prediction_id"][1:])
            assert row["time"] == START + i * 1_000 + HORIZON_S * 1_000  # given up at the horizon
            assert row["segment"] == ("region=eu" if i % 2 else "region=us")
            assert row["model_version"] == "1"  # the prediction's (the simulator's default version)
        else:
            assert row["segment"] == "" and row["event_type"] == "label" and row["model_version"] == ""
        assert row["metrics_time"] % (INTERVAL_S * 1_000) == 0 and row["time"] < row["metrics_time"]
    # the rows and model_metrics' counters tell the same story, interval by interval
    metrics = [r for r in pipeline.rows["model_metrics"]
               if r["row_kind"] == "interval" and r["segment"] == ""]
    counted = Counter()
    for r in metrics:
        counted[("no_label", r["time"])] += r["n_expired"]
        counted[("no_prediction", r["time"])] += r["n_orphan_labels"]
    rows = Counter((row["reason"], row["metrics_time"]) for row in unjoined
                   if row["reason"] != "exact_resend")
    assert +counted == +rows


def test_exact_resends_are_rows_with_their_ids_and_records() -> None:
    pipeline = _run(_settings())
    resends = [r for r in pipeline.rows["unjoined_events"] if r["reason"] == "exact_resend"]
    predictions = sorted(r["prediction_id"] for r in resends if r["event_type"] == "prediction")
    labels = sorted(r["prediction_id"] for r in resends if r["event_type"] == "label")
    assert predictions == sorted(f"p{i}" for i in range(N) if i % 40 == 0)
    # re-sent labels that joined (a ghost label re-sent is an orphan: the test above)
    assert labels == sorted(f"p{i}" for i in range(N) if i % 30 == 1 and i % 50 != 1)
    assert all(r["source_partition"] >= 0 and r["source_offset"] >= 0 and r["model_id"] == "m"
               for r in resends)
    for r in resends:
        i = int(r["prediction_id"][1:])
        assert r["time"] == START + i * 1_000 + (120_000 if r["event_type"] == "label" else 0)
        assert r["segment"] == ("region=eu" if i % 2 else "region=us")
    # model_metrics' duplicates rows count the same re-sends, interval by interval
    counted = Counter()
    for m in pipeline.rows["model_metrics"]:
        if m["row_kind"] == "duplicates" and m["segment"] == "":
            counted[("prediction", m["time"])] += m["n_duplicate_predictions"]
            counted[("label", m["time"])] += m["n_duplicate_labels"]
    assert +counted == Counter((r["event_type"], r["metrics_time"]) for r in resends)


def test_evicted_predictions_and_their_labels_are_rows() -> None:
    pipeline = _run(_settings(max_pending=25))
    evicted = sum(shard.join.counters["evicted_pending"] for shard in pipeline.shards)
    assert evicted > 0
    found = _by_reason(pipeline.rows["unjoined_events"])
    assert len(found["evicted"]) == evicted
    # a label that came for an evicted prediction joins nothing: it is an 'evicted' row too
    labelled = {f"p{i}" for i in range(N) if i % 10 and i % 50 != 1}
    rows = pipeline.rows["unjoined_events"]
    by_kind = {kind: {r["prediction_id"] for r in rows if (r["reason"], r["event_type"]) == ("evicted", kind)}
               for kind in ("prediction", "label")}
    assert by_kind["label"] == by_kind["prediction"] & labelled and by_kind["label"]
    assert not by_kind["label"] & found.get("no_prediction", set())


def test_expired_rows_off_keeps_the_counts_and_the_other_rows() -> None:
    on, off = _run(_settings()), _run(_settings(expired_rows=False))
    reasons = [{r["reason"] for r in p.rows["unjoined_events"]} for p in (on, off)]
    assert reasons[1] == reasons[0] - {"no_label"} and "no_label" in reasons[0]
    counts = [sorted((r["time"], r["segment"], r["n_expired"]) for r in p.rows["model_metrics"]
                     if r["row_kind"] == "interval") for p in (on, off)]
    assert counts[0] == counts[1]


def test_rows_do_not_depend_on_batching() -> None:
    def canonical(p: InProcessPipeline) -> list[tuple]:
        # Which of two byte-identical copies on two partitions is the re-send depends on which the
        # joining shard met first (its partitions' interleaving), as for model_metrics' counts.
        return sorted(tuple(sorted((k, v) for k, v in r.items() if r["reason"] != "exact_resend"
                                   or not k.startswith("source_")))
                      for r in p.rows["unjoined_events"])

    assert canonical(_run(_settings(), batch=500)) == canonical(_run(_settings(), batch=37))


@pytest.mark.integration
def test_rows_land_in_clickhouse_and_resends_collapse(settings: Settings) -> None:
    rows = _run(_settings()).rows["unjoined_events"]
    client = connect(settings)
    db = settings.clickhouse.database
    try:
        migrate(client, settings)
        writer = ClickHouseRowWriter(client, db, close_client=False)
        for _ in range(2):  # a restarted stage re-produces identical rows
            writer.write("unjoined_events", rows)
            writer.flush()
        table = f"`{db}`.unjoined_events"
        assert client.query(f"SELECT count() FROM {table} FINAL").result_rows == [(len(rows),)]
        by_reason = client.query(
            f"SELECT event_type, reason, count() FROM {table} FINAL GROUP BY ALL ORDER BY ALL").result_rows
        expected = Counter((r["event_type"], r["reason"]) for r in rows)
        assert by_reason == sorted((k[0], k[1], n) for k, n in expected.items())
        ghost = "ghost151"  # a label no prediction joined, and its re-send: two records, two rows
        found = client.query(
            "SELECT model_id, toUnixTimestamp64Milli(time), source_partition, source_offset"
            f" FROM {table} FINAL WHERE prediction_id = %(p)s ORDER BY ALL",
            parameters={"p": ghost}).result_rows
        assert found == sorted(("m", r["time"], r["source_partition"], r["source_offset"]) for r in rows
                               if r["prediction_id"] == ghost) and len(found) == 2
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{db}`")
