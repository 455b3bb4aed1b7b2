"""Re-routing: labels and predictions join whichever partition their producers chose.

Predictions come from a murmur2 producer (the SDK) and partly from a CRC32 one (librdkafka's
default ``consistent_random``); labels from a CRC32 producer and partly keyless (any partition).
In process: every labelled prediction joins, orphan labels and expired predictions are rows,
and the shards, run as independent processes would be (own checkpoints, random batches, crashes
at random points, re-sent and reordered repartition records), produce exactly the rows of an
undisturbed run.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from driftline.config import Settings
from driftline.kafka.partitioner import partition_for_key
from driftline.operators.validate import RawRecord
from driftline.pipeline.gauges import by_series
from driftline.pipeline.local import InProcessPipeline
from driftline.pipeline.model import ModelProcessor
from driftline.pipeline.shard import ShardFactory, ShardProcessor
from driftline.pipeline.stage import OutboundMessage
from driftline.pipeline.to_rows import RowMapper

START = 1_767_225_600_000
HORIZON_S = 120
INTERVAL_S = 300
P = 4


def _settings() -> Settings:
    return Settings(
        topics={"partitions": P, "model_events_partitions": 2},
        windows={"sizes_s": [INTERVAL_S], "allowed_lateness_s": 10, "metrics_interval_s": INTERVAL_S},
        join={"label_horizon_s": HORIZON_S},
    )


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's ``consistent_random`` for a non-empty key."""
    return zlib.crc32(key) % partitions


@dataclass
class Traffic:
    records: list[RawRecord]  # every topic's log, in production order
    labelled: set[str]
    unlabelled: dict[str, tuple[str, int]]  # prediction_id -> (model, prediction time)
    orphans: dict[str, tuple[str, int]]  # label without prediction -> (model named, label time)
    end_ms: int


def _traffic(settings: Settings, seed: int = 3, minutes: int = 40) -> Traffic:
    """Two models, a prediction every 0.8 s; labels 1-60 s later for 90% of them; 40 labels for
    ids never predicted. A final 10 minutes of model 'tail' on every partition moves every
    watermark past the main traffic."""
    rng = random.Random(seed)
    topics = settings.topics
    events: list[tuple[int, int, str, bytes | None, dict[str, Any]]] = []  # (ts, order, topic, key, body)
    labelled: set[str] = set()
    unlabelled: dict[str, tuple[str, int]] = {}
    orphans: dict[str, tuple[str, int]] = {}
    n = minutes * 75
    for i in range(n):
        ts = START + i * 800
        model = "m" if i % 3 else "n"
        pid = f"{model}-{i}"
        body = {"prediction_id": pid, "model_id": model, "timestamp": ts,
                "features": {"x": rng.random()}, "prediction": {"label": rng.choice(("a", "b"))}}
        events.append((ts, len(events), topics.predictions, pid.encode(), body))
        if rng.random() < 0.9:
            label_ts = ts + rng.randint(1_000, 60_000)
            label: dict[str, Any] = {
                "prediction_id": pid, "label": rng.choice(("a", "b")), "timestamp": label_ts
            }
            key = None if rng.random() < 0.2 else pid.encode()
            events.append((label_ts, len(events), topics.labels, key, label))
            labelled.add(pid)
        else:
            unlabelled[pid] = (model, ts)
        if i % 56 == 0:
            ghost = f"ghost-{i}"
            named = "m" if i % 112 == 0 else ""
            orphan: dict[str, Any] = {"prediction_id": ghost, "label": "a", "timestamp": ts + 500}
            if named:
                orphan["model_id"] = named
            events.append((ts + 500, len(events), topics.labels, ghost.encode(), orphan))
            orphans[ghost] = (named, ts + 500)
    end = START + n * 800
    for j in range(750):  # the tail: every partition's watermarks move on
        ts = end + 60_000 + j * 800
        pid = f"tail-{j}"
        body = {"prediction_id": pid, "model_id": "tail", "timestamp": ts, "features": {"x": 0.5},
                "prediction": {"label": "a"}}
        events.append((ts, len(events), topics.predictions, pid.encode(), body))
        events.append((ts + 1_000, len(events), topics.labels, pid.encode(),
                       {"prediction_id": pid, "label": "a", "timestamp": ts + 1_000}))
    events.sort(key=lambda e: (e[0], e[1]))
    offsets: Counter[tuple[str, int]] = Counter()
    records = []
    for ts, order, topic, key, body in events:
        if key is None:
            partition = rng.randrange(P)  # keyless: the producer picks any partition
        elif topic == topics.predictions and order % 5:
            partition = partition_for_key(key, P)  # the SDK: murmur2
        else:
            partition = crc32_partition(key, P)  # confluent-kafka / librdkafka default
        records.append(RawRecord(topic, partition, offsets[(topic, partition)], ts, key, orjson.dumps(body)))
        offsets[(topic, partition)] += 1
    return Traffic(records, labelled, unlabelled, orphans, end)


def _canonical(rows: dict[str, list[dict[str, Any]]]) -> dict[str, set[bytes]]:
    return {t: {orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rs} for t, rs in rows.items() if rs}


def _undisturbed(settings: Settings, traffic: Traffic, batch: int = 700) -> InProcessPipeline:
    pipeline = InProcessPipeline(settings)
    for i in range(0, len(traffic.records), batch):
        pipeline.feed(traffic.records[i : i + batch])
    return pipeline


def test_every_label_joins_whatever_partition_it_was_produced_to() -> None:
    settings = _settings()
    traffic = _traffic(settings)
    moved = sum(
        1 for r in traffic.records
        if r.topic == settings.topics.labels and r.key and not r.key.startswith(b"ghost")
        and r.partition != partition_for_key(r.key, P)
    )
    assert moved > 1000  # most labels land away from their prediction's partition
    pipeline = _undisturbed(settings, traffic)
    joined = {r["prediction_id"] for r in pipeline.rows["outcomes"]}
    assert joined - {f"tail-{j}" for j in range(750)} == traffic.labelled

    metrics = [r for r in pipeline.rows["model_metrics"]
               if r["row_kind"] == "interval" and r["segment"] == "" and r["time"] <= traffic.end_ms]
    per_model: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for r in metrics:
        per_model[r["model_id"]].update(n=r["n_outcomes"], rerouted=r["n_rerouted"],
                                        expired=r["n_expired"], orphans=r["n_orphan_labels"])
        if r["n_outcomes"] and not r["n_expired"] and not r["n_orphan_labels"]:
            assert r["label_coverage"] == 1.0
    closed = {r["time"] for r in metrics}

    def in_closed(t: int) -> bool:
        return t - t % (INTERVAL_S * 1000) + INTERVAL_S * 1000 in closed

    # Expired predictions and orphan labels are rows, per model and interval.
    for model in ("m", "n"):
        expected = sum(
            1 for m, t in traffic.unlabelled.values() if m == model and in_closed(t + HORIZON_S * 1000)
        )
        assert expected > 10 and per_model[model]["expired"] == expected
        assert per_model[model]["rerouted"] > per_model[model]["n"] // 2
    for model in ("m", ""):
        expected = sum(1 for m, t in traffic.orphans.values() if m == model and in_closed(t))
        assert expected > 5 and per_model[model]["orphans"] == expected
    # Coverage counts every failed join.
    for r in metrics:
        failed = r["n_expired"] + r["n_orphan_labels"]
        if r["n_outcomes"] + failed:
            assert r["label_coverage"] == r["n_outcomes"] / (r["n_outcomes"] + failed)
    gauges = Counter[str]()
    for shard in pipeline.shards:
        gauges.update({k: int(v) for k, v in by_series(shard.gauges()).items() if "_total{kind=" in k})
    labels_in = sum(n for k, n in gauges.items() if k.startswith('join_inputs_total{kind="label"'))
    assert labels_in == sum(1 for r in traffic.records if r.topic == settings.topics.labels)
    unnamed = gauges['join_inputs_total{kind="label",model_id=""}']
    assert unnamed / 2 < gauges['rerouted_total{kind="label",model_id=""}'] < unnamed


class _Cluster:
    """Stage-1 shards as separate processes would run them: each reads its own predictions,
    labels and repartition partitions at its own pace, checkpoints on its own schedule, and loses
    everything since its checkpoint when it crashes (its outputs stay on the topics).

    A shard reads its predictions and labels up to an event time that moves on by up to 100 s a
    step (a shard reading one topic minutes ahead of the other is another matter: a prediction
    read after the labels watermark passed its horizon expires late, with or without re-routing);
    its repartition partition at any pace."""

    def __init__(self, settings: Settings, logs: dict[tuple[str, int], list[RawRecord]], seed: int) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.rng = random.Random(seed)
        self.logs = logs
        for p in range(P):
            logs.setdefault((self.topics.repartition, p), [])
        self.factory = ShardFactory(settings)
        self.shards = [self.factory.create(p) for p in range(P)]
        self.offsets = [dict.fromkeys(self._inputs(p), 0) for p in range(P)]
        self.read_until = [START] * P
        self.saved = [(s.snapshot(), dict(o), START) for s, o in zip(self.shards, self.offsets, strict=True)]
        self.model_events: list[list[RawRecord]] = [[] for _ in range(self.topics.model_events_partitions)]
        self.outputs: list[OutboundMessage] = []
        self.crashes = 0
        self.reordered = 0

    def _inputs(self, p: int) -> list[tuple[str, int]]:
        return [(self.topics.predictions, p), (self.topics.labels, p), (self.topics.repartition, p)]

    def _left(self, p: int) -> int:
        return sum(len(self.logs.get(tp, [])) - self.offsets[p][tp] for tp in self._inputs(p))

    def run(self) -> None:
        while any(self._left(p) for p in range(P)):
            p = self.rng.randrange(P)
            self.read_until[p] += self.rng.randint(0, 100_000)
            streams = []
            for tp in self._inputs(p):
                log, start = self.logs.get(tp, []), self.offsets[p][tp]
                if tp[0] == self.topics.repartition:
                    end = start + self.rng.randint(0, 400)
                else:
                    end = start
                    while end < len(log) and log[end].timestamp_ms <= self.read_until[p]:
                        end += 1
                take = log[start:end]
                self.offsets[p][tp] = start + len(take)
                streams.append(list(take))
            batch: list[RawRecord] = []
            while any(streams):  # a random interleaving keeping each partition's order
                stream = self.rng.choice([s for s in streams if s])
                batch.append(stream.pop(0))
            self._deliver(self.shards[p].process(batch))
            if self.rng.random() < 0.3:
                self.saved[p] = (self.shards[p].snapshot(), dict(self.offsets[p]), self.read_until[p])
            elif self.crashes < 40 and self.rng.random() < 0.15:
                self.crashes += 1
                blob, offsets, self.read_until[p] = self.saved[p]
                self.shards[p] = self.factory.restore(p, blob)
                self.offsets[p] = dict(offsets)

    def _deliver(self, messages: list[OutboundMessage]) -> None:
        """Append outputs to their topics. Now and then a repartition partition gets a later
        message before an earlier one and then both again: what a retried delivery writes when
        an earlier batch failed and a later one went through."""
        by_partition: dict[int, list[OutboundMessage]] = defaultdict(list)
        for m in messages:
            if m.topic == self.topics.repartition:
                assert m.partition is not None
                by_partition[m.partition].append(m)
            elif m.topic == self.topics.model_events:
                assert m.partition is not None
                log = self.model_events[m.partition]
                log.append(RawRecord(m.topic, m.partition, len(log), 0, m.key, m.value))
            else:
                self.outputs.append(m)
        for p, sent in by_partition.items():
            if len(sent) > 2 and self.rng.random() < 0.2:
                self.reordered += 1
                sent = [sent[-1], *sent]
            log = self.logs[(self.topics.repartition, p)]
            for m in sent:
                log.append(RawRecord(m.topic, p, len(log), 0, m.key, m.value))

    def rows(self, seed: int) -> dict[str, list[dict[str, Any]]]:
        """Stage 2 over the model-events logs (random batches), and every output as table rows."""
        rng = random.Random(seed)
        mapper = RowMapper(self.topics, run_id="")
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)

        def collect(messages: list[OutboundMessage]) -> None:
            for m in messages:
                if m.topic == self.topics.model_events:
                    continue  # stage 2 emits none
                table, out = mapper.rows(m.topic, m.value)
                rows[table].extend(out)

        collect(self.outputs)
        for q, log in enumerate(self.model_events):
            model = ModelProcessor(q, self.settings)
            i = 0
            while i < len(log):
                n = rng.randint(1, 500)
                collect(model.process(log[i : i + n]))
                i += n
        return rows


def test_rerouting_is_exact_under_independent_crashes_random_batches_and_resends() -> None:
    settings = _settings()
    traffic = _traffic(settings, seed=11, minutes=25)
    expected = _canonical(_undisturbed(settings, traffic).rows)
    assert len(expected["outcomes"]) > 1500 and expected["model_metrics"]
    logs: dict[tuple[str, int], list[RawRecord]] = defaultdict(list)
    for r in traffic.records:
        logs[(r.topic, r.partition)].append(r)
    for seed in (1, 2):
        cluster = _Cluster(settings, {tp: list(rs) for tp, rs in logs.items()}, seed)
        cluster.run()
        assert cluster.crashes >= 10 and cluster.reordered >= 5
        dropped = sum(s.inbox.duplicates for s in cluster.shards)
        assert dropped > 0  # re-sent repartition records were recognised
        got = _canonical(cluster.rows(seed))
        assert got.keys() == expected.keys()
        for table in expected:
            assert got[table] == expected[table], table


def test_a_restored_shard_keeps_its_forwarding_numbers() -> None:
    settings = _settings()
    traffic = _traffic(settings, seed=5, minutes=3)
    shard = ShardProcessor(0, settings)
    own = [r for r in traffic.records if r.partition == 0 and r.topic != settings.topics.repartition]
    first = shard.process(own[:100])
    restored = ShardFactory(settings).restore(0, shard.snapshot())
    again_a = shard.process(own[100:200])
    again_b = restored.process(own[100:200])
    forwarded = [m for m in first + again_a if m.topic == settings.topics.repartition]
    assert forwarded and again_a == again_b


def test_inbox_applies_each_record_once_in_order_and_watermarks_after_their_records() -> None:
    from driftline.pipeline.reroute import LABEL, PREDICTION, Forwarder, Inbox

    fwd = Forwarder(shard=2, partitions=3, topic="rp")
    sent = [fwd.forward(LABEL, 0, RawRecord("labels", 2, i, 0, None, b"{}"), f"p{i}") for i in range(4)]
    mark = fwd.progress({PREDICTION: 7_000, LABEL: 9_000})[0]  # to shard 0: covers the 4 labels
    inbox = Inbox(shard=0, partitions=3)
    fwd1 = Forwarder(shard=1, partitions=3, topic="rp")  # shard 1 forwarded nothing, it is at 20 s
    inbox.accept([RawRecord("rp", 0, 0, 0, None, fwd1.progress({PREDICTION: 8_000, LABEL: 20_000})[0].value)])
    as_read = [sent[0], mark, sent[2], sent[1], sent[2], sent[3]]  # a retried delivery's order
    log = [RawRecord("rp", 0, i + 1, 0, m.key, m.value) for i, m in enumerate(as_read)]

    assert [r.offset for r in inbox.accept(log[:3])[LABEL]] == [0]  # 2 waits for 1
    assert inbox.watermark(LABEL, local=50_000) < 9_000  # its records are not all in yet
    assert [r.offset for r in inbox.accept(log[3:5])[LABEL]] == [1, 2] and inbox.duplicates == 1
    assert inbox.watermark(LABEL, local=50_000) < 9_000
    assert [r.offset for r in inbox.accept(log[5:])[LABEL]] == [3]
    assert (inbox.watermark(LABEL, local=50_000), inbox.watermark(PREDICTION, local=6_000)) == (9_000, 6_000)
    assert inbox.watermark(LABEL, local=4_000) == 4_000


def test_a_bounded_replay_counts_every_orphan_and_expiry_by_its_end() -> None:
    settings = _settings()
    traffic = _traffic(settings, seed=8, minutes=20)
    main = [r for r in traffic.records if r.timestamp_ms < traffic.end_ms + 60_000]  # no tail
    end = START + 20 * 60_000
    pipeline = InProcessPipeline(settings)
    for i in range(0, len(main), 900):
        pipeline.feed(main[i : i + 900])
    pipeline.finish(end)
    rows = [r for r in pipeline.rows["model_metrics"] if r["row_kind"] == "interval" and r["segment"] == ""]
    assert {r["time"] for r in rows} == {START + k * INTERVAL_S * 1000 for k in range(1, 5)}
    orphans = Counter[str]()
    expired = Counter[str]()
    for r in rows:
        orphans[r["model_id"]] += r["n_orphan_labels"]
        expired[r["model_id"]] += r["n_expired"]
    assert orphans == Counter(m for m, t in traffic.orphans.values() if t < end)
    assert expired == Counter(m for m, t in traffic.unlabelled.values() if t + HORIZON_S * 1000 < end)


def test_a_resent_prediction_that_needs_rerouting_counts_once_in_the_windows() -> None:
    """An at-least-once producer with librdkafka's partitioner re-sends predictions: the copies
    land on the same (CRC32) partition, are re-routed, and count in the windows once, as a re-sent
    prediction on its murmur2 partition does."""
    settings = _settings()
    traffic = _traffic(settings, seed=4, minutes=12)
    resent: list[RawRecord] = []
    offsets: Counter[tuple[str, int]] = Counter()
    for r in traffic.records:
        copies = 2 if r.topic == settings.topics.predictions and r.offset % 3 == 0 else 1
        for _ in range(copies):
            resent.append(RawRecord(r.topic, r.partition, offsets[(r.topic, r.partition)], r.timestamp_ms,
                                    r.key, r.value))
            offsets[(r.topic, r.partition)] += 1
    rerouted_copies = sum(
        1 for r in resent
        if r.topic == settings.topics.predictions and r.key and r.partition != partition_for_key(r.key, P)
    )
    assert rerouted_copies > 300

    def windows(records: list[RawRecord]) -> dict[str, set[bytes]]:
        pipeline = InProcessPipeline(settings)
        for i in range(0, len(records), 500):
            pipeline.feed(records[i : i + 500])
        return _canonical({t: pipeline.rows[t] for t in ("feature_windows", "model_drift", "outcomes")})

    assert windows(resent) == windows(traffic.records)
