"""Waiting while a consumer stays in its group: a retry's backoff spent in ``getmany``, not a sleep.

aiokafka leaves the group when no ``getmany`` ran within ``max_poll_interval_ms`` (300 s by
default; its heartbeat task checks the time since the last one ended), and time spent inside one
does not count. A sink waiting for ClickHouse or ``driftline db migrate``, or a stage runner
waiting for the broker to take its outputs, would otherwise sleep through a long outage, hand its
partitions over on the way and fetch (and process) what it holds again. (Each attempt between
the waits must itself end within ``max_poll_interval_ms``: a produce attempt lasts up to the
producer's ``request_timeout_ms``, 40 s by default.)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from aiokafka import AIOKafkaConsumer

STEP_S = 0.5
"""The longest single ``getmany`` of a wait: how late a wait notices ``until``."""


async def wait_in_group(consumer: AIOKafkaConsumer, seconds: float,
                        until: asyncio.Event | None = None) -> None:
    """Wait ``seconds`` in ``getmany`` on the paused partitions, less once ``until`` is set (the
    caller stopping: it must not wait out a long backoff first).

    Nothing is consumed: every assigned partition is paused (the caller resumes them once its
    retries succeed), a partition assigned meanwhile too, and records one returned anyway
    (assigned during the call) are sought back to be fetched again later. A ``getmany`` during a
    rebalance waits for the new assignment, which may wait for the caller (a stage runner's
    listener takes the lock its blocked loop holds): each is given up a second after its timeout."""
    deadline = time.monotonic() + seconds
    while (left := min(deadline - time.monotonic(), STEP_S)) > 0 and not (until and until.is_set()):
        consumer.pause(*consumer.assignment())
        with contextlib.suppress(TimeoutError):
            fetched = await asyncio.wait_for(consumer.getmany(timeout_ms=math.ceil(left * 1000)), left + 1)
            for tp, records in fetched.items():
                consumer.seek(tp, records[0].offset)
