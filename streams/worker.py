"""What one worker process runs, independent of Faust: clients, the three runners, ClickHouse.

Roles: ``all`` (stage 1, stage 2 and the sink), ``processor`` (stages 1 and 2) and ``sink``.
With the embedded ClickHouse only one process may run the sink (chDB opens a directory in one
process); it records itself as the engine owner with its ``/query`` URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from driftline.client.http import worker_url
from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_producer, start_client, stop_producer
from driftline.kafka.groups import consumer_group
from driftline.pipeline.stage import StageFactory
from driftline.store.client import connect, database_name
from driftline.store.embedded_reader import EmbeddedReader
from driftline.store.guard import QueryLimits
from driftline.store.migrate import migrate
from driftline.store.owner import claim_owner, release_owner
from driftline.store.writer import ClickHouseRowWriter
from driftline.streams.checkpoint import CheckpointStore
from driftline.streams.query_endpoint import QueryHandler, make_query_handler
from driftline.streams.runner import StageRunner
from driftline.streams.sink import SinkRunner

log = logging.getLogger(__name__)

Role = Literal["all", "processor", "sink"]
ROLES: tuple[Role, ...] = ("all", "processor", "sink")
SHARD_STAGE, MODEL_STAGE = "shard", "model"
STOP_TIMEOUT_S = 30.0
PRODUCER_FLUSH_S = 5.0
"""How long a stopping worker waits for its producer to flush once the runners are done: they
await what they checkpoint past, so what is left belongs to writes given up in an outage."""


def default_factories(settings: Settings) -> tuple[StageFactory, StageFactory]:
    from driftline.pipeline.model import ModelFactory
    from driftline.pipeline.shard import ShardFactory

    return ShardFactory(settings), ModelFactory(settings)


@dataclass
class WorkerRuntime:
    settings: Settings
    role: Role = "all"
    factories: Callable[[Settings], tuple[StageFactory, StageFactory]] = default_factories
    runners: list[StageRunner] = field(default_factory=list)
    sink: SinkRunner | None = None
    query_handler: QueryHandler | None = None
    clickhouse_reader: EmbeddedReader | None = None  # the ClickHouse HTTP interface (embedded engine)
    started_at: float = field(default_factory=time.monotonic)
    web_port: int | None = None  # the port the web server bound (worker.web_port, or what 0 got)
    _producer: AIOKafkaProducer | None = None
    _producer_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _store: CheckpointStore | None = None
    _writer: ClickHouseRowWriter | None = None
    _engine_lock: threading.Lock = field(default_factory=threading.Lock)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _owner_claimed: bool = False
    failure: BaseException | None = None

    @property
    def runs_processors(self) -> bool:
        return self.role in ("all", "processor")

    @property
    def runs_sink(self) -> bool:
        return self.role in ("all", "sink")

    def query_url(self) -> str:
        return worker_url(self.settings, "/query", port=self.web_port)

    def prepare_store(self) -> None:
        """Open ClickHouse and migrate (sink roles; before the web server so /query can be mounted)."""
        if not self.runs_sink:
            return
        client = connect(self.settings)
        try:
            applied = migrate(client, self.settings)
        except BaseException:
            client.close()
            raise
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        self._writer = ClickHouseRowWriter(client, database_name(self.settings),
                                           max_buffer_rows=self.settings.worker.sink_max_buffer_rows)
        limits = QueryLimits.from_settings(self.settings)
        self.query_handler = make_query_handler(
            lambda: connect(self.settings, readonly=True, limits=limits.clickhouse_settings()),
            self._engine_lock, limits)
        if self.settings.clickhouse.embedded:
            self.clickhouse_reader = EmbeddedReader(self.settings, self._engine_lock, limits)

    async def producer(self) -> AIOKafkaProducer:
        """The process's shared producer (stage outputs, checkpoints, HTTP ingest), started once."""
        async with self._producer_lock:
            if self._producer is None:
                producer = aiokafka_producer(self.settings)
                await start_client(producer, self.settings, "producer")  # stops it if start fails
                self._producer = producer
            return self._producer

    async def start(self) -> None:
        created = await asyncio.to_thread(ensure_topics, self.settings)
        if created:
            log.info("created topics: %s", ", ".join(created))
        if self.runs_sink and self.settings.clickhouse.embedded:
            claim_owner(self.settings.home, self.query_url())
            self._owner_claimed = True
        if self.runs_processors:
            producer = await self.producer()
            self._store = CheckpointStore(self.settings, producer)
            await self._store.start()
            shard_factory, model_factory = self.factories(self.settings)
            t = self.settings.topics
            self.runners = [
                # repartition: records another shard read and re-routed to the one joining them
                StageRunner(self.settings, SHARD_STAGE, consumer_group(self.settings, "shard"),
                            [t.predictions, t.labels, t.repartition], shard_factory, [t.profiles],
                            producer=producer, checkpoints=self._store),
                StageRunner(self.settings, MODEL_STAGE, consumer_group(self.settings, "model"),
                            [t.model_events], model_factory, [t.profiles, t.retrain_triggers],
                            producer=producer, checkpoints=self._store),
            ]
            for runner in self.runners:
                self._spawn(runner.stage, runner.run())
        if self.runs_sink:
            assert self._writer is not None, "prepare_store() first"
            self.sink = SinkRunner(self.settings, self._writer, lock=self._engine_lock)
            self._spawn("sink", self.sink.run())

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=f"driftline-{name}")
        self._tasks[name] = task
        task.add_done_callback(lambda t: self._on_done(name, t))

    def _on_done(self, name: str, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self.failure is None:
            self.failure = task.exception()
            log.error("%s runner failed: %r", name, self.failure)

    async def wait_failed(self) -> BaseException:
        """Return the first runner failure (waits until one happens)."""
        while self.failure is None:
            await asyncio.sleep(0.2)
        return self.failure

    async def stop(self) -> None:
        """Stop the runners (each saves its final checkpoints), then the clients; release ownership."""
        for runner in self.runners:
            runner.stop()
        if self.sink is not None:
            self.sink.stop()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks.values(), timeout=STOP_TIMEOUT_S)
            for task in pending:
                log.error("a runner did not stop within %ss; cancelling it", STOP_TIMEOUT_S)
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task
        if self._store is not None:
            await self._store.stop()
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                await stop_producer(self._producer, PRODUCER_FLUSH_S)
        if self._writer is not None:
            with self._engine_lock, contextlib.suppress(Exception):
                self._writer.close()
        if self._owner_claimed:
            release_owner(self.settings.home)

    # -- health and progress ---------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        parts: dict[str, object] = {r.stage: r.running for r in self.runners}
        if self.sink is not None:
            parts["sink"] = self.sink.running
        # (no parts yet: start() is still creating the topics, nothing runs)
        ok = self.failure is None and bool(parts) and all(bool(v) for v in parts.values())
        # Not a liveness failure: the sink is alive and waits for the table (`db migrate`, or a
        # dropped column added back), then goes on by itself.
        behind = sorted(t for t, flag in self.sink.stats.schema_behind.items() if flag) if self.sink else []
        return {"ok": ok, "role": self.role, "runners": parts,
                "failure": repr(self.failure) if self.failure else None,
                "ready": ok and not behind, "sink_schema_behind": behind}

    def progress(self) -> tuple[int, int]:
        """(records consumed so far, total lag): the worker is idle when the first stops moving and
        the second is 0."""
        seen = sum(sum(r.stats.records_in.values()) + r.stats.broadcast_in for r in self.runners)
        lag = sum(sum(r.lag().values()) for r in self.runners)
        if self.sink is not None:
            seen += sum(self.sink.stats.messages_in.values())
            lag += sum(self.sink.lag().values())
        return seen, lag
