"""Replays end to end: from the topics or from export files, into a RowWriter.

Both read the predictions and labels whose record timestamps fall in ``[from, to)`` (inclusive
lower, exclusive upper bound; either may be open), keep every record's partition (lateness is
per partition, so replaying what a live worker processed reproduces its aggregates), merge the
two topics of each partition by record timestamp and feed the in-process pipeline in
micro-batches. The input has a known end — ``to``, else just after the last record timestamp
read — and when it is reached every window ending by then is closed and written (the live worker
would close them once later traffic moved its watermarks past them), and so is every outcome
interval up to the one the input ends in (its outcome rows are written, so an interval counts
them); windows extending past the end are left partial: not written, listed in the result. A replay
starting mid-stream starts with empty state: windows begun before ``from`` are written with the
events from ``from`` on and listed as partial too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from driftline.config import Settings
from driftline.operators.validate import RawRecord
from driftline.replay.engine import Replayer, ReplayResult, check_run_id
from driftline.replay.files import AT_EVENT_TIME, Arrival, read_events, to_records
from driftline.replay.kafka_source import (
    PartitionRange,
    RangeReader,
    partitions_of,
    plan_ranges,
    read_all_values,
    read_merged,
    replay_consumer,
)
from driftline.store.writer import RowWriter

DEFAULT_BATCH = 5000


class ReplayInputError(ValueError):
    """The input cannot be replayed as configured (missing topic, partition count mismatch)."""


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay is about to read (shown before it starts)."""

    total_records: int  # offsets (topics) or events (files) in the range; the progress total
    ranges: tuple[PartitionRange, ...]
    profiles: int  # reference profiles loaded


Progress = Callable[[int], None]


def _noop(_: int) -> None:
    return None


def _check_partitions(settings: Settings, topic: str, count: int) -> None:
    if count != settings.topics.partitions:
        raise ReplayInputError(
            f"{topic} has {count} partitions but topics.partitions is {settings.topics.partitions}: "
            "replay with the partition count the topics (and the live worker) use"
        )


def _feed_in_batches(replayer: Replayer, pending: list[RawRecord], batch_size: int, final: bool) -> None:
    while len(pending) >= batch_size or (final and pending):
        replayer.feed(pending[:batch_size])
        del pending[:batch_size]


async def replay_topics(
    settings: Settings,
    run_id: str,
    writer: RowWriter,
    from_ms: int | None = None,
    to_ms: int | None = None,
    *,
    batch_size: int = DEFAULT_BATCH,
    on_plan: Callable[[ReplayPlan], None] | None = None,
    on_progress: Progress = _noop,
) -> ReplayResult:
    """Replay the predictions/labels topics (see the module docstring), with every reference
    profile on the profiles topic; returns once every row is flushed to ``writer``."""
    check_run_id(run_id)
    topics = settings.topics
    # A consumer of their own: the profiles partition left assigned to the main one joined every
    # Fetch of the offset search for --from/--to, each waiting out the broker's fetch wait (an
    # hour of simulated traffic: ~30 s of planning instead of ~4).
    async with replay_consumer(settings) as consumer:
        profiles = await read_all_values(consumer, topics.profiles)
    async with replay_consumer(settings) as consumer:
        predictions = await partitions_of(consumer, topics.predictions)
        labels = await partitions_of(consumer, topics.labels)
        if not predictions:
            raise ReplayInputError(f"topic {topics.predictions} does not exist")
        _check_partitions(settings, topics.predictions, len(predictions))
        if labels:
            _check_partitions(settings, topics.labels, len(labels))
        ranges = await plan_ranges(consumer, predictions + labels, from_ms, to_ms)
    plan = ReplayPlan(sum(r.size for r in ranges), tuple(ranges), len(profiles))
    if on_plan is not None:
        on_plan(plan)
    replayer = Replayer(settings, run_id, writer, profiles, from_ms)
    pending: list[RawRecord] = []
    # The records through a consumer that reads them as RawRecords (the offset search above reads
    # aiokafka's records: it needs no more than their timestamps). None for empty ranges: aiokafka
    # could not stop a consumer assigned nothing.
    if plan.total_records:
        async with replay_consumer(settings, raw_records=True) as consumer:
            reader = RangeReader(consumer, ranges, from_ms, to_ms, max_records=batch_size)
            async for chunk in read_merged(reader, topics.predictions, [tp.partition for tp in predictions]):
                pending.extend(chunk.records)
                _feed_in_batches(replayer, pending, batch_size, final=False)
                on_progress(chunk.advanced)
    _feed_in_batches(replayer, pending, batch_size, final=True)
    return replayer.finish(to_ms)


def replay_files(
    settings: Settings,
    run_id: str,
    writer: RowWriter,
    predictions_path: Path,
    labels_path: Path | None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    *,
    profiles: Sequence[bytes] = (),
    batch_size: int = DEFAULT_BATCH,
    on_plan: Callable[[ReplayPlan], None] | None = None,
    on_progress: Progress = _noop,
    arrival: Arrival = AT_EVENT_TIME,
) -> ReplayResult:
    """Replay exported events (see :mod:`driftline.replay.files`) with the given profiles;
    ``arrival`` says how they arrived (by default at their own timestamps: none is late)."""
    check_run_id(run_id)
    labels = read_events(labels_path, arrival) if labels_path is not None else []
    records = to_records(settings, read_events(predictions_path, arrival), labels, from_ms, to_ms)
    if on_plan is not None:
        on_plan(ReplayPlan(len(records), (), len(profiles)))
    replayer = Replayer(settings, run_id, writer, profiles, from_ms)
    for i in range(0, len(records), batch_size):
        batch = records[i : i + batch_size]
        replayer.feed(batch)
        on_progress(len(batch))
    return replayer.finish(to_ms)
