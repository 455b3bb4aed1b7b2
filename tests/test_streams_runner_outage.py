"""StageRunner through a produce outage longer than ``max_poll_interval_ms``, on a real broker.

Only the runner's producer is cut (its outputs' or its checkpoints'): every connection goes
through a proxy that cuts one Kafka client's connections, told apart by the client id its
requests carry, and refuses that client's new ones, while the runner's consumer keeps talking
to its group coordinator -- as when the leader of the output partitions is unreachable. The
runner waits between produce retries; aiokafka leaves the group when no ``getmany`` ran for
``max_poll_interval_ms``, so those waits must be ``getmany`` calls on the paused partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import harness
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from harness import ProxiedBroker, TcpProxy, load_module, start_proxied_broker

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_consumer, aiokafka_producer_kwargs
from driftline.operators.validate import RawRecord
from driftline.pipeline.gauges import Gauge
from driftline.pipeline.stage import OutboundMessage
from driftline.streams import runner as runner_module
from driftline.streams.checkpoint import CheckpointStore
from driftline.streams.runner import StageRunner

pytestmark = pytest.mark.integration


rh = load_module(Path(__file__).with_name("test_streams_runner.py"), "streams_runner_harness")

MAX_POLL_MS = 2000
OUTAGE_S = 3 * MAX_POLL_MS / 1000
N_PER_TOPIC = 200
LONG_ATTEMPT_MS = 30_000  # a produce attempt's request timeout: aiokafka's default is 40 s


class ClientCutProxy(TcpProxy):
    """A :class:`~harness.TcpProxy` that cuts the connections of one Kafka client (by the client id
    of the first request on each) and refuses its new ones until restored; others go on."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self._refused: set[str] = set()
        self._owners: dict[asyncio.StreamWriter, str] = {}

    def cut_client(self, client_id: str) -> None:
        self._call(self._cut_client(client_id))

    def restore_client(self, client_id: str) -> None:
        self._call(self._restore_client(client_id))

    async def _cut_client(self, client_id: str) -> None:
        self._refused.add(client_id)
        for writer, owner in list(self._owners.items()):
            if owner == client_id:
                writer.transport.abort()

    async def _restore_client(self, client_id: str) -> None:
        self._refused.discard(client_id)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        # A request: int32 size, then int16 api key, int16 version, int32 correlation id, and the
        # client id as an int16 length and its bytes.
        try:
            size = await client_reader.readexactly(4)
            body = await client_reader.readexactly(int.from_bytes(size, "big"))
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.target_port)
        except (OSError, asyncio.IncompleteReadError):
            client_writer.transport.abort()
            return
        length = int.from_bytes(body[8:10], "big", signed=True)
        client_id = body[10:10 + length].decode() if length > 0 else ""
        if client_id in self._refused:
            client_writer.transport.abort()
            upstream_writer.transport.abort()
            return
        self._writers.update((client_writer, upstream_writer))
        self._owners.update({client_writer: client_id, upstream_writer: client_id})
        upstream_writer.write(size + body)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.transport.abort()

        await asyncio.gather(pump(client_reader, upstream_writer), pump(upstream_reader, client_writer))
        for writer in (client_writer, upstream_writer):
            self._writers.discard(writer)
            self._owners.pop(writer, None)


class Echo:
    """Echoes every record; counts each (topic, partition, offset) it processed in ``processed``."""

    def __init__(self, out_topic: str, processed: Counter[tuple[str, int, int]]) -> None:
        self.out_topic, self.processed = out_topic, processed

    def process(self, records: Sequence[RawRecord]) -> list[OutboundMessage]:
        self.processed.update((r.topic, r.partition, r.offset) for r in records)
        return [OutboundMessage(self.out_topic, f"{r.topic}:{r.partition}:{r.offset}".encode(), b"")
                for r in records]

    def snapshot(self) -> bytes:
        return b"{}"

    def gauges(self) -> list[Gauge]:
        return []


class EchoFactory:
    def __init__(self, out_topic: str) -> None:
        self.out_topic = out_topic
        self.processed: Counter[tuple[str, int, int]] = Counter()

    def create(self, shard: int) -> Echo:
        return Echo(self.out_topic, self.processed)

    def restore(self, shard: int, blob: bytes) -> Echo:
        return Echo(self.out_topic, self.processed)


class CutClients:
    """A runner's producers, which :class:`ClientCutProxy` cuts by client id ("outputs" or
    "checkpoints": an attempt against a cut one fails after its ``request_timeout_ms``), the
    checkpoint store on the second, and a producer of the test's inputs (never cut). (Not a
    dataclass: the module is also loaded under another name, not in sys.modules.)"""

    def __init__(self, outputs: AIOKafkaProducer, checkpoints: AIOKafkaProducer, inputs: AIOKafkaProducer,
                 store: CheckpointStore) -> None:
        self.outputs, self.checkpoints, self.inputs, self.store = outputs, checkpoints, inputs, store

    @classmethod
    async def start(cls, s: Settings, request_timeout_ms: int = 500) -> CutClients:
        outputs, checkpoints = (AIOKafkaProducer(**{**aiokafka_producer_kwargs(s), "client_id": name,
                                                    "request_timeout_ms": request_timeout_ms})
                                for name in ("outputs", "checkpoints"))
        inputs = AIOKafkaProducer(**aiokafka_producer_kwargs(s))
        for producer in (outputs, checkpoints, inputs):
            await producer.start()
        store = CheckpointStore(s, checkpoints)
        await store.start()
        return cls(outputs, checkpoints, inputs, store)

    async def stop(self) -> None:
        await self.store.stop()
        for producer in (self.outputs, self.checkpoints, self.inputs):
            await producer.stop()


@pytest.fixture
def cut_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProxiedBroker]:
    monkeypatch.setattr(harness, "TcpProxy", ClientCutProxy)  # the proxy start_proxied_broker starts
    broker = start_proxied_broker(tmp_path / "broker.log")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("cut", ["outputs", "checkpoints"])
def test_a_produce_outage_longer_than_max_poll_interval_keeps_the_runner_in_its_group(
        cut: str, cut_broker: ProxiedBroker, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner blocked on its outputs (in ``deliver``), or on a checkpoint written between
    batches, for 3x ``max_poll_interval_ms``: same group generation throughout, every record
    processed once, and once the producer is back everything goes through."""
    asyncio.run(_outage(_outage_settings(settings, cut_broker, monkeypatch), cut_broker.proxy, cut))


def test_a_rebalance_while_the_runner_is_blocked_waits_for_it(
        cut_broker: ProxiedBroker, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A member joining while the runner is blocked on its outputs: the rebalance waits for the
    runner's listener, which waits for the blocked loop; the loop's waits must not wait for the
    rebalance in turn (a ``getmany`` does until the new assignment). Once the producer is back the
    runner goes on."""
    asyncio.run(_outage(_outage_settings(settings, cut_broker, monkeypatch), cut_broker.proxy, "outputs",
                        rival=True))


def _outage_settings(settings: Settings, cut_broker: ProxiedBroker,
                     monkeypatch: pytest.MonkeyPatch) -> Settings:
    s = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={
            "bootstrap_servers": cut_broker.bootstrap_servers, "session_timeout_ms": 3000,
            "heartbeat_interval_ms": 500, "rebalance_timeout_ms": 3000}),
        "worker": settings.worker.model_copy(update={"checkpoint_interval_s": 0.5}),
    })
    ensure_topics(s)
    monkeypatch.setattr(runner_module, "aiokafka_consumer",
                        functools.partial(aiokafka_consumer, max_poll_interval_ms=MAX_POLL_MS))
    return s


async def _outage(s: Settings, proxy: Any, cut: str, rival: bool = False) -> None:
    assert isinstance(proxy, ClientCutProxy)
    # An attempt against the cut producer fails in 0.5 s (its request timeout), well within
    # max_poll_interval_ms; only the waits between attempts are in getmany.
    clients = await CutClients.start(s)
    inputs = clients.inputs
    factory = EchoFactory(s.topics.outcomes)
    runner = StageRunner(s, "outage", f"outage-{cut}", [s.topics.predictions, s.topics.labels], factory,
                         producer=clients.outputs, checkpoints=clients.store)
    task = asyncio.create_task(runner.run())
    generations: list[int] = []
    other = aiokafka_consumer(s, runner.group_id, partition_assignment_strategy=(RangePartitionAssignor,))

    def until(done: Any, what: str) -> Any:
        return rh.until_running(task, done, what, detail=lambda: runner.stats)

    try:
        await until(lambda: len(runner.shards) == s.topics.partitions, "shards assigned")
        proxy.cut_client(cut)
        for topic in (s.topics.predictions, s.topics.labels):
            for i in range(N_PER_TOPIC):
                await inputs.send(topic, b"x", key=f"k{i}".encode())
        await inputs.flush()
        await until(lambda: runner.stats.blocked, "blocked")
        if rival:
            await other.start()
            other.subscribe([s.topics.predictions, s.topics.labels])
        blocked_at = time.monotonic()
        while time.monotonic() - blocked_at < OUTAGE_S:  # the outage lasts 3x max_poll_interval_ms
            assert runner.stats.blocked and not task.done()
            generations.append(_generation(runner))
            await asyncio.sleep(0.1)
        proxy.restore_client(cut)
        if rival:
            await until(lambda: not runner.stats.blocked, "unblocked")
            await until(lambda: runner.stats.rebalances > 1, "the rebalance done")
            runner.stop()
            await asyncio.wait_for(task, 30)
            return
        await until(lambda: not runner.stats.blocked and runner.stats.checkpoints > 0
                    and sum(factory.processed.values()) >= 2 * N_PER_TOPIC and not any(runner.lag().values()),
                    "caught up")
        generations.append(_generation(runner))
        runner.stop()
        await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await other.stop()
        await clients.stop()
    assert len(factory.processed) == 2 * N_PER_TOPIC and set(factory.processed.values()) == {1}, (
        Counter(factory.processed.values()))
    assert -1 not in generations and len(set(generations)) == 1, generations  # no leave, no rejoin


def _generation(runner: StageRunner) -> int:
    """The runner consumer's group generation (aiokafka has no public handle on it): -1 once it left."""
    consumer = runner._consumer
    assert consumer is not None
    return int(consumer._coordinator.generation)


@pytest.mark.parametrize("cut", ["outputs", "checkpoints"])
def test_stop_during_a_produce_outage_gives_the_batch_up_and_a_restart_reads_it_again(
        cut: str, cut_broker: ProxiedBroker, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() while the runner is blocked on its outputs (or on a checkpoint between batches)
    returns within seconds, not once the broker is back, and checkpoints nothing: with only the
    outputs cut its checkpoints would go through, and one covering the given-up batch would lose
    its outputs. A restart reads the batch again; the outputs equal an uninterrupted run's."""
    s = _outage_settings(settings, cut_broker, monkeypatch)
    asyncio.run(_stopped_in_outage(s, cut_broker.proxy, cut))


@pytest.mark.parametrize("cut", ["outputs", "checkpoints"])
def test_stop_during_a_long_produce_attempt_cuts_it_short(
        cut: str, cut_broker: ProxiedBroker, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() while the first attempt at the outputs (or at a checkpoint between batches) waits
    for a broker that refuses it, the producer's request_timeout_ms long (the default is 40 s,
    above the worker's 30 s stop timeout): the attempt is given up STOP_GRACE_S after stop(), not
    awaited to its end, nothing is checkpointed, and a restart's outputs are exact."""
    s = _outage_settings(settings, cut_broker, monkeypatch)
    asyncio.run(_stopped_in_outage(s, cut_broker.proxy, cut, request_timeout_ms=LONG_ATTEMPT_MS))


async def _stopped_in_outage(s: Settings, proxy: Any, cut: str, request_timeout_ms: int = 500) -> None:
    """With a short request timeout stop() comes once the runner is blocked (an attempt failed);
    with a long one while its first attempt waits."""
    assert isinstance(proxy, ClientCutProxy)
    clients = await CutClients.start(s, request_timeout_ms)
    store = clients.store
    links_begun: list[float] = []  # when each link's write began (time.monotonic)
    save_link = store.save_link

    async def noted_save_link(*args: Any, **kwargs: Any) -> str:
        links_begun.append(time.monotonic())
        return await save_link(*args, **kwargs)

    store.save_link = noted_save_link  # type: ignore[method-assign]
    group = f"stopped-{cut}-{request_timeout_ms}"
    runner = rh.make_runner(s, clients.outputs, store, group)
    task = asyncio.create_task(runner.run())

    def until(done: Any, what: str) -> Any:
        return rh.until_running(task, done, what, detail=lambda: runner.stats)

    try:
        await rh.produce_inputs(s, N_PER_TOPIC)
        await until(lambda: len(runner.shards) == s.topics.partitions and not any(runner.lag().values())
                    and not any(state.dirty for state in runner.shards.values()), "first half checkpointed")
        checkpointed, fed = runner.stats.checkpoints, sum(runner.stats.records_in.values())
        proxy.cut_client(cut)
        cut_at = time.monotonic()
        await rh.produce_inputs(s, N_PER_TOPIC)
        if request_timeout_ms < 1000:
            await until(lambda: runner.stats.blocked, "blocked")
        elif cut == "outputs":  # the batch fed: its outputs' first attempt waits
            await until(lambda: sum(runner.stats.records_in.values()) > fed, "a batch fed")
        else:  # the second half fed and its outputs delivered: the next link's attempt waits
            await until(lambda: sum(runner.stats.records_in.values()) == fed + 2 * N_PER_TOPIC
                        and bool(links_begun) and links_begun[-1] > cut_at, "a link begun")
        assert not runner.stats.blocked or request_timeout_ms < 1000  # no attempt failed yet
        runner.stop()
        started = time.monotonic()
        await asyncio.wait([task], timeout=request_timeout_ms / 1000 + 10)
        stopped_in = time.monotonic() - started
        assert task.done() and task.exception() is None, stopped_in
        # short: the attempt under way cut at once (one failed) and leaving the group; long: the
        # first attempt cut STOP_GRACE_S (5 s) after stop(), far below its request timeout
        bound = 3.0 if request_timeout_ms < 1000 else 8.0
        assert stopped_in < bound, stopped_in
        assert runner.stats.checkpoints == checkpointed, runner.stats  # nothing past the outage
    finally:
        proxy.restore_client(cut)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await clients.stop()
    again = await rh.run_until(s, group)
    if request_timeout_ms < 1000 or cut == "outputs":  # the given-up batch read again
        assert sum(again.stats.records_in.values()) >= 2 * N_PER_TOPIC, again.stats
    # else the link cut short may land once the broker is back (its chunks stay in the producer),
    # and the restart reads on from it: it covers only outputs acknowledged before it began
    outputs_read = await rh.read_all(s, s.topics.outcomes)
    assert set(outputs_read) == rh.simulate(s, await rh.input_log(s))  # the totals go on exactly
