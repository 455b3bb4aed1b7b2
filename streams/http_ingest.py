"""HTTP ingest: ``POST /predictions`` and ``POST /feedback`` (labels) onto the Kafka topics.

A body is one JSON event or a JSON array of events (a batch). Each event is validated with the
wire schemas (``PredictionEvent`` / ``LabelEvent``); a missing ``timestamp`` means "received
now". A batch is all-or-nothing: any invalid event gives 400 naming the index, field and error;
a body larger than ``max_body_bytes`` or an event larger than ``kafka.max_message_bytes`` gives
413; otherwise the events are produced (keyed by ``prediction_id``, acks=all) and the reply is
202 with the count once the broker acknowledged them. Broker failures give 503.

The worker's web server mounts these routes with ``add_ingest_routes``; ``driftline serve`` runs
them standalone.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from driftline.config import Settings
from driftline.kafka.batch import BatchSender, OutRecord
from driftline.kafka.clients import aiokafka_producer
from driftline.schemas.events import LabelEvent, PredictionEvent

# (method, path) of every route add_ingest_routes registers; infra/openapi.yaml documents them.
ROUTES: tuple[tuple[str, str], ...] = (("POST", "/predictions"), ("POST", "/feedback"))
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_BATCH_EVENTS = 10_000
MAX_REPORTED_ERRORS = 20

ProducerFactory = Callable[[], Awaitable[AIOKafkaProducer]]
_SENDER = web.AppKey("driftline_ingest_sender", BatchSender)


class _Rejected(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error", ""))
        self.status = status
        self.body = body


def _json_response(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _Rejected(413, {"error": f"body is {request.content_length} bytes, the limit is {limit}"})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise _Rejected(413, {"error": f"body exceeds the limit of {limit} bytes"})
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> list[Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise _Rejected(400, {"error": f"invalid JSON: {err}", "field": None}) from None
    events = doc if isinstance(doc, list) else [doc]
    if not events:
        raise _Rejected(400, {"error": "empty batch", "field": None})
    if len(events) > MAX_BATCH_EVENTS:
        raise _Rejected(413, {"error": f"batch of {len(events)} events, the limit is {MAX_BATCH_EVENTS}"})
    return events


Event: TypeAlias = PredictionEvent | LabelEvent


def _validate(events: list[Any], model: type[Event]) -> list[Event]:
    now_ms = time.time_ns() // 1_000_000
    errors: list[dict[str, Any]] = []
    validated: list[Event] = []
    for index, raw in enumerate(events):
        if not isinstance(raw, dict):
            errors.append({"index": index, "field": None, "error": "an event must be a JSON object"})
            continue
        raw.setdefault("timestamp", now_ms)
        try:
            validated.append(model.model_validate(raw))
        except ValidationError as err:
            for detail in err.errors(include_url=False):
                field = ".".join(str(part) for part in detail["loc"]) or None
                errors.append({"index": index, "field": field, "error": detail["msg"]})
    if errors:
        first = errors[0]
        raise _Rejected(400, {
            "error": f"invalid event {first['index']}: {first['field'] or '<event>'}: {first['error']}",
            "field": first["field"], "index": first["index"], "errors": errors[:MAX_REPORTED_ERRORS],
            "error_count": len(errors),
        })
    return validated


def _records(events: list[Event], topic: str, max_event_bytes: int) -> list[OutRecord]:
    out: list[OutRecord] = []
    for index, event in enumerate(events):
        value = event.model_dump_json().encode()
        if len(value) > max_event_bytes:
            message = f"event {index} is {len(value)} bytes, the limit is {max_event_bytes}"
            raise _Rejected(413, {"error": message, "index": index})
        out.append(OutRecord(topic, event.prediction_id.encode(), value))
    return out


def _handler(model: type[Event], topic: str, max_body_bytes: int, max_event_bytes: int
             ) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        try:
            body = await _read_limited(request, max_body_bytes)
            records = _records(_validate(_parse(body), model), topic, max_event_bytes)
        except _Rejected as rejected:
            return _json_response(rejected.status, rejected.body)
        try:
            submitted, rejected_count = await request.app[_SENDER].send(records)
            for batch in submitted:
                await batch.future
        except KafkaError as err:
            return _json_response(503, {"error": f"Kafka unavailable: {err}"})
        if rejected_count:
            return _json_response(413, {"error": f"{rejected_count} events exceed the producer batch size"})
        return _json_response(202, {"accepted": len(records), "topic": topic})

    return handle


def add_ingest_routes(
    app: web.Application,
    settings: Settings,
    *,
    producer_factory: ProducerFactory | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Register the ingest routes on ``app`` (before it starts).

    The producer comes from ``producer_factory`` (the caller then owns its lifecycle, e.g. the
    worker sharing its producer) or is created from ``settings`` and stopped with the app.
    """
    max_event = settings.kafka.max_message_bytes

    async def producer_ctx(app: web.Application) -> AsyncIterator[None]:
        owned: AIOKafkaProducer | None = None
        if producer_factory is not None:
            producer = await producer_factory()
        else:
            owned = producer = aiokafka_producer(settings)
            await owned.start()
        app[_SENDER] = BatchSender(producer)
        try:
            yield
        finally:
            if owned is not None:
                await owned.stop()

    app.cleanup_ctx.append(producer_ctx)
    app.router.add_post("/predictions", _handler(PredictionEvent, settings.topics.predictions, max_body_bytes,
                                                 max_event))
    app.router.add_post("/feedback", _handler(LabelEvent, settings.topics.labels, max_body_bytes, max_event))
