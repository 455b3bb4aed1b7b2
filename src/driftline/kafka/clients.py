"""Every Kafka client driftline creates is built here, from one Settings object.

Security (SASL, TLS), the bootstrap servers and the client id are wired here once, so no client can
be created without them: :func:`aiokafka_producer`, :func:`aiokafka_consumer`,
:func:`kafka_python_producer` and :func:`kafka_python_admin` build the clients; callers add only
behaviour options (acks, request sizes, assignors), never connection or security ones. The client
libraries are imported when a client is built, so the SDK imports this module without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, Any

from driftline.config import Settings
from driftline.kafka.metadata_requests import count_metadata_requests

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from kafka import KafkaAdminClient, KafkaProducer


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    k = settings.kafka
    if k.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
    if k.ssl_certfile:
        ctx.load_cert_chain(
            str(k.ssl_certfile),
            str(k.ssl_keyfile) if k.ssl_keyfile else None,
            k.ssl_password.get_secret_value() if k.ssl_password else None,
        )
    return ctx


def aiokafka_common(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by aiokafka producers, consumers and admin clients."""
    k = settings.kafka
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers(),
        "client_id": k.client_id,
        "security_protocol": k.security_protocol,
    }
    ctx = _ssl_context(settings)
    if ctx is not None:
        opts["ssl_context"] = ctx
    if k.security_protocol.startswith("SASL_"):
        opts["sasl_mechanism"] = k.sasl_mechanism
        opts["sasl_plain_username"] = k.sasl_username
        opts["sasl_plain_password"] = k.sasl_password.get_secret_value() if k.sasl_password else None
    return opts


def aiokafka_consumer_kwargs(settings: Settings, group_id: str | None) -> dict[str, Any]:
    k = settings.kafka
    opts = aiokafka_common(settings)
    opts.update(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=k.session_timeout_ms,
        heartbeat_interval_ms=k.heartbeat_interval_ms,
        rebalance_timeout_ms=k.rebalance_timeout_ms,
        max_partition_fetch_bytes=max(k.max_message_bytes * 2, 1_048_576),
        fetch_max_bytes=max(k.max_message_bytes * 4, 52_428_800),
        isolation_level=k.isolation_level,
    )
    return opts


def aiokafka_producer_kwargs(settings: Settings) -> dict[str, Any]:
    opts = aiokafka_common(settings)
    # acks=all: an acknowledged record survives a broker failover on a real cluster.
    opts.update(
        acks="all",
        linger_ms=5,
        max_batch_size=1_048_576,
        max_request_size=max(settings.kafka.max_message_bytes * 2, 1_048_576),
    )
    return opts


def kafka_python_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python clients (KafkaProducer/KafkaConsumer/KafkaAdminClient)."""
    k = settings.kafka
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers().split(","),
        "client_id": k.client_id,
        "security_protocol": k.security_protocol,
    }
    if k.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_cafile"] = str(k.ssl_cafile) if k.ssl_cafile else None
        opts["ssl_certfile"] = str(k.ssl_certfile) if k.ssl_certfile else None
        opts["ssl_keyfile"] = str(k.ssl_keyfile) if k.ssl_keyfile else None
        if k.ssl_password:
            opts["ssl_password"] = k.ssl_password.get_secret_value()
    if k.security_protocol.startswith("SASL_"):
        opts["sasl_mechanism"] = k.sasl_mechanism
        opts["sasl_plain_username"] = k.sasl_username
        opts["sasl_plain_password"] = k.sasl_password.get_secret_value() if k.sasl_password else None
    return opts


class KafkaStartError(RuntimeError):
    """A Kafka client could not start; the message says where it connected and with what security."""


async def start_client(client: Any, settings: Settings, what: str) -> None:
    """``await client.start()`` with one clear error instead of a client library's internals.

    aiokafka turns a SCRAM rejection into a bare ``KeyError('v')``; nobody can act on that.
    """
    try:
        await client.start()
    except Exception as err:
        with contextlib.suppress(Exception):
            await client.stop()
        k = settings.kafka
        security = k.security_protocol + (
            f"/{k.sasl_mechanism} as {k.sasl_username!r}" if k.sasl_mechanism else ""
        )
        hint = (
            "authentication failed? check the SASL username/password"
            if isinstance(err, KeyError)
            else str(err)
        )
        raise KafkaStartError(
            f"cannot start the Kafka {what} for {settings.bootstrap_servers()} ({security}): {hint}"
        ) from err


def _with_options(base: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``base`` plus behaviour ``options``; an option that would replace a connection or security
    setting is a programming error."""
    clash = sorted(set(base) & set(options))
    if clash:
        raise ValueError(f"{', '.join(clash)} come from Settings, not from the caller")
    return {**base, **options}


def aiokafka_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """An (unstarted) aiokafka producer: acks=all, security from ``settings``."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**_with_options(aiokafka_producer_kwargs(settings), options))
    _track_sent_topics(producer)
    count_metadata_requests(producer.client, "producer")
    return producer


async def stop_producer(producer: AIOKafkaProducer, flush_timeout_s: float) -> int:
    """Stop ``producer``, waiting at most ``flush_timeout_s`` for the records still in it to be
    acknowledged; what is not acknowledged by then is dropped (each send's future fails). Returns
    the batches dropped.

    aiokafka's ``stop()`` flushes without a bound: in a broker outage it waits until each batch
    expires (``request_timeout_ms``, 40 s by default), longer than a worker's stop may take. What
    a stopping worker still holds there belongs to writes it gave up (runners checkpoint nothing
    after those, so the next owner produces them again) or to HTTP ingest requests that have not
    been answered (they get an error and are sent again by the client): nothing acknowledged.
    """
    from aiokafka.errors import KafkaTimeoutError

    stopping = asyncio.ensure_future(producer.stop())
    done, _ = await asyncio.wait([stopping], timeout=flush_timeout_s)
    dropped = 0
    if not done:
        # aiokafka has no public way to drop what it holds. Its sender stops sending; the closed
        # connections end the requests in flight (their batches go back to the queue, as after a
        # connection error); then every batch left is failed, which ends stop()'s flush.
        sender, accumulator = producer._sender, producer._message_accumulator
        sender.sender_task.cancel()
        await producer.client.close()
        await asyncio.wait([sender.sender_task])
        dropped = sum(map(len, accumulator._batches.values())) + len(accumulator._pending_batches)
        accumulator.fail_all(KafkaTimeoutError(f"not acknowledged within {flush_timeout_s}s of stop"))
        log.warning("producer stopped with %d batch(es) not acknowledged within %ss: dropped (none of "
                    "them was acknowledged or checkpointed past)", dropped, flush_timeout_s)
    await stopping
    return dropped


def _track_sent_topics(producer: AIOKafkaProducer) -> None:
    """Make the producer's metadata requests name every topic it sends to.

    aiokafka adds a topic to the list its metadata requests name (``client.add_topic``) only when a
    send finds the topic missing from its cluster metadata. A topic it learnt of from a request for
    all topics (the bootstrap's; any refresh while that list is empty) is used untracked, and the
    first topic that is tracked turns every later refresh into a request for the tracked topics
    alone, so the untracked topic's partitions drop out of the metadata. A batch waiting for such a
    partition has no leader, and the sender then asks for metadata again as each answer arrives,
    with no backoff, until the batch expires: measured in a worker at 300-600 requests a second
    for over a minute, the main thread's CPU several times the run's (docs/scaling.md). Adding the
    topic before every send (a no-op once tracked) closes that.
    """
    client = producer.client
    wait_on_metadata = client._wait_on_metadata  # every send, send_batch and partitions_for goes through it

    async def tracked(topic: str) -> Any:
        await client.add_topic(topic)
        return await wait_on_metadata(topic)

    client._wait_on_metadata = tracked


def aiokafka_consumer(settings: Settings, group_id: str | None, *, raw_records: bool = False,
                      **options: Any) -> AIOKafkaConsumer:
    """An (unstarted) aiokafka consumer of ``group_id`` (None: no group, manual assignment).

    ``raw_records``: ``getmany`` returns the processors' ``RawRecord`` objects, not aiokafka's
    ``ConsumerRecord`` (:mod:`driftline.kafka.records`; read them through ``records.as_raw``)."""
    from aiokafka import AIOKafkaConsumer

    if raw_records:
        from driftline.kafka.records import RAW_RECORDS

        options = {**options, "value_deserializer": RAW_RECORDS}
    consumer = AIOKafkaConsumer(**_with_options(aiokafka_consumer_kwargs(settings, group_id), options))
    count_metadata_requests(consumer._client, "consumer")  # aiokafka has no public handle on it
    return consumer


def kafka_python_producer(settings: Settings, **options: Any) -> KafkaProducer:
    """A kafka-python producer (it connects as it is built), security from ``settings``."""
    from kafka import KafkaProducer

    return KafkaProducer(**_with_options(kafka_python_kwargs(settings), options))


def kafka_python_admin(settings: Settings, **options: Any) -> KafkaAdminClient:
    """A kafka-python admin client (it connects as it is built), security from ``settings``."""
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**_with_options(kafka_python_kwargs(settings), options))
