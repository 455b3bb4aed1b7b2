"""stop() while a revocation's checkpoint pass is refused by the broker, on a real broker: the write
is given up (commit 6791dcf) and the runner ends as after a kill, quietly -- a warning, not a
"rebalance callback failed" traceback, and no listener error left for the run loop to raise."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from harness import ProxiedBroker, load_module, start_proxied_broker

from driftline.config import Settings
from driftline.kafka.clients import aiokafka_consumer
from driftline.streams.runner import StageRunner

pytestmark = pytest.mark.integration


oh = load_module(Path(__file__).with_name("test_streams_runner_outage.py"), "streams_runner_outage_harness")


@pytest.fixture
def cut_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProxiedBroker]:
    monkeypatch.setattr(harness, "TcpProxy", oh.ClientCutProxy)  # the proxy start_proxied_broker starts
    broker = start_proxied_broker(tmp_path / "broker.log")
    try:
        yield broker
    finally:
        broker.stop()


def test_stop_during_a_refused_revocation_pass_ends_quietly(
        cut_broker: ProxiedBroker, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A member joins while the checkpoints' producer is cut: the runner's revocation pass retries
    its links; stop() then gives them up. The runner returns within seconds without an error,
    checkpoints nothing, and logs no failed rebalance callback."""
    s = oh._outage_settings(settings, cut_broker, monkeypatch)
    # No checkpoint between batches: the revocation's pass is the first write the cut refuses.
    s = s.model_copy(update={"worker": s.worker.model_copy(update={"checkpoint_interval_s": 3600.0})})
    caplog.set_level(logging.INFO, logger="driftline")
    asyncio.run(_stopped_in_revocation(s, cut_broker.proxy))
    failed = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("driftline")]
    assert not failed, [r.getMessage() for r in failed]
    assert any("given up on stop" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def _stopped_in_revocation(s: Settings, proxy: Any) -> None:
    clients = await oh.CutClients.start(s)
    inputs = clients.inputs
    factory = oh.EchoFactory(s.topics.outcomes)
    runner = StageRunner(s, "revoked", "revoked-stop", [s.topics.predictions, s.topics.labels], factory,
                         producer=clients.outputs, checkpoints=clients.store)
    retrying = asyncio.Event()  # the revocation's pass waits between attempts at a link
    sleep = runner._sleep

    async def retry_wait(seconds: float) -> None:
        retrying.set()
        await sleep(seconds)

    runner._sleep = retry_wait  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    other = aiokafka_consumer(s, runner.group_id, partition_assignment_strategy=(RangePartitionAssignor,))

    def until(done: Any, what: str) -> Any:
        return oh.rh.until_running(task, done, what, detail=lambda: runner.stats)

    try:
        await until(lambda: len(runner.shards) == s.topics.partitions, "shards assigned")
        for topic in (s.topics.predictions, s.topics.labels):
            for i in range(oh.N_PER_TOPIC):
                await inputs.send(topic, b"x", key=f"k{i}".encode())
        await inputs.flush()
        await until(lambda: sum(factory.processed.values()) == 2 * oh.N_PER_TOPIC, "inputs processed")
        assert runner.stats.checkpoints == 0 and any(state.dirty for state in runner.shards.values())
        proxy.cut_client("checkpoints")
        await other.start()
        other.subscribe([s.topics.predictions, s.topics.labels])
        await until(retrying.is_set, "the revocation's pass retrying")
        runner.stop()
        started = time.monotonic()
        await asyncio.wait([task], timeout=10)
        stopped_in = time.monotonic() - started
        assert task.done() and task.exception() is None, stopped_in
        assert stopped_in < 3.0, stopped_in  # a wait slice, the attempt under way, leaving the group
        assert runner._listener_error is None, runner._listener_error
        assert runner.stats.checkpoints == 0, runner.stats
    finally:
        proxy.restore_client("checkpoints")
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await other.stop()
        await clients.stop()
