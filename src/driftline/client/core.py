"""DriftlineClient: log predictions and labels from a model server without slowing requests.

``log_prediction`` / ``log_label`` only check the ids and append a tuple to a bounded deque
(about a microsecond). A background thread runs its own asyncio loop: it drains the deque in
batches, serialises with orjson and sends them by one of two transports.

- ``transport="kafka"`` (default; the ``driftline[kafka]`` extra): an aiokafka producer keyed by
  ``prediction_id`` with ``acks=all``, through aiokafka's batch API (see
  :mod:`driftline.kafka.batch`). aiokafka was chosen over kafka-python for throughput: on the
  embedded broker kafka-python produces ~6k records/s, aiokafka ``send`` ~100k/s and the batch API
  ~250k/s, and every CPU cycle the worker spends holds the GIL that the request threads need.
- ``transport="http"`` (no extra: ``pip install driftline`` suffices): each batch is POSTed as a
  JSON array to the worker's ``/predictions`` and ``/feedback`` (``settings.worker``'s address,
  token and TLS trust, or ``http_url``); the worker produces it keyed the same way. A batch is
  acknowledged by the 202 reply; an unreachable or overloaded worker (no reply, 429, 5xx) is retried
  with backoff, a rejected batch (other 4xx) counts as failed.

Event validation stays the server's job (bad events are dead-lettered there); the client only
rejects missing ids with ValueError.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import orjson

from driftline.client.http import open_worker, worker_url
from driftline.config import Settings, load_settings
from driftline.extras import require
from driftline.kafka.batch import BatchSender, OutRecord, Submitted
from driftline.kafka.clients import KafkaStartError, aiokafka_producer, start_client, stop_producer
from driftline.schemas.events import SCHEMA_VERSION

if TYPE_CHECKING:  # aiokafka is the [kafka] extra: imported when the client starts, not with driftline.client
    from aiokafka import AIOKafkaProducer

log = logging.getLogger(__name__)

Overflow = Literal["drop", "block"]
Transport = Literal["kafka", "http"]
HTTP_MAX_EVENTS = 10_000
"""Events per POST at most: the worker's limit (``driftline.streams.http_ingest.MAX_BATCH_EVENTS``)."""
PRODUCER_FLUSH_S = 2.0
"""On close, how long the producer may take to flush what it holds; what is left is dropped
(:func:`~driftline.kafka.clients.stop_producer`) and counted as not delivered."""
HTTP_RETRY_STATUSES = (429, 500, 502, 503, 504)
_PREDICTION = 0
_LABEL = 1
_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


def _require_id(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


class DriftlineClient:
    """Non-blocking producer SDK; thread-safe, and safe to call from an asyncio loop.

    overflow='drop' (default) never waits: when ``buffer_size`` events are waiting, new events
    are dropped and counted. overflow='block' waits for room, at most ``block_timeout`` seconds
    (None = forever), then drops. Use 'drop' inside an asyncio server: 'block' would stall the loop.
    ``transport``: 'kafka' (default) or 'http' (see the module docstring); ``http_url`` is the
    worker's base URL for 'http' (default: from ``settings.worker``).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        overflow: Overflow = "drop",
        buffer_size: int = 100_000,
        block_timeout: float | None = None,
        batch_size: int = 5000,
        linger_s: float = 0.005,
        close_timeout: float = 10.0,
        transport: Transport = "kafka",
        http_url: str | None = None,
    ) -> None:
        if transport not in ("kafka", "http"):
            raise ValueError(f"transport must be 'kafka' or 'http', got {transport!r}")
        if transport == "kafka":
            require("kafka", "DriftlineClient's Kafka transport (transport='http' needs no extra)")
        if overflow not in ("drop", "block"):
            raise ValueError(f"overflow must be 'drop' or 'block', got {overflow!r}")
        if buffer_size < 1 or batch_size < 1:
            raise ValueError("buffer_size and batch_size must be positive")
        self._settings = settings if settings is not None else load_settings()
        self._topics = self._settings.topics
        self._overflow = overflow
        self._capacity = buffer_size
        self._block_timeout = block_timeout
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._close_timeout = close_timeout
        self._transport = transport
        self._http_url = http_url.rstrip("/") if http_url else None

        self._buffer: deque[tuple[Any, ...]] = deque()
        self._space = threading.Condition()
        self._progress = threading.Condition()
        self._drop_lock = threading.Lock()
        self._taken = 0  # written by the worker only
        self._sent = 0
        self._failed = 0
        self._dropped = 0
        self._closed = False
        self._stopping = False
        self._finished = False

        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="driftline-client", daemon=True)
        self._thread.start()
        self._ready.wait()
        atexit.register(self.close)

    # -- request path -----------------------------------------------------------------------------

    def log_prediction(
        self,
        prediction_id: str,
        model_id: str,
        model_version: str | int,
        features: Mapping[str, Any],
        prediction: Any,
        *,
        timestamp: int | str | Any | None = None,
        latency_ms: float | None = None,
        segment: Mapping[str, str] | None = None,
    ) -> bool:
        """Queue one prediction; returns False when it was dropped (buffer full or client closed).

        ``timestamp``: epoch milliseconds, RFC 3339 string or datetime; default now. ``features``
        and ``segment`` are copied shallowly, so the caller may reuse its dicts.
        """
        _require_id("prediction_id", prediction_id)
        _require_id("model_id", model_id)
        if model_version is None or model_version == "":
            raise ValueError("model_version is required")
        if not isinstance(features, Mapping):
            raise ValueError(f"features must be a mapping, got {type(features).__name__}")
        ts = time.time_ns() // 1_000_000 if timestamp is None else timestamp
        return self._offer((
            _PREDICTION, prediction_id, model_id, str(model_version), dict(features),
            dict(prediction) if isinstance(prediction, Mapping) else prediction, ts, latency_ms,
            dict(segment) if segment else None,
        ))

    def log_label(
        self,
        prediction_id: str,
        label: Any,
        *,
        timestamp: int | str | Any | None = None,
        model_id: str | None = None,
    ) -> bool:
        """Queue the ground truth of an earlier prediction; False when dropped."""
        _require_id("prediction_id", prediction_id)
        if label is None:
            raise ValueError("label is required")
        if model_id is not None:
            _require_id("model_id", model_id)
        ts = time.time_ns() // 1_000_000 if timestamp is None else timestamp
        return self._offer((_LABEL, prediction_id, label, ts, model_id))

    def _offer(self, item: tuple[Any, ...]) -> bool:
        buffer = self._buffer
        if len(buffer) < self._capacity and not self._closed:
            buffer.append(item)
            return True
        if self._closed or self._overflow == "drop":
            return self._drop()
        return self._offer_blocking(item)

    def _offer_blocking(self, item: tuple[Any, ...]) -> bool:
        deadline = None if self._block_timeout is None else time.monotonic() + self._block_timeout
        self._wake_worker()
        with self._space:
            while len(self._buffer) >= self._capacity and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._space.wait(remaining)
            if len(self._buffer) < self._capacity and not self._closed:
                self._buffer.append(item)
                return True
        return self._drop()

    def _drop(self) -> bool:
        with self._drop_lock:
            self._dropped += 1
        return False

    # -- observability and lifecycle ---------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """enqueued (accepted), sent (acknowledged), dropped (rejected by the overflow policy or
        after close), failed (accepted but not delivered), buffered, in_flight."""
        buffered = len(self._buffer)
        sent, failed = self._sent, self._failed
        return {
            "enqueued": self._taken + buffered,
            "sent": sent,
            "dropped": self._dropped,
            "failed": failed,
            "buffered": buffered,
            "in_flight": self._taken - sent - failed,
        }

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted before this call is acknowledged or failed.

        Returns False on timeout. Never call it from an event loop thread: use ``aflush``.
        """
        target = self._taken + len(self._buffer)
        self._wake_worker()
        with self._progress:
            return self._progress.wait_for(
                lambda: self._sent + self._failed >= target or not self._thread.is_alive(), timeout
            ) and self._sent + self._failed >= target

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush`` for asyncio code: waits on a helper thread, the caller's loop keeps running."""
        return await asyncio.to_thread(self.flush, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting events, deliver what is buffered (at most ``timeout`` seconds, default
        ``close_timeout``), then stop the worker. Idempotent; also runs at interpreter exit."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        with self._space:
            self._space.notify_all()
        self._stopping = True
        self._wake_worker()
        self._thread.join(self._close_timeout if timeout is None else timeout)
        if self._thread.is_alive() and self._loop is not None and self._main_task is not None:
            with contextlib.suppress(RuntimeError):  # the loop may close in between
                self._loop.call_soon_threadsafe(self._main_task.cancel)
            self._thread.join(5.0)

    def __enter__(self) -> DriftlineClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- worker thread ------------------------------------------------------------------------------

    def _wake_worker(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(wake.set)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._main_task = asyncio.current_task()
        self._ready.set()
        producer: AIOKafkaProducer | None = None
        try:
            if self._transport == "http":
                await self._pump_http()
            else:
                producer = await self._connect()
                if producer is not None:
                    await self._pump(producer)
        except asyncio.CancelledError:
            log.warning("driftline client: close timed out, %d events not delivered", len(self._buffer))
        finally:
            if producer is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await stop_producer(producer, PRODUCER_FLUSH_S)
            self._discard_buffer()

    async def _connect(self) -> AIOKafkaProducer | None:
        """Start the producer, retrying with backoff; None if the client closes first."""

        backoff = 0.2
        while True:
            producer = aiokafka_producer(self._settings)
            try:
                await start_client(producer, self._settings, "producer")
                return producer
            except KafkaStartError as err:  # retried: the broker may come (back) later
                if self._stopping:
                    log.warning("driftline client: closing without a broker connection: %s", err)
                    return None
                log.warning("driftline client: cannot reach Kafka (%s), retrying in %.1fs", err, backoff)
                await self._idle(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _pump(self, producer: AIOKafkaProducer) -> None:
        sender = BatchSender(producer)
        while True:
            items = self._take(self._batch_size)
            if items:
                await self._send(sender, items)
            if self._stopping and not self._buffer:
                break
            if len(self._buffer) < self._batch_size and not self._stopping:
                await self._idle(self._linger_s)
        await producer.flush()

    def _take(self, limit: int) -> list[tuple[Any, ...]]:
        items: list[tuple[Any, ...]] = []
        pop = self._buffer.popleft
        with contextlib.suppress(IndexError):
            for _ in range(limit):
                items.append(pop())
        if items:
            self._taken += len(items)
            with self._space:
                self._space.notify_all()
        return items

    async def _send(self, sender: BatchSender, items: list[tuple[Any, ...]]) -> None:
        from aiokafka.errors import KafkaError

        records: list[OutRecord] = []
        for item in items:
            try:
                records.append(self._encode(item))
            except (TypeError, orjson.JSONEncodeError) as err:
                log.warning("driftline client: event %r is not JSON-serialisable: %s", item[1], err)
                self._settle(0, 1)
        try:
            submitted, rejected = await sender.send(records)
        except KafkaError as err:
            log.warning("driftline client: produce failed: %s", err)
            self._settle(0, len(records))
            return
        self._settle(0, rejected)
        for batch in submitted:
            batch.future.add_done_callback(functools.partial(self._on_delivery, batch))

    async def _pump_http(self) -> None:
        while True:
            items = self._take(min(self._batch_size, HTTP_MAX_EVENTS))
            if items:
                await self._post_items(items)
            if self._stopping and not self._buffer:
                break
            if len(self._buffer) < self._batch_size and not self._stopping:
                await self._idle(self._linger_s)

    async def _post_items(self, items: list[tuple[Any, ...]]) -> None:
        """POST the predictions to /predictions and the labels to /feedback, one array each."""
        by_path: dict[str, list[bytes]] = {}
        for item in items:
            try:
                record = self._encode(item)
            except (TypeError, orjson.JSONEncodeError) as err:
                log.warning("driftline client: event %r is not JSON-serialisable: %s", item[1], err)
                self._settle(0, 1)
                continue
            path = "/feedback" if record.topic == self._topics.labels else "/predictions"
            by_path.setdefault(path, []).append(record.value)
        for path, values in by_path.items():
            await self._post(path, values)

    async def _post(self, path: str, values: list[bytes]) -> None:
        """Until the worker acknowledges (202) or rejects the batch; the close timeout bounds it."""
        body = b"[" + b",".join(values) + b"]"
        backoff = 0.2
        while True:
            status, detail = await asyncio.to_thread(self._http_post, path, body)
            if status is not None and 200 <= status < 300:  # 202: produced and acknowledged
                self._settle(len(values), 0)
                return
            if status is not None and status not in HTTP_RETRY_STATUSES:
                log.warning("driftline client: the worker rejected %d events (%d): %s", len(values), status,
                            detail)
                self._settle(0, len(values))
                return
            log.warning("driftline client: cannot deliver to the worker (%s), retrying in %.1fs",
                        detail if status is None else f"{status}: {detail}", backoff)
            await self._idle(backoff)
            backoff = min(backoff * 2, 5.0)

    def _http_post(self, path: str, body: bytes) -> tuple[int | None, str]:
        """(HTTP status or None when no reply came, detail); runs on a helper thread."""
        url = self._http_url + path if self._http_url else worker_url(self._settings, path)
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with open_worker(self._settings, request, timeout=30.0) as response:
                return response.status, ""
        except urllib.error.HTTPError as err:
            with contextlib.suppress(OSError):
                return err.code, err.read(2000).decode(errors="replace")
            return err.code, ""
        except OSError as err:  # refused, reset, timed out, TLS: no reply
            return None, str(err)

    def _on_delivery(self, batch: Submitted, future: asyncio.Future[Any]) -> None:
        if self._finished:
            return  # already counted as failed by _discard_buffer
        if future.cancelled() or future.exception() is not None:
            log.warning("driftline client: %d events not delivered: %s", batch.n_records,
                        "cancelled" if future.cancelled() else future.exception())
            self._settle(0, batch.n_records)
        else:
            self._settle(batch.n_records, 0)

    def _settle(self, sent: int, failed: int) -> None:
        if not sent and not failed:
            return
        with self._progress:
            self._sent += sent
            self._failed += failed
            self._progress.notify_all()

    def _discard_buffer(self) -> None:
        # Everything still buffered or in flight when the worker ends counts as failed.
        self._take(len(self._buffer) + self._capacity)
        self._finished = True
        self._settle(0, self._taken - self._sent - self._failed)

    async def _idle(self, seconds: float) -> None:
        assert self._wake is not None
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _encode(self, item: tuple[Any, ...]) -> OutRecord:
        if item[0] == _PREDICTION:
            _, pid, model_id, version, features, prediction, ts, latency_ms, segment = item
            doc: dict[str, Any] = {
                "schema_version": SCHEMA_VERSION, "prediction_id": pid, "model_id": model_id,
                "model_version": version, "timestamp": ts, "features": features, "prediction": prediction,
            }
            if latency_ms is not None:
                doc["latency_ms"] = latency_ms
            if segment:
                doc["segment"] = segment
            return OutRecord(self._topics.predictions, pid.encode(), orjson.dumps(doc, option=_ORJSON_OPTS))
        _, pid, label, ts, model_id = item
        doc = {"schema_version": SCHEMA_VERSION, "prediction_id": pid, "label": label, "timestamp": ts}
        if model_id is not None:
            doc["model_id"] = model_id
        return OutRecord(self._topics.labels, pid.encode(), orjson.dumps(doc, option=_ORJSON_OPTS))
