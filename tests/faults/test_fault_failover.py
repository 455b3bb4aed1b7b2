"""(e) Two `--role processor` workers share the shards; one is SIGKILLed mid-run, the other takes
over its shards from their checkpoints; a separate `--role sink` writes ClickHouse. The tables
must equal the clean single-process run's."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from harness import (
    RssSampler,
    Stream,
    Worker,
    assert_same_tables,
    drain_sink,
    dump_tables,
    run_env,
    start_watched,
    stop_when_idle,
    wait_until,
    workers,
)

pytestmark = pytest.mark.integration


def _owned(worker: Worker, stage: str) -> float:
    return worker.metric_sum("driftline_shards_owned", stage=stage)


def _failover(
    stream: Stream, root: Path, clean: dict[str, list[list[str]]], rounds: int, seed: int, run: str
) -> None:
    rng = random.Random(seed)
    env = run_env(stream, run, root)
    log = root / f"{run}.log"
    n = stream.counts["predictions"]
    with workers() as started, RssSampler() as rss:
        sink = start_watched(started, rss, env, log, role="sink", idle=None, home=root / run / "sink-home")
        # No idle exit while the victim lives: the survivor may finish its own shards first. It is
        # stopped once idle after taking every shard (stop_when_idle below).
        survivor = start_watched(
            started, rss, env, log, role="processor", idle=None, home=root / run / "a-home"
        )
        for i in range(rounds):
            victim = start_watched(
                started, rss, env, log, role="processor", idle=None, home=root / run / f"b{i}-home"
            )
            # Both members own shards of the shard stage: the partitions are really shared.
            wait_until(
                lambda v=victim: _owned(v, "shard") > 0 and _owned(survivor, "shard") > 0,
                120,
                "both processors to own shards",
                alive=[victim, survivor, sink],
            )
            base = victim.predictions_in()
            target = base + rng.uniform(0.02, 0.15) * n
            wait_until(
                # ... or the two have consumed everything between them: the survivor may have read
                # most of the victim's shards before the rebalance, leaving it less than the target.
                lambda v=victim, t=target: (
                    v.predictions_in() >= t or survivor.predictions_in() + v.predictions_in() >= n
                ),
                120,
                "progress",
                alive=[victim, survivor],
            )
            victim.kill()
        wait_until(
            lambda: _owned(survivor, "shard") == stream.partitions,
            60,
            "the survivor to take every shard",
            alive=[survivor],
        )
        stop_when_idle(survivor, stream.partitions)
        drain_sink(sink)
    print(f"{rounds} failover(s); {rss.check()}")
    assert_same_tables(dump_tables(root, run), clean)


def test_processor_sigkilled_while_sharing_partitions(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    _failover(fault_stream, fault_root, clean_tables, rounds=1, seed=5, run="failover")


@pytest.mark.soak
def test_processor_failover_repeated(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    _failover(fault_stream, fault_root, clean_tables, rounds=4, seed=6, run="failover_soak")
