"""Produce a batch of outbound messages and wait for every acknowledgement, retrying forever.

While the broker is unreachable the caller stays inside ``deliver`` (and so fetches nothing more):
memory stays bounded and nothing is skipped. After a failure everything from the first
unacknowledged message onwards is sent again, in order, so per-partition order holds; messages
that had already been acknowledged may appear twice on the topic (consumers are idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from driftline.pipeline.stage import OutboundMessage

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
LOG_EVERY_S = 60.0


def is_transient(err: BaseException) -> bool:
    """Errors worth retrying: the broker is down, slow, or moving leadership."""
    return isinstance(err, KafkaTimeoutError | KafkaConnectionError | asyncio.TimeoutError) or (
        isinstance(err, KafkaError) and bool(getattr(err, "retriable", False))
    )


async def _send_all(producer: AIOKafkaProducer,
                    messages: Sequence[OutboundMessage]) -> tuple[int, BaseException | None]:
    """(length of the acknowledged prefix, first error) after sending `messages` in order."""
    futures: list[asyncio.Future[object]] = []
    send_error: BaseException | None = None
    for message in messages:
        try:
            futures.append(await producer.send(message.topic, message.value, key=message.key,
                                               partition=message.partition))
        except KafkaError as err:
            send_error = err
            break
    results = await asyncio.gather(*futures, return_exceptions=True)
    for index, result in enumerate(results):
        if isinstance(result, BaseException):
            return index, result
    return len(futures), send_error


async def deliver(producer: AIOKafkaProducer, messages: Sequence[OutboundMessage], *,
                  on_blocked: Callable[[bool], None] | None = None, what: str = "messages") -> int:
    """Send `messages` in order until all are acknowledged; returns the number of retries.

    `on_blocked(True)` is called when the first attempt fails and `on_blocked(False)` once the
    batch finally went through (e.g. to pause and resume fetching). Non-transient errors (a
    message over the size limit, authorisation) are raised.
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
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        return retries
    finally:
        if retries and on_blocked is not None:
            on_blocked(False)

