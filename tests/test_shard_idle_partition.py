"""An idle partition stops holding every window open (``ShardProcessor.follow_idle``).

Stage 2 closes a window when every stage-1 shard's progress has passed its end. A partition that
gets no traffic (few producers, a low-traffic hour) never moved its watermark, so no window closed
and no window's rows were written for anyone. Told its partitions are idle, a shard moves its
watermarks up to the furthest another partition delivered; an event that later arrives behind
them is a ``late_events`` row. In process, no broker: the live runner's part (deciding idleness on
wall time) is tested on the embedded broker in tests/test_streams_runner_idle.py.
"""

from __future__ import annotations

from collections import Counter

import orjson

from driftline.config import Settings
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline

START = 1_767_225_600_000  # a window boundary for 60 s windows
SETTINGS = Settings(topics={"partitions": 2, "model_events_partitions": 1},  # type: ignore[arg-type]
                    windows={"sizes_s": [60], "allowed_lateness_s": 5, "metrics_interval_s": 60})


class _Log:
    """Records as the topics would hold them, each on the partition it is given."""

    def __init__(self) -> None:
        self.offsets: Counter[tuple[str, int]] = Counter()

    def prediction(self, partition: int, pid: str, ts: int) -> RawRecord:
        topic = SETTINGS.topics.predictions
        offset = self.offsets[(topic, partition)]
        self.offsets[(topic, partition)] += 1
        value = {"prediction_id": pid, "model_id": "m", "timestamp": ts, "features": {"x": 1.0},
                 "prediction": {"label": "a"}}
        return RawRecord(topic, partition, offset, ts, pid.encode(), orjson.dumps(value))


def _closed_windows(pipeline: InProcessPipeline) -> list[int]:
    return sorted({r["window_start"] for r in pipeline.rows["feature_windows"] if r["segment"] == ""})


def _follow(pipeline: InProcessPipeline, shard: int) -> int:
    out = pipeline.shards[shard].follow_idle({SETTINGS.topics.predictions, SETTINGS.topics.labels})
    pipeline._route(out)  # as the runner produces them
    return len(out)


def test_an_idle_partition_follows_the_others_and_windows_close() -> None:
    log, pipeline = _Log(), InProcessPipeline(SETTINGS)
    # Partition 1 had one event at the start; then only partition 0 gets traffic, for 3 minutes.
    pipeline.feed([log.prediction(1, "early", START + 1_000)])
    pipeline.feed([log.prediction(0, f"p{s}", START + s * 1_000) for s in range(0, 180, 2)])
    assert _closed_windows(pipeline) == []  # partition 1's watermark holds every window open
    assert _follow(pipeline, 1) > 0
    assert pipeline.shards[1].pred_watermark == pipeline.shards[0].pred_watermark
    # the windows partition 0 has passed: 0-60 s and 60-120 s (120-180 s still open)
    assert _closed_windows(pipeline) == [START, START + 60_000]
    assert pipeline.shards[1].totals["idle_advances"] == 1
    assert _follow(pipeline, 1) == 0  # nothing new to follow: nothing moves, nothing is sent

    # Partition 1 comes back with an event behind its new watermark: late, and listed.
    pipeline.feed([log.prediction(1, "straggler", START + 100_000),
                   log.prediction(1, "fresh", START + 179_000)])
    late = [(r["prediction_id"], r["event_type"], r["source_partition"])
            for r in pipeline.rows["late_events"]]
    assert late == [("straggler", "prediction", 1)]


def test_nothing_to_follow_without_another_partitions_marks() -> None:
    # One partition: no other partition's watermark to follow, so nothing moves.
    one = Settings(topics={"partitions": 1, "model_events_partitions": 1},  # type: ignore[arg-type]
                   windows={"sizes_s": [60], "allowed_lateness_s": 5, "metrics_interval_s": 60})
    pipeline = InProcessPipeline(one)
    pipeline.feed([RawRecord(one.topics.predictions, 0, 0, START, b"a", orjson.dumps({
        "prediction_id": "a", "model_id": "m", "timestamp": START, "features": {"x": 1.0},
        "prediction": {"label": "a"}}))])
    before = pipeline.shards[0].pred_watermark
    assert pipeline.shards[0].follow_idle({one.topics.predictions, one.topics.labels}) == []
    assert pipeline.shards[0].pred_watermark == before
    # Two partitions, neither has had traffic: nothing delivered to follow.
    log, pipeline = _Log(), InProcessPipeline(SETTINGS)
    assert _follow(pipeline, 0) == 0
    # The other's one event: followed only as far as it went (no window passed).
    pipeline.feed([log.prediction(1, "only", START + 1_000)])
    assert _follow(pipeline, 0) > 0
    assert pipeline.shards[0].pred_watermark == pipeline.shards[1].pred_watermark == START + 1_000 - 5_000
    assert _closed_windows(pipeline) == []


def test_only_the_idle_topic_moves() -> None:
    log, pipeline = _Log(), InProcessPipeline(SETTINGS)
    pipeline.feed([log.prediction(0, f"p{s}", START + s * 1_000) for s in range(0, 130, 2)])
    label_mark = pipeline.shards[1].label_watermark
    out = pipeline.shards[1].follow_idle({SETTINGS.topics.predictions})
    pipeline._route(out)
    assert pipeline.shards[1].label_watermark == label_mark  # its labels partition was not idle
    assert _closed_windows(pipeline) == [START, START + 60_000]


def _silence(pipeline: InProcessPipeline, shard: int, mark: int) -> int:
    out = pipeline.shards[shard].follow_silence(mark)
    pipeline._route(out)  # as the runner produces them
    return len(out)


def test_a_silence_of_every_partition_closes_the_windows_before_it() -> None:
    # Both partitions have traffic for 100 s, then none: following each other moves nothing, so
    # without the silence advance the window 60-120 s would wait for the next events (a night).
    log, pipeline = _Log(), InProcessPipeline(SETTINGS)
    pipeline.feed([log.prediction(s % 2, f"p{s}", START + s * 1_000) for s in range(100)])
    assert _closed_windows(pipeline) == [START]
    _follow(pipeline, 0)  # partition 0's last event was a second before partition 1's
    assert _follow(pipeline, 0) == _follow(pipeline, 1) == 0
    stopped = [shard.prediction_marks() for shard in pipeline.shards]
    assert stopped == [(START + 94_000, START + 94_000)] * 2
    # A mark not ahead moves nothing and sends nothing.
    assert _silence(pipeline, 0, START + 94_000) == 0
    assert pipeline.shards[0].totals["silent_advances"] == 0
    # The runner's wall-time mark past the window's end, on every shard: the window closes.
    assert _silence(pipeline, 0, START + 121_000) > 0
    assert _closed_windows(pipeline) == [START]  # partition 1 still holds it
    assert _silence(pipeline, 1, START + 121_000) > 0
    assert _closed_windows(pipeline) == [START, START + 60_000]
    assert [shard.totals["silent_advances"] for shard in pipeline.shards] == [1, 1]
    # Traffic comes back: an event behind the advanced watermark is late, and listed.
    pipeline.feed([log.prediction(0, "behind", START + 110_000), log.prediction(0, "ahead", START + 130_000)])
    late = [(r["prediction_id"], r["event_type"]) for r in pipeline.rows["late_events"]]
    assert late == [("behind", "prediction")]
