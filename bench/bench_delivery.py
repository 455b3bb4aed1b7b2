"""Producing stage outputs: ``streams.delivery.deliver`` (record batches) vs one ``send()`` per message.

Same embedded broker, same producer, same messages, alternating runs: half explicit-partition
model-events records, half keyed outcomes (partition chosen by the default partitioner). The
per-message path is what ``deliver`` did before it built batches; it is the baseline here.

    .venv/bin/python bench/bench_delivery.py [--n 200000] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from common import bench_settings

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_producer
from driftline.local.broker import running_broker
from driftline.pipeline.stage import OutboundMessage
from driftline.streams.delivery import deliver

CHUNK = 5000  # messages per deliver() call, like one stage batch


def messages(settings: Settings, n: int) -> list[OutboundMessage]:
    out = []
    for i in range(n):
        if i % 2:
            key = str(uuid.UUID(int=i * 7919)).encode()
            out.append(OutboundMessage(settings.topics.outcomes, key, b'{"x":%d,' % i + b"y" * 300))
        else:
            out.append(OutboundMessage(settings.topics.model_events, b"m", b'{"y":%d,' % i + b"z" * 200, 0))
    return out


async def per_message(producer: AIOKafkaProducer, batch: Sequence[OutboundMessage]) -> None:
    futures = [await producer.send(m.topic, m.value, key=m.key, partition=m.partition) for m in batch]
    await asyncio.gather(*futures)


async def measure(settings: Settings, msgs: list[OutboundMessage], rounds: int) -> dict[str, float]:
    producer = aiokafka_producer(settings)
    await producer.start()
    try:
        await deliver(producer, msgs[:100])  # metadata
        cpu: dict[str, float] = {"per-message send()": 0.0, "deliver() batches": 0.0}
        for r in range(rounds):
            order = list(cpu) if r % 2 == 0 else list(reversed(cpu))
            for name in order:
                c0 = time.process_time()
                send = deliver if name.startswith("deliver") else per_message
                for i in range(0, len(msgs), CHUNK):
                    await send(producer, msgs[i : i + CHUNK])
                cpu[name] += time.process_time() - c0
        return {name: rounds * len(msgs) / seconds for name, seconds in cpu.items()}
    finally:
        await producer.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 10_000, 1
    with running_broker() as broker:
        settings = bench_settings(broker.bootstrap_servers, f"bd{uuid.uuid4().hex[:6]}")
        ensure_topics(settings)
        rates = asyncio.run(measure(settings, messages(settings, args.n), args.rounds))
    for name, rate in rates.items():
        print(f"{name:20s} {rate:12,.0f} messages per CPU-second")
    base, new = rates["per-message send()"], rates["deliver() batches"]
    print(f"deliver() / per-message: {new / base:.1f}x ({args.n:,} messages x {args.rounds} rounds, one run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
