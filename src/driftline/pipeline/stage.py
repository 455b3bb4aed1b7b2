"""What a pipeline stage looks like to the runner that feeds it from Kafka (or from a replay).

A stage processor owns the state of one *shard*: the same partition number of each of its
co-partitioned input topics. It is pure: records in, messages out, no I/O, no clocks. The
runner persists ``snapshot()`` together with the input offsets it has fed, after the outputs
produced so far were acknowledged; restoring that snapshot and re-feeding the records after
those offsets reproduces the same outputs (which downstream consumers treat idempotently).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import repeat
from typing import NamedTuple, Protocol, runtime_checkable

from driftline.operators.validate import RawRecord
from driftline.pipeline.gauges import Gauge
from driftline.pipeline.state import BlobFile

__all__ = ["FollowsIdle", "OutboundMessage", "RawRecord", "StageFactory", "StageProcessor", "keyed_messages"]


class OutboundMessage(NamedTuple):
    """A record to produce. ``topic`` is a settings.topics attribute value (a real topic name).

    A named tuple (immutable, hashable), not a frozen dataclass: stage 1 makes one per outcome, and
    a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, twice the cost."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None  # None: the producer's partitioner decides (by key)


def keyed_messages(
    topic: str, keys: Iterable[bytes | None], values: Iterable[bytes]
) -> list[OutboundMessage]:
    """An :class:`OutboundMessage` to ``topic`` per (key, value), partitioned by key.

    >>> [(m.topic, m.key, m.value, m.partition) for m in keyed_messages("t", [b"a", None], [b"1", b"2"])]
    [('t', b'a', b'1', None), ('t', None, b'2', None)]
    """
    # tuple.__new__ mapped over the fields: the named tuple's own __new__ is a Python call per
    # message, a third of the cost of stage 1's one message per outcome
    return list(map(tuple.__new__, repeat(OutboundMessage), zip(repeat(topic), keys, values, repeat(None))))


class StageProcessor(Protocol):
    def process(self, records: Sequence[RawRecord]) -> list[OutboundMessage]:
        """Apply a micro-batch of records (any mix of the shard's input partitions, each
        partition's records in offset order) and return what to produce, in order."""
        ...

    def snapshot(self) -> bytes:
        """Serialised state (the runner stores it with the offsets it has fed)."""
        ...

    def gauges(self) -> list[Gauge]:
        """Point-in-time figures for /metrics (pending joins, open windows, ...), with their labels."""
        ...


@runtime_checkable
class FollowsIdle(Protocol):
    """A processor whose watermarks may follow other partitions' while its own are idle (stage 1).
    Idleness is the runner's call (wall time); the processor stays free of clocks."""

    def watermark_topics(self) -> Collection[str]:
        """The input topics whose partitions have watermarks (the others' idleness means nothing)."""
        ...

    def follow_idle(self, topics: Collection[str]) -> list[OutboundMessage]:
        """This shard's partitions of ``topics`` are idle; returns what to produce."""
        ...

    def prediction_marks(self) -> tuple[int, int]:
        """The shard's predictions watermark and the furthest another partition delivered."""
        ...

    def follow_silence(self, mark: int) -> list[OutboundMessage]:
        """Every predictions partition is silent: move the predictions watermark up to ``mark``."""
        ...


@runtime_checkable
class WaitsForInputs(Protocol):
    """A processor that may ask the runner not to read some of its inputs for now (stage 1: the
    labels while they run ahead of a predictions backlog). The runner pauses and resumes the
    partitions; the processor only decides, from what is left to read."""

    def inputs_to_hold(self, unread: Mapping[str, int | None]) -> set[str]:
        """The input topics not to read from now, given the records still to read in each of this
        shard's partitions (None: not known yet)."""
        ...


class StageFactory(Protocol):
    """Builds a fresh processor for a shard, or restores one from a snapshot. A factory of
    incremental processors may say what applying one of their deltas' changed records costs
    before any restore measured it (``restore_change_s``, CPU seconds; the runner's default is
    stage 1's join records')."""

    def create(self, shard: int) -> StageProcessor: ...

    def restore(self, shard: int, blob: bytes | BlobFile) -> StageProcessor: ...
