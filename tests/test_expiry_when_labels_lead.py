"""A prediction that expires unlabeled is counted and listed even when the labels topic was read
ahead of the predictions topic by more than the label horizon (a backlog of predictions after an
outage, or a catch-up whose label partition came first).

Its expiry time (its time plus the horizon) is then behind the labels' watermark. Stage 1 used to
tell stage 2 that no outcome before the labels' watermark could still come, so stage 2 closed
that interval, and the ``expired`` record that came next was dropped: no ``n_expired``, no
``unjoined_events`` row, only stage 1's counter knew. In process, no broker.
"""

from __future__ import annotations

from collections import Counter

import orjson

from driftline.config import Settings
from driftline.operators.triggers import RetrainPolicy
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline
from driftline.pipeline.outcomes import OutcomeClock
from driftline.pipeline.records import Expired, Orphans, Progress
from driftline.pipeline.references import ProfileBook

START = 1_767_225_600_000
HORIZON_S = 60


def test_an_expiry_behind_the_labels_watermark_is_counted_and_listed() -> None:
    settings = Settings(topics={"partitions": 1, "model_events_partitions": 1},
                        windows={"sizes_s": [300], "allowed_lateness_s": 5, "metrics_interval_s": 300},
                        join={"label_horizon_s": HORIZON_S})
    offsets: Counter[str] = Counter()

    def record(topic: str, ts: int, value: dict[str, object]) -> RawRecord:
        offsets[topic] += 1
        return RawRecord(topic, 0, offsets[topic] - 1, ts, None, orjson.dumps(value))

    def prediction(pid: str, ts: int) -> RawRecord:
        return record(settings.topics.predictions, ts, {
            "prediction_id": pid, "model_id": "m", "timestamp": ts, "features": {"x": 1.0},
            "prediction": {"label": "a"}})

    seconds = range(990, 1_600)  # predictions each labelled 10 s later
    labels = [record(settings.topics.labels, START + s * 1000 + 10_000, {
        "prediction_id": f"p{s}", "label": "a", "timestamp": START + s * 1000 + 10_000}) for s in seconds]
    # one prediction no label answers, 490 s before the first labelled one: it expires at 560 s
    predictions = [prediction("lonely", START + 500_000)] + [prediction(f"p{s}", START + s * 1000)
                                                             for s in seconds]
    pipeline = InProcessPipeline(settings)
    pipeline.feed(labels)  # the labels topic read ahead
    pipeline.feed(predictions)
    pipeline.finish(START + 2_000_000)

    assert sum(shard.totals["expired_unlabeled"] for shard in pipeline.shards) == 1
    overall = [r for r in pipeline.rows["model_metrics"]
               if r["row_kind"] == "interval" and r["segment"] == ""]
    assert sum(r["n_outcomes"] for r in overall) == len(seconds)
    assert sum(r["n_expired"] for r in overall) == 1, overall
    unjoined = [(r["prediction_id"], r["reason"], r["time"]) for r in pipeline.rows["unjoined_events"]]
    assert unjoined == [("lonely", "no_label", START + 500_000 + HORIZON_S * 1000)]


def test_stage_two_counts_an_expiry_or_orphan_of_a_closed_interval() -> None:
    """Whatever brings one (a restarted shard's re-send, a shard whose progress ran ahead), an
    expiry or orphan label whose interval stage 2 closed already is counted, not dropped unseen."""
    settings = Settings(topics={"partitions": 1}, windows={"metrics_interval_s": 60})  # type: ignore[arg-type]
    clock = OutcomeClock(0, 1, settings, "", ProfileBook(), RetrainPolicy(settings.triggers, "h"))
    clock.advance(Progress(0, START + 120_000, START + 120_000, START + 120_000))
    clock.close()
    clock.add_expired(Expired(0, "m", "1", ["p1", "p2"], ["", ""], [START + 5_000, START + 130_000],
                              ["horizon", "evicted"]))
    clock.add_orphans(Orphans(0, "m", "", ["q"], [START + 7_000], ["no_prediction"], [0], [3]))
    assert clock.totals["given_up_after_close"] == 2  # p1 and q; p2's interval is open
