"""Consumed Kafka records as the :class:`RawRecord` every processor takes (worker, replay, readers).

A consumer made with ``value_deserializer=RAW_RECORDS`` (``aiokafka_consumer(...,
raw_records=True)``) hands :class:`RawRecord` objects out of ``getmany`` itself: aiokafka builds a
``ConsumerRecord`` per record (eleven fields, the headers copied into a tuple) that the worker then
copied into a ``RawRecord`` and dropped, ~0.8 of the ~3 CPU-us a record its fetch path cost
(docs/scaling.md, session 49). aiokafka has no public hook for the record it builds, so
:func:`install` subclasses its fetcher's ``PartitionRecords``: a partition's records made for a
consumer with the marker are built by :func:`_raw_builder`; every other consumer's are aiokafka's
own, by aiokafka's own code (the subclass only looks at the marker once a fetched partition).
Where aiokafka's internals differ from what the subclass expects, nothing is patched and the
marker is an identity deserializer: ``getmany`` returns ``ConsumerRecord`` objects again and
:func:`as_raw` converts them, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from aiokafka.structs import ConsumerRecord

from driftline.operators.validate import RawRecord


class _RawRecordsMarker:
    """The value deserializer that asks for :class:`RawRecord` objects; as a deserializer, the
    identity (what aiokafka calls where the fetch path is not patched)."""

    def __call__(self, value: bytes | None) -> bytes | None:
        return value

    def __repr__(self) -> str:
        return "RAW_RECORDS"


RAW_RECORDS: Final = _RawRecordsMarker()


def to_raw(record: ConsumerRecord[bytes, bytes]) -> RawRecord:
    """An aiokafka ConsumerRecord as the RawRecord the processors take."""
    return RawRecord(record.topic, record.partition, record.offset, record.timestamp, record.key,
                     record.value)


def as_raw(records: Sequence[Any]) -> list[RawRecord]:
    """A fetched partition's records as RawRecords: the list itself where the fetch path made them."""
    if records and type(records[0]) is RawRecord:
        return records if isinstance(records, list) else list(records)
    return [to_raw(r) for r in records]


def _raw_builder(topic: str, partition: int) -> Callable[[Any, Any], RawRecord]:
    """``PartitionRecords._consumer_record`` for one partition: aiokafka's C ``DefaultRecord`` (or
    legacy record) straight to a RawRecord."""
    def build(_tp: Any, record: Any) -> RawRecord:
        return RawRecord(topic, partition, record.offset, record.timestamp, record.key, record.value)
    return build


def install() -> bool:
    """Patch aiokafka's fetcher so a consumer with the :data:`RAW_RECORDS` marker gets RawRecords.

    Idempotent; False (and nothing patched) where aiokafka's fetcher is not the one this was written
    against (aiokafka 0.10-0.14: ``PartitionRecords`` builds each record with ``_consumer_record``)."""
    try:
        from aiokafka.consumer import fetcher
    except ImportError:  # pragma: no cover - aiokafka is a dependency
        return False
    base = getattr(fetcher, "PartitionRecords", None)
    if base is None or not callable(getattr(base, "_consumer_record", None)):
        return False
    if getattr(base, "driftline_raw_records", False):
        return True

    class PartitionRecords(base):  # type: ignore[misc, valid-type]
        driftline_raw_records = True

        def __init__(self, tp: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(tp, *args, **kwargs)
            if getattr(self, "_value_deserializer", None) is RAW_RECORDS:
                # an instance attribute: aiokafka's record loop looks the method up per record
                self._consumer_record = _raw_builder(tp.topic, tp.partition)

    PartitionRecords.__qualname__ = base.__qualname__
    PartitionRecords.__module__ = base.__module__
    fetcher.PartitionRecords = PartitionRecords
    return True


RAW_RECORDS_INSTALLED: Final = install()
