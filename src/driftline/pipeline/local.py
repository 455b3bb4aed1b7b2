"""Stage 1 -> stage 2 -> table rows in one process, with no broker in between.

Replays, backtests, benchmarks and the deterministic end-to-end tests run the very same stage
processors the live worker runs; only the transport differs. Records must carry the partition
they have (or would have) on the predictions/labels topics: lateness is per partition.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from driftline.config import Settings
from driftline.kafka.partitioner import partition_for_key
from driftline.operators.profile import ReferenceProfile, parse_profile
from driftline.operators.validate import RawRecord
from driftline.pipeline.model import ModelProcessor
from driftline.pipeline.records import Progress, broadcast
from driftline.pipeline.shard import ShardProcessor
from driftline.pipeline.stage import OutboundMessage
from driftline.pipeline.to_rows import INVALID_PROFILE, RowMapper, dead_letter_row, error_text


class LoggedEvent(Protocol):
    """An event with its Kafka key, value and timestamp (e.g. a simulator event)."""

    kind: str  # "labels" goes to the labels topic; anything else to predictions
    key: bytes
    value: bytes
    timestamp_ms: int


def logged_records(events: Iterable[LoggedEvent], settings: Settings) -> list[RawRecord]:
    """The events as the predictions/labels topics would hold them: partition by the default
    partitioner on the key, offsets in order of arrival per partition."""
    next_offset: Counter[tuple[str, int]] = Counter()
    records = []
    for event in events:
        topic = settings.topics.labels if event.kind == "labels" else settings.topics.predictions
        partition = partition_for_key(event.key, settings.topics.partitions)
        records.append(
            RawRecord(
                topic, partition, next_offset[(topic, partition)], event.timestamp_ms, event.key, event.value
            )
        )
        next_offset[(topic, partition)] += 1
    return records


class InProcessPipeline:
    """All shards of both stages, wired together in memory; rows accumulate per table."""

    def __init__(self, settings: Settings, run_id: str = "", profiles: Iterable[bytes] = (), *,
                 outcome_messages: bool = False) -> None:
        """``outcome_messages``: the outcomes topic's messages are kept as they came in
        :attr:`outcome_messages` (a writer that reads them in C inserts them without a dict a row:
        ``ClickHouseRowWriter.write_json_objects``), not as rows; they carry this ``run_id`` (the
        stages write it), so their rows are the mapper's."""
        self.settings = settings
        self.run_id = run_id
        self.outcome_messages: list[bytes] | None = [] if outcome_messages else None
        self.shards = [ShardProcessor(p, settings, run_id) for p in range(settings.topics.partitions)]
        self.models = [
            ModelProcessor(q, settings, run_id) for q in range(settings.topics.model_events_partitions)
        ]
        self.mapper = RowMapper(settings.topics, run_id=run_id)
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.triggers: list[bytes] = []
        self._model_events_offsets = [0] * len(self.models)
        self._repartition_offsets = [0] * len(self.shards)
        profile_records = [
            RawRecord(settings.topics.profiles, 0, i, 0, None, value) for i, value in enumerate(profiles)
        ]
        # held while the stages read them: each then finds this parse (parse_profile's cache is weak)
        parsed: list[ReferenceProfile] = []
        for record in profile_records:  # what the sink dead-letters, once; every stage skips it
            try:
                parsed.append(parse_profile(record.value or b""))
            except ValidationError as err:
                self.rows["dead_letters"].append(dead_letter_row(
                    record.topic, record.partition, record.offset, record.timestamp_ms, record.value,
                    INVALID_PROFILE, error_text(err)))
        if profile_records:
            for shard in self.shards:  # sequential feature detectors watch in stage 1
                self._route(shard.process(profile_records))
            for model in self.models:
                self._route(model.process(profile_records))

    @property
    def model_events_sent(self) -> int:
        """Messages stage 1 has sent stage 2 so far (on model-events, every partition)."""
        return sum(self._model_events_offsets)

    def feed(self, records: Sequence[RawRecord]) -> None:
        """Apply a micro-batch of predictions/labels records (any partitions, each in order)."""
        by_shard: dict[int, list[RawRecord]] = defaultdict(list)
        for record in records:
            by_shard[record.partition].append(record)
        for shard in sorted(by_shard):
            self._route(self.shards[shard].process(by_shard[shard]))

    def finish(self, end_ms: int) -> None:
        """The input ended at ``end_ms`` (exclusive): close every window ending by then (see
        :meth:`ShardProcessor.finish`; later ones stay open in the shards) and every outcome
        interval up to the one the input ends in, included."""
        for shard in self.shards:
            self._route(shard.finish(end_ms))
        # The interval holding the input's last labels closes too: its outcome rows are written
        # already, and each one must be counted by an interval (no later label can join it).
        interval_ms = self.settings.windows.metrics_interval_s * 1000
        intervals_end = end_ms + (-end_ms) % interval_ms
        for shard in self.shards:
            progress = Progress(shard.shard, shard.sent_progress[0], intervals_end, intervals_end)
            self._route(broadcast(self.settings.topics.model_events, len(self.models), progress))

    def _route(self, messages: list[OutboundMessage]) -> None:
        model_batches: dict[int, list[RawRecord]] = defaultdict(list)
        rerouted: dict[int, list[RawRecord]] = defaultdict(list)
        events_topic = self.settings.topics.model_events
        repartition_topic = self.settings.topics.repartition
        for m in messages:
            if m.topic == repartition_topic:  # re-routed to the shard that joins it (always addressed)
                p = m.partition if m.partition is not None else 0
                offset = self._repartition_offsets[p]
                rerouted[p].append(RawRecord(repartition_topic, p, offset, 0, m.key, m.value))
                self._repartition_offsets[p] += 1
                continue
            if m.topic == events_topic:
                q = (
                    m.partition
                    if m.partition is not None
                    else partition_for_key(m.key or b"", len(self.models))
                )
                offset = self._model_events_offsets[q]
                self._model_events_offsets[q] += 1
                model_batches[q].append(RawRecord(events_topic, q, offset, 0, m.key, m.value))
                continue
            if m.topic == self.settings.topics.retrain_triggers:
                self.triggers.append(m.value)
            elif m.topic == self.settings.topics.outcomes and self.outcome_messages is not None:
                self.outcome_messages.append(m.value)
                continue
            table, rows = self.mapper.rows(m.topic, m.value)
            self.rows[table].extend(rows)
        for q in sorted(model_batches):
            self._route(self.models[q].process(model_batches[q]))
        for p in sorted(rerouted):
            self._route(self.shards[p].process(rerouted[p]))
