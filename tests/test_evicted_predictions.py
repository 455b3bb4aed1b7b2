"""Predictions the join evicts at ``join.max_pending`` are rows, not only a counter: stage 1 sends
them to stage 2 like expiries (reason 'evicted'), model_metrics counts them as ``n_evicted`` per
interval and segment, and ``label_coverage`` counts them as failed joins.

In process (stage 1 and stage 2 over in-memory topics): labels lag their predictions by more than
the pending bound holds, so the oldest pending predictions are evicted while the run goes on.
"""

from __future__ import annotations

import pickle
from collections import Counter

import orjson

from driftline.config import Settings
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline
from driftline.pipeline.outcomes import Bucket

START = 1_767_225_600_000
INTERVAL_S = 300
HORIZON_S = 600
MAX_PENDING = 25
N = 1_800  # one prediction a second for 30 minutes


def _settings() -> Settings:
    return Settings(
        topics={"partitions": 2, "model_events_partitions": 1},
        windows={"sizes_s": [INTERVAL_S], "allowed_lateness_s": 5, "metrics_interval_s": INTERVAL_S,
                 "segment_keys": ["region"]},
        join={"label_horizon_s": HORIZON_S, "max_pending": MAX_PENDING},
    )


def _records(settings: Settings) -> list[RawRecord]:
    """Every prediction gets its label 120 s later (about 60 pending per shard, over the bound of
    25) except every tenth, which gets none."""
    events: list[tuple[int, int, str, bytes]] = []
    for i in range(N):
        ts = START + i * 1_000
        pid = f"p{i}"
        region = "eu" if i % 2 else "us"
        events.append((ts, len(events), settings.topics.predictions, orjson.dumps({
            "prediction_id": pid, "model_id": "m", "timestamp": ts, "segment": {"region": region},
            "features": {"x": float(i % 7)}, "prediction": {"label": "a"}})))
        if i % 10:
            events.append((ts + 120_000, len(events), settings.topics.labels, orjson.dumps(
                {"prediction_id": pid, "label": "a", "timestamp": ts + 120_000})))
    events.sort()
    offsets: Counter[tuple[str, int]] = Counter()
    out = []
    for ts, order, topic, value in events:
        partition = order % settings.topics.partitions
        out.append(RawRecord(topic, partition, offsets[(topic, partition)], ts, None, value))
        offsets[(topic, partition)] += 1
    return out


def test_evicted_predictions_are_counted_per_interval_and_segment_and_against_coverage() -> None:
    settings = _settings()
    pipeline = InProcessPipeline(settings)
    records = _records(settings)
    for i in range(0, len(records), 500):
        pipeline.feed(records[i : i + 500])
    pipeline.finish(START + N * 1_000 + 2 * HORIZON_S * 1_000)

    evicted = sum(shard.join.counters["evicted_pending"] for shard in pipeline.shards)
    assert evicted > 0
    rows = [r for r in pipeline.rows["model_metrics"] if r["row_kind"] == "interval" and r["model_id"] == "m"]
    overall = [r for r in rows if r["segment"] == ""]
    assert sum(r["n_evicted"] for r in overall) == evicted
    # by segment too: the overall count splits over the two regions
    by_region = {seg: sum(r["n_evicted"] for r in rows if r["segment"] == seg)
                 for seg in ("region=eu", "region=us")}
    assert sum(by_region.values()) == evicted and all(by_region.values())
    # every prediction is accounted for exactly once: joined, expired or evicted
    assert sum(r["n_outcomes"] + r["n_expired"] + r["n_evicted"] for r in overall) == N
    for r in rows:
        failed = r["n_expired"] + r["n_evicted"] + r["n_orphan_labels"]
        if r["n_outcomes"] + failed:
            assert r["label_coverage"] == r["n_outcomes"] / (r["n_outcomes"] + failed)
    assert any(r["n_evicted"] and r["label_coverage"] < 1 for r in overall)
    # a label of an evicted prediction cannot join: it is an orphan label, also counted
    assert sum(r["n_orphan_labels"] for r in pipeline.rows["model_metrics"]
               if r["row_kind"] == "interval") > 0


def test_buckets_checkpointed_before_evictions_were_reported_restore() -> None:
    bucket = Bucket(expired={"p": ""})
    state = dict(bucket.__dict__)
    del state["evicted"]
    old = Bucket.__new__(Bucket)
    old.__setstate__(state)
    assert old.evicted == {} and old.expired == {"p": ""}
    assert pickle.loads(pickle.dumps(Bucket(evicted={"q": "region=eu"}))).evicted == {"q": "region=eu"}
