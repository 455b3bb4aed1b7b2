"""HTTP ingest: 202/400/413 against a real broker, and the OpenAPI description of the routes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer

import driftline
from driftline.cli.main import build_parser
from driftline.cli.serve import build_app
from driftline.config import Settings, WorkerSettings
from driftline.kafka.clients import aiokafka_common
from driftline.schemas.events import EVENT_MODELS, PredictionEvent
from driftline.streams.http_ingest import ROUTES, add_ingest_routes

REPO = Path(__file__).resolve().parents[1]
PREDICTION = {"prediction_id": "h1", "model_id": "m", "model_version": "1",
              "timestamp": "2026-01-01T00:00:00Z", "features": {"x": 1.5, "c": "a"},
              "prediction": {"label": "yes", "score": 0.9}}


async def consume(settings: Settings, topic: str, expected: int, timeout: float = 15.0) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, **aiokafka_common(settings), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


def run_with_client(settings: Settings, scenario: Any, **options: Any) -> None:
    async def main() -> None:
        app = web.Application()
        add_ingest_routes(app, settings, **options)
        async with TestClient(TestServer(app)) as client:
            await scenario(client)

    asyncio.run(main())


@pytest.mark.integration
def test_accepts_single_events_and_batches(settings: Settings) -> None:
    async def scenario(client: TestClient) -> None:
        resp = await client.post("/predictions", data=orjson.dumps(PREDICTION))
        assert resp.status == 202
        assert await resp.json() == {"accepted": 1, "topic": settings.topics.predictions}
        batch = [{**PREDICTION, "prediction_id": f"h{i}", "prediction": "no"} for i in range(2, 102)]
        resp = await client.post("/predictions", data=orjson.dumps(batch))
        assert (await resp.json())["accepted"] == 100
        labels = [{"prediction_id": f"h{i}", "label": "yes"} for i in range(1, 51)]  # timestamp: now
        resp = await client.post("/feedback", data=orjson.dumps(labels))
        assert resp.status == 202 and (await resp.json())["accepted"] == 50

        records = await consume(settings, settings.topics.predictions, 101)
        assert sorted(r.key for r in records) == sorted(f"h{i}".encode() for i in range(1, 102))
        for r in records:
            assert PredictionEvent.model_validate_json(r.value).prediction_id.encode() == r.key
        assert len(await consume(settings, settings.topics.labels, 50)) == 50

    run_with_client(settings, scenario)


@pytest.mark.integration
def test_rejects_bad_input_with_the_field_and_too_large_bodies(settings: Settings) -> None:
    async def scenario(client: TestClient) -> None:
        resp = await client.post("/predictions", data=b'{"prediction_id": ')
        assert resp.status == 400 and "invalid JSON" in (await resp.json())["error"]

        bad = [PREDICTION, {**PREDICTION, "prediction_id": "h2", "latency_ms": -1}]
        resp = await client.post("/predictions", data=orjson.dumps(bad))
        body = await resp.json()
        assert resp.status == 400
        assert (body["index"], body["field"]) == (1, "latency_ms")
        assert "greater than or equal to 0" in body["errors"][0]["error"]

        resp = await client.post("/feedback", data=orjson.dumps({"prediction_id": "", "label": 1}))
        assert resp.status == 400 and (await resp.json())["field"] == "prediction_id"
        resp = await client.post("/feedback", data=b"[]")
        assert resp.status == 400 and (await resp.json())["error"] == "empty batch"
        resp = await client.post("/feedback", data=b"[1]")
        assert resp.status == 400

        big = [{**PREDICTION, "prediction_id": f"big{i}"} for i in range(100)]
        resp = await client.post("/predictions", data=orjson.dumps(big))
        assert resp.status == 413 and "limit" in (await resp.json())["error"]

        # nothing of the rejected requests was produced
        assert await consume(settings, settings.topics.predictions, 1, timeout=1.5) == []

    run_with_client(settings, scenario, max_body_bytes=4096)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_openapi_parses_and_matches_the_routes() -> None:
    spec = yaml.safe_load((REPO / "infra" / "openapi.yaml").read_text())
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["version"] == driftline.__version__  # the API is the package's, one version
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert set(ROUTES) | {("GET", "/healthz")} <= documented  # and the worker's /query, /metrics, /
    # every operation needs the bearer token but the health checks
    open_paths = {"/healthz", "/ping", "/replicas_status"}
    assert spec["security"] == [{"bearerAuth": []}]
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert (op.get("security") == []) == (path in open_paths)
            assert path in open_paths or "401" in op["responses"]

    app = web.Application()
    add_ingest_routes(app, Settings.model_validate({}))
    registered = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    assert registered == set(ROUTES)

    for ref in _refs(spec):
        if ref.startswith("#/"):
            target: Any = spec
            for part in ref[2:].split("/"):
                target = target[part]  # internal references resolve
        else:  # the generated event schemas: schemas/<EVENT_MODELS key>.schema.json
            name = Path(ref).name.removesuffix(".schema.json")
            assert Path(ref).parent.name == "schemas" and name in EVENT_MODELS
            generated = REPO / "schemas" / Path(ref).name
            if generated.exists():
                assert orjson.loads(generated.read_bytes())["title"] == EVENT_MODELS[name].__name__


def test_serve_command_mounts_the_routes() -> None:
    args = build_parser().parse_args(["serve", "--port", "0", "--max-body-bytes", "1024"])
    assert args.handler.__module__ == "driftline.cli.serve"
    app = build_app(args, Settings.model_validate({}))
    health = {("GET", "/healthz"), ("HEAD", "/healthz")}  # open, for load balancers and compose
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    assert routes == set(ROUTES) | health


@pytest.mark.integration
def test_serve_requires_a_bearer_token_when_tokens_are_set(settings: Settings) -> None:
    token = "serve-token-5e1d-DO-NOT-LOG"
    secured = settings.model_copy(update={"worker": WorkerSettings(auth_tokens=[token])})
    app = build_app(build_parser().parse_args(["serve"]), secured)

    async def main() -> None:
        async with TestClient(TestServer(app)) as client:
            for headers in ({}, {"Authorization": "Bearer serve-token-5e1d-wrong"}):
                for path in ("/predictions", "/feedback"):
                    resp = await client.post(path, data=orjson.dumps(PREDICTION), headers=headers)
                    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await client.get("/healthz")).status == 200
            resp = await client.post("/predictions", data=orjson.dumps(PREDICTION),
                                     headers={"Authorization": f"Bearer {token}"})
            assert resp.status == 202, await resp.text()
        records = await consume(settings, settings.topics.predictions, 1)
        assert [r.key for r in records] == [b"h1"]  # only the authenticated request was produced

    asyncio.run(main())
