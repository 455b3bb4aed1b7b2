"""A file replay that keeps the export's arrival (docs/real-data.md finding 5): with --file-order or
--record-time FIELD, events that came late are counted as late (late_events rows), exactly as a
replay of the topic that held the same records counts them; ordered by their own timestamps
(the default) none is."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftline.cli.main import main
from driftline.config import JoinSettings, Settings, WindowSettings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.batch import BatchSender, OutRecord
from driftline.kafka.clients import aiokafka_producer
from driftline.replay.files import Arrival, read_events
from driftline.replay.run import replay_files, replay_topics
from driftline.simulate import Scenario, write_jsonl
from driftline.simulate.scenario import LabelDelay, ModelSpec
from driftline.store.writer import MemoryRowWriter

START = (int(time.time()) // 86_400 - 1) * 86_400_000  # yesterday 00:00 UTC
LATENESS_S = 10
Line = dict[str, Any]


def _configure(base: Settings) -> Settings:
    return base.model_copy(update={
        "topics": base.topics.model_copy(update={"partitions": 2, "model_events_partitions": 2}),
        "windows": WindowSettings(sizes_s=[60], allowed_lateness_s=LATENESS_S, metrics_interval_s=60),
        "join": JoinSettings(label_horizon_s=120),
    })


def _live_export(out: Path) -> tuple[list[Line], list[Line]]:
    """Simulated traffic as a live consumer's export holds it: in arrival order, where 40
    predictions and 20 labels arrived 30 s after their own time (3 x the allowed lateness)."""
    scenario = Scenario(seed=5, start=START, duration_s=600, rate=10, models=[
        ModelSpec(model_id="m", n_numeric=3, n_categorical=1)], label_delay=LabelDelay(median_s=5, max_s=60))
    write_jsonl(scenario, out)
    rng = random.Random(3)

    def arrived(name: str, late: int) -> list[Line]:
        lines = [orjson.loads(raw) for raw in (out / name).read_bytes().splitlines() if raw.strip()]
        for i in sorted(rng.sample(range(500, len(lines) - 800), late), reverse=True):
            line = lines.pop(i)
            at = next(j for j in range(i, len(lines)) if lines[j]["timestamp"] >= line["timestamp"] + 30_000)
            lines.insert(at, line)
        return lines

    return arrived("predictions.jsonl", 40), arrived("labels.jsonl", 20)


def _write(path: Path, lines: list[Line]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def _arrival_times(lines: list[Line]) -> list[int]:
    """When each line arrived: the stream's clock, the latest event time so far."""
    clock, out = 0, []
    for line in lines:
        clock = max(clock, line["timestamp"])
        out.append(clock)
    return out


def _distinct(times: list[int]) -> list[int]:
    """The times made strictly increasing by a millisecond where they tie."""
    out: list[int] = []
    for t in times:
        out.append(max(t, out[-1] + 1) if out else t)
    return out


def _late(rows: dict[str, list[dict[str, Any]]]) -> list[tuple[Any, ...]]:
    return sorted((r["source_topic"], r["source_partition"], r["source_offset"], r["event_type"],
                   r["prediction_id"], r["event_time"], r["watermark_time"]) for r in rows["late_events"])


def test_file_order_and_record_time_field_read_the_arrival(tmp_path: Path) -> None:
    predictions, _ = _live_export(tmp_path / "sim")
    in_order = _write(tmp_path / "p.jsonl", predictions)
    stamped = [{**line, "kafka_timestamp": at} for line, at in zip(predictions, _arrival_times(predictions),
                                                                      strict=True)]
    shuffled = _write(tmp_path / "stamped.jsonl", sorted(stamped, key=lambda line: line["timestamp"]))
    by_file = read_events(in_order, Arrival(file_order=True))
    by_field = read_events(shuffled, Arrival(field="kafka_timestamp"))
    assert [e.timestamp_ms for e in by_file] == _arrival_times(predictions)
    assert sorted(e.timestamp_ms for e in by_field) == _arrival_times(predictions)
    # the export's field is not the event's: the values are the events as produced
    assert sorted(e.value for e in by_field) == sorted(orjson.dumps(line) for line in predictions)
    with pytest.raises(ValueError, match="not both"):
        read_events(in_order, Arrival(file_order=True, field="kafka_timestamp"))
    with pytest.raises(SystemExit):  # the CLI takes one or the other
        main(["replay", "--run-id", "x", "--predictions", str(in_order), "--file-order",
              "--record-time", "kafka_timestamp"])


@pytest.mark.integration
def test_file_replay_keeps_late_events_as_a_topic_replay_does(settings: Settings, tmp_path: Path) -> None:
    settings = _configure(settings)
    ensure_topics(settings)
    predictions, labels = _live_export(tmp_path / "sim")

    async def produce() -> None:  # the records as the live topics held them: arrival order and time
        producer = aiokafka_producer(settings)
        await producer.start()
        try:
            sender = BatchSender(producer)
            topics = settings.topics
            for topic, lines in ((topics.predictions, predictions), (topics.labels, labels)):
                records = [OutRecord(topic, line["prediction_id"].encode(), orjson.dumps(line), at)
                           for line, at in zip(lines, _arrival_times(lines), strict=True)]
                submitted, rejected = await sender.send(records)
                assert not rejected
                for batch in submitted:
                    await batch.future
        finally:
            await producer.stop()

    asyncio.run(produce())
    from_topic = MemoryRowWriter()
    asyncio.run(replay_topics(settings, "arrival", from_topic))
    late = _late(from_topic.rows)
    assert {t for t, *_ in late} == {settings.topics.predictions, settings.topics.labels}
    assert len([r for r in late if r[3] == "prediction"]) >= 30, late

    p, lb = _write(tmp_path / "p.jsonl", predictions), _write(tmp_path / "l.jsonl", labels)
    by_file = MemoryRowWriter()
    replay_files(settings, "arrival", by_file, p, lb, arrival=Arrival(file_order=True))
    assert _late(by_file.rows) == late
    assert _rows(by_file.rows) == _rows(from_topic.rows)  # and so every other table too

    # the arrival kept as a field (a producer's clock: distinct ms; equal ones would keep the
    # file's order, which here is not the arrival's), the lines in the events' own order
    stamped = MemoryRowWriter()
    replay_files(settings, "arrival", stamped, *[
        _write(tmp_path / f"stamped-{name}.jsonl", sorted(
            ({**line, "kafka_timestamp": at} for line, at in zip(lines, _distinct(_arrival_times(lines)),
                                                                  strict=True)),
            key=lambda line: line["timestamp"]))
        for name, lines in (("p", predictions), ("l", labels))], arrival=Arrival(field="kafka_timestamp"))
    assert _late(stamped.rows) == late

    by_event_time = MemoryRowWriter()  # the default: the events' own order, nothing late
    replay_files(settings, "arrival", by_event_time, p, lb)
    assert by_event_time.rows["late_events"] == []


def _rows(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    return {t: sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rs)
            for t, rs in rows.items() if rs}
