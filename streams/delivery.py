"""Produce a batch of outbound messages and wait for every acknowledgement, retrying forever.

While the broker is unreachable the caller stays inside ``deliver`` (and so fetches nothing more):
memory stays bounded and nothing is skipped. After a failure everything from the first
unacknowledged message onwards is sent again, in order, so per-partition order holds; messages
that had already been acknowledged may appear twice on the topic (consumers are idempotent).

Messages are produced through aiokafka's batch API: one record batch per (topic, partition) is
filled in message order and submitted closed (no linger), a full batch is submitted and another
started. This costs a fraction of a per-message ``send()`` (a coroutine, a size estimate, a
partitioner call and a future per message). A message without a partition gets the one
``send()`` would give it: the producer's partitioner, or for the default partitioner the same
murmur2 (:mod:`driftline.kafka.partitioner`) computed for all keys of a call at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from driftline.kafka.partitioner import partitions_for_keys
from driftline.pipeline.stage import OutboundMessage

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
LOG_EVERY_S = 60.0
_SIZE_SLACK = 128
"""Below ``max_request_size - _SIZE_SLACK`` bytes of key + value a record certainly fits a request."""
_DEFAULT_PARTITIONER = DefaultPartitioner()


def is_transient(err: BaseException) -> bool:
    """Errors worth retrying: the broker is down, slow, or moving leadership.

    >>> is_transient(KafkaConnectionError()), is_transient(MessageSizeTooLargeError())
    (True, False)
    """
    return isinstance(err, KafkaTimeoutError | KafkaConnectionError | asyncio.TimeoutError) or (
        isinstance(err, KafkaError) and bool(getattr(err, "retriable", False))
    )


async def _partitions(producer: AIOKafkaProducer, messages: Sequence[OutboundMessage]) -> list[int]:
    """Each message's partition: its own, or the one ``producer.send()`` would give it (the
    producer's partitioner over the topic's partitions, after waiting for the topic's metadata)."""
    out: list[Any] = [m.partition for m in messages]
    todo: dict[str, list[int]] = {}
    for i, message in enumerate(messages):
        if message.partition is None:
            todo.setdefault(message.topic, []).append(i)
    choose = getattr(producer, "_partitioner", None) or _DEFAULT_PARTITIONER
    for topic, rows in todo.items():
        await producer.partitions_for(topic)
        cluster = producer.client.cluster
        every = list(cluster.partitions_for_topic(topic))
        available = list(cluster.available_partitions_for_topic(topic))
        if type(choose) is DefaultPartitioner:  # murmur2 of every key at once, same result
            keyed = [i for i in rows if messages[i].key is not None]
            if keyed:
                indices = partitions_for_keys([messages[i].key or b"" for i in keyed], len(every))
                for i, index in zip(keyed, indices.tolist(), strict=True):
                    out[i] = every[index]
            rows = [i for i in rows if messages[i].key is None]
        for i in rows:
            out[i] = choose(messages[i].key, every, available)
    return out


def _too_large(message: OutboundMessage, limit: int) -> MessageSizeTooLargeError | None:
    """What ``send()`` raises for a record over ``max_request_size``, or None."""
    if len(message.value) + len(message.key or b"") <= limit - _SIZE_SLACK:
        return None
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(message.key, message.value, [])
    if size <= limit:
        return None
    return MessageSizeTooLargeError(
        f"The message is {size} bytes when serialized which is larger than the maximum request "
        "size you have configured with the max_request_size configuration")


async def _send_all(producer: AIOKafkaProducer,
                    messages: Sequence[OutboundMessage]) -> tuple[int, BaseException | None]:
    """(length of the acknowledged prefix, first error) after sending `messages` in order.

    The prefix ends at the first message of the earliest batch that failed or was not submitted.
    """
    limit: int = getattr(producer, "_max_request_size", 1_048_576)
    open_batches: dict[tuple[str, int], tuple[Any, int]] = {}  # (topic, partition) -> (builder, first index)
    submitted: list[tuple[int, asyncio.Future[Any]]] = []  # (first index, delivery future)
    send_error: BaseException | None = None

    async def submit(tp: tuple[str, int]) -> None:
        builder, first = open_batches[tp]
        builder.close()  # nothing else goes in: the sender takes it without lingering
        future = await producer.send_batch(builder, tp[0], partition=tp[1])
        del open_batches[tp]
        submitted.append((first, future))

    stop = 0  # messages from here on were not looked at
    try:
        partitions = await _partitions(producer, messages)
        for stop, (message, partition) in enumerate(zip(messages, partitions, strict=True)):
            send_error = _too_large(message, limit)
            if send_error is not None:
                break  # as send(): raised before queueing; what came before is still sent
            tp = (message.topic, partition)
            entry = open_batches.get(tp)
            if entry is None:
                entry = open_batches[tp] = (producer.create_batch(), stop)
            if entry[0].append(key=message.key, value=message.value, timestamp=None) is None:
                # Full: submit it and start the next batch of this partition with this message.
                await submit(tp)
                entry = open_batches[tp] = (producer.create_batch(), stop)
                # An empty batch always takes its first record (checked against the limit above).
                entry[0].append(key=message.key, value=message.value, timestamp=None)
        else:
            stop = len(messages)
        while open_batches:
            await submit(next(iter(open_batches)))
    except KafkaError as err:  # metadata or queueing failed: stop submitting
        send_error = err
    unsent = min([stop, *(first for _, first in open_batches.values())])
    results = await asyncio.gather(*(future for _, future in submitted), return_exceptions=True)
    acked, error = unsent, send_error
    for (first, _), result in zip(submitted, results, strict=True):
        if isinstance(result, BaseException) and first < acked:
            acked, error = first, result
    return acked, error


async def deliver(producer: AIOKafkaProducer, messages: Sequence[OutboundMessage], *,
                  on_blocked: Callable[[bool], None] | None = None,
                  wait: Callable[[float], Awaitable[None]] = asyncio.sleep, what: str = "messages") -> int:
    """Send `messages` in order until all are acknowledged; returns the number of retries.

    `on_blocked(True)` is called when the first attempt fails and `on_blocked(False)` once the
    batch finally went through (e.g. to pause and resume fetching). `wait(seconds)` waits between
    attempts: a caller with a consumer in a group waits in its ``getmany``
    (:func:`~driftline.streams.group_wait.wait_in_group`), or an outage longer than
    ``max_poll_interval_ms`` would make it leave the group. Non-transient errors (a message over
    the size limit, authorisation) are raised.
    """
    pending = list(messages)
    retries = 0
    backoff = 0.1
    last_log = 0.0
    try:
        while pending:
            acked, error = await _send_all(producer, pending)
            # Re-send from the first message whose acknowledgement is missing.
            pending = pending[acked:]
            if error is None:
                return retries
            if not is_transient(error):
                raise error
            if retries == 0 and on_blocked is not None:
                on_blocked(True)
            retries += 1
            now = time.monotonic()
            if now - last_log >= LOG_EVERY_S:
                log.warning("producing %d %s failed (%s); retrying with backoff until the broker is back",
                            len(pending), what, error)
                last_log = now
            await wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        return retries
    finally:
        if retries and on_blocked is not None:
            on_blocked(False)
