"""What a restore reads of a chain topic holding two bases (issue 19), on the embedded broker.

A generation holds up to ``ROTATE_FACTOR`` (2) bases. This bench writes one shard's generation as
a worker does (base 1, deltas, base 2, deltas: ``--mb`` MB a base, incompressible) through
``CheckpointStore`` on a fresh embedded broker, then restores it ``--rounds`` times, alternating in
one process two ways of reading it:

- ``last base``: ``load_all`` as a worker restores (from where the topic's last record says the last
  base starts);
- ``from 0``: the same topic read from offset 0 and assembled the same way (what the reader did
  before issue 19, and still does for chunks that name no start).

It prints, per way, the bytes read from the broker and the median wall and CPU seconds (the
reading process's CPU time; the broker is another process), and checks both restore the same chain.

``--timed-deltas MB``: a 1 MB base and ``--deltas`` deltas of MB each written as a worker does, then
read back ``--rounds`` times by ``CheckpointStore.time_delta_read`` (what a live worker learns of
the broker's read speed once its chain's deltas hold 64 MiB): the MB/s each round, and the median.
A 10M-pending shard's delta is ~2.4 MB (``bench_checkpoints --issue19``: ~9.6 MB an interval, 4
shards), so ``--timed-deltas 2.4 --deltas 28`` is the first read a worker times.

``--threads-ab PENDING``: whether rebuilding two shards in two threads beats one after the other
(issue 19: a worker's last shard is live after the sum of their rebuilds). One ``LabelJoin`` of
PENDING pending predictions (25 float features) dumped as a base; then, alternating ``--rounds``
times in this process, two ``load_state`` of it one after the other and two at once in two
threads: wall time (best of the rounds) and the ratio. No broker.

    .venv/bin/python bench/bench_restore_read.py [--mb 70] [--deltas 4] [--rounds 3]
    .venv/bin/python bench/bench_restore_read.py --timed-deltas 2.4 --deltas 28 --rounds 5
    .venv/bin/python bench/bench_restore_read.py --threads-ab 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer, TopicPartition
from common import environment, environment_line

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_producer_kwargs
from driftline.local.broker import running_broker
from driftline.pipeline.state import BlobFile
from driftline.streams.checkpoint import Checkpoint, CheckpointStore, ReadFrom, chain_topic

STAGE, SHARD = "bench", 0


def _blob(chain: Checkpoint) -> bytes:
    blob = chain.blob
    if isinstance(blob, BlobFile):
        with blob.file:
            return blob.read()
    return bytes(blob)


async def _write(store: CheckpointStore, megabytes: int, deltas: int) -> bytes:
    """Base 1, ``deltas`` deltas, base 2, ``deltas`` deltas; returns base 2."""
    link = ""
    last = b""
    for n in range(2):
        last = os.urandom(megabytes * 10**6)
        link = await store.save_link(STAGE, SHARD, last, {("preds", 0): n * 100}, base=True, parent=None)
        for i in range(deltas):
            link = await store.save_link(STAGE, SHARD, os.urandom(200_000), {("preds", 0): n * 100 + i + 1},
                                         base=False, parent=link)
    return last


async def _read(store: CheckpointStore, settings: Settings, way: str) -> tuple[Checkpoint, float, float, int]:
    """(chain, wall s, CPU s, bytes read) of one restore ``way``."""
    before = store.bytes_read
    wall, cpu = time.perf_counter(), time.process_time()
    if way == "last base":
        chain: Checkpoint | None = (await store.load_all(STAGE, [SHARD]))[SHARD]
    else:
        tp = TopicPartition(chain_topic(settings.topics.state, STAGE, SHARD, 0), 0)
        chain, _, _ = await store._read_chain_from(tp, 0, ReadFrom(0, 0))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert chain is not None
    return chain, wall, cpu, store.bytes_read - before


async def _main(settings: Settings, megabytes: int, deltas: int, rounds: int) -> None:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        writer = CheckpointStore(settings, producer)
        await writer.start()
        try:
            last = await _write(writer, megabytes, deltas)
        finally:
            await writer.stop()
        reader = CheckpointStore(settings, producer)
        await reader.start()
        figures: dict[str, list[tuple[float, float, int]]] = {"last base": [], "from 0": []}
        try:
            for _ in range(rounds):
                chains = {}
                for way, runs in figures.items():
                    chain, wall, cpu, read = await _read(reader, settings, way)
                    assert _blob(chain) == last and len(chain.deltas) == deltas
                    chains[way] = (chain.checkpoint_id, list(chain.deltas), chain.offsets)  # by value
                    runs.append((wall, cpu, read))
                assert chains["last base"] == chains["from 0"], "the two reads restored different chains"
        finally:
            await reader.stop()
        chain_mb = (megabytes * 10**6 + deltas * 200_000) / 1e6
        print(f"a generation of two {megabytes} MB bases, {deltas} deltas after each; the chain restored "
              f"is {chain_mb:.1f} MB; {rounds} alternating rounds, medians:")
        for way, runs in figures.items():
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"  {way:>9}: {runs[0][2] / 1e6:7.1f} MB from the broker, {wall:5.2f} s wall, "
                  f"{cpu:5.2f} CPU-s")
    finally:
        await producer.stop()


async def _timed_deltas(settings: Settings, delta_mb: float, deltas: int,
                        rounds: int) -> list[tuple[int, float]]:
    """(bytes, seconds) of ``rounds`` reads of ``deltas`` deltas of ``delta_mb`` MB after a base."""
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    store = CheckpointStore(settings, producer)
    await store.start()
    try:
        link = await store.save_link(STAGE, SHARD, os.urandom(10**6), {("preds", 0): 0}, base=True,
                                     parent=None)
        for i in range(deltas):
            link = await store.save_link(STAGE, SHARD, os.urandom(int(delta_mb * 1e6)),
                                         {("preds", 0): i + 1}, base=False, parent=link)
        out = []
        for _ in range(rounds):
            timed = await store.time_delta_read(STAGE, SHARD)
            assert timed is not None and timed[0] >= deltas * delta_mb * 1e6, timed
            out.append(timed)
        return out
    finally:
        await store.stop()
        await producer.stop()


def timed_delta_reads(delta_mb: float, deltas: int, rounds: int) -> list[float]:
    """MB/s of each of ``rounds`` timed reads of ``deltas`` deltas of ``delta_mb`` MB, on a fresh
    embedded broker (as ``--timed-deltas``)."""
    with tempfile.TemporaryDirectory(prefix="driftline-restore-read-") as tmp, running_broker() as broker:
        settings = Settings(home=Path(tmp), kafka={"bootstrap_servers": broker.bootstrap_servers})
        ensure_topics(settings)
        reads = asyncio.run(_timed_deltas(settings, delta_mb, deltas, rounds))
    return [read / 1e6 / seconds for read, seconds in reads]


def threads_ab(pending: int, rounds: int) -> None:
    """``--threads-ab``: two restores of one base, one after the other against two threads at once."""
    import gc
    from concurrent.futures import ThreadPoolExecutor

    from bench_join_state import events, floats

    from driftline.operators.join import LabelJoin
    from driftline.pipeline.state import dump_state, load_state

    join = LabelJoin(horizon_ms=10 * pending * 1000, max_pending=pending + 1, max_held=1000)
    for event in events(pending, floats, step_ms=1):
        join.on_prediction(event, segment="region=eu")
    blob = dump_state(join)
    del join
    gc.collect()

    def restore() -> None:
        load_state(blob, LabelJoin, "bench")  # let go at once: one join alive a thread

    walls: dict[str, list[float]] = {"one after the other": [], "two threads": []}
    with ThreadPoolExecutor(2) as pool:
        for _ in range(rounds):
            for way in walls:
                gc.collect()
                started = time.perf_counter()
                if way == "two threads":
                    for future in [pool.submit(restore), pool.submit(restore)]:
                        future.result()
                else:
                    restore()
                    restore()
                walls[way].append(time.perf_counter() - started)
    best = {way: min(times) for way, times in walls.items()}
    print(f"two restores of a {len(blob) / 1e6:.0f} MB base ({pending:,} pending), best of {rounds} "
          f"(wall): " + ", ".join(f"{way} {seconds:.2f} s" for way, seconds in best.items())
          + f"; two threads / one after the other {best['two threads'] / best['one after the other']:.2f}x; "
          f"load {os.getloadavg()[0]:.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mb", type=int, default=70, help="MB a base (70: a 1M-pending shard's)")
    parser.add_argument("--deltas", type=int, default=4, help="deltas after each base")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the two reads")
    parser.add_argument("--timed-deltas", type=float, default=0.0,
                        help="MB a delta: time reading --deltas of them back as a live worker does")
    parser.add_argument("--threads-ab", type=int, default=0,
                        help="PENDING: two restores of a join's base one after the other vs in two threads")
    args = parser.parse_args(argv)
    print(environment_line(environment()))
    if args.threads_ab:
        threads_ab(args.threads_ab, args.rounds)
        return 0
    if args.timed_deltas:
        speeds = timed_delta_reads(args.timed_deltas, args.deltas, args.rounds)
        each = ", ".join(f"{s:.0f}" for s in speeds)
        print(f"{args.deltas} deltas of {args.timed_deltas:g} MB read back by time_delta_read, {args.rounds} "
              f"rounds: {each} MB/s (median {statistics.median(speeds):.0f}); load {os.getloadavg()[0]:.1f}")
        return 0
    with tempfile.TemporaryDirectory(prefix="driftline-restore-read-") as tmp, running_broker() as broker:
        settings = Settings(home=Path(tmp), kafka={"bootstrap_servers": broker.bootstrap_servers})
        ensure_topics(settings)
        asyncio.run(_main(settings, args.mb, args.deltas, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
