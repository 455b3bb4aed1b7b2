"""Publishing a reference profile: its JSON on ``topics.profiles`` and its ``reference_profiles`` row.

The pipeline reads profiles from the (compacted) profiles topic; dashboards and ``driftline
profile show`` read the table. ``driftline profile build``, the demo and retrain jobs all publish
through :func:`publish_profile`, so the record and the row are the same everywhere. The row goes
straight into ClickHouse when it can be opened here, else through the sink topic to the worker
that owns the embedded engine (see :func:`~driftline.store.writer.open_row_writer`).
"""

from __future__ import annotations

from typing import NamedTuple

from kafka.errors import KafkaError

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import kafka_python_producer
from driftline.operators.profile import ReferenceProfile
from driftline.pipeline.to_rows import RowMapper
from driftline.store.client import StoreError
from driftline.store.writer import ClickHouseRowWriter, open_row_writer

PRODUCE_TIMEOUT_S = 30.0


class PublishError(Exception):
    """Kafka or ClickHouse did not take the profile; the message says which and why."""


class Published(NamedTuple):
    """Where a published profile went."""

    record: str
    """``topic[partition]@offset`` of the profile record."""
    direct: bool
    """Whether the row was written straight into ClickHouse (else through the sink topic)."""


def publish_profile(settings: Settings, profile: ReferenceProfile, run_id: str = "") -> Published:
    """Produce ``profile`` (key = model_id, acks=all) and store its ``reference_profiles`` row
    tagged ``run_id`` ('' = live). Idempotent: the profile id hashes the content. Raises
    :class:`PublishError`."""
    payload = profile.model_dump_json().encode()
    try:
        ensure_topics(settings)
        max_request = max(settings.kafka.max_message_bytes, len(payload) + 65_536)
        producer = kafka_python_producer(settings, acks="all", max_request_size=max_request)
        try:
            meta = producer.send(settings.topics.profiles, key=profile.model_id.encode(),
                                 value=payload).get(timeout=PRODUCE_TIMEOUT_S)
        finally:
            producer.close()
    except (KafkaError, RuntimeError) as error:
        raise PublishError(f"cannot publish the profile on {settings.topics.profiles}: {error}") from None
    # A live row leaves run_id to the table's default (''), exactly as the sink stores the topic record.
    table, rows = RowMapper(settings.topics, run_id=run_id or None).rows(settings.topics.profiles, payload)
    try:
        writer = open_row_writer(settings)
        try:
            writer.write(table, rows)
        finally:
            writer.close()
    except ValueError as error:  # e.g. no such table: not migrated
        raise PublishError(f"cannot store the profile: {error} (run `driftline db migrate`)") from None
    except (StoreError, KafkaError) as error:
        raise PublishError(f"cannot store the profile in ClickHouse: {error}") from None
    return Published(f"{meta.topic}[{meta.partition}]@{meta.offset}", isinstance(writer, ClickHouseRowWriter))
