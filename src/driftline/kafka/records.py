"""Consumed Kafka records as the :class:`RawRecord` every processor takes (worker, replay, readers)."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from driftline.operators.validate import RawRecord


def to_raw(record: ConsumerRecord[bytes, bytes]) -> RawRecord:
    """An aiokafka ConsumerRecord as the RawRecord the processors take."""
    return RawRecord(record.topic, record.partition, record.offset, record.timestamp, record.key,
                     record.value)
