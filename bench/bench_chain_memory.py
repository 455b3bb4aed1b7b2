"""Memory a checkpoint chain costs the worker while it is written and read back (issue 19).

At 10M pending a worker (4 shards, a 64 MB budget each) peaked at 3.2 GB before a SIGKILL and at
2.6 GB while restoring, where its tables need ~1 GB. This bench isolates what the checkpoint store
itself adds, in one process on a fresh embedded broker (no join: the blobs are random bytes, as
packed doubles nearly are):

- **write**: every shard's base (a file, as ``StageRunner._write_base`` hands it over) written at
  once through ``save_link`` (with a local copy: ``worker.state_dir``), then its deltas one by
  one: the process's peak RSS over what it held before, and what it holds after (and trimmed);
- **read**: ``load_all`` of every shard's chain (the bases from their local copies, the deltas from
  the broker) as a restarted runner does, then each shard's deltas walked and its checkpoint let
  go in turn as ``on_assigned`` restores them: RSS held once the chains are read, and the peak.

Each figure is measured for the checkpoint module of a baseline commit (``--baseline``, imported
from ``git show``) and for today's, alternating rounds, each round's peak taken from VmHWM reset
just before it (/proc/self/clear_refs). Run it as

    .venv/bin/python bench/bench_chain_memory.py [--base-mb 128] [--delta-mb 16] [--deltas 6]
        [--shards 4] [--rounds 2] [--baseline HEAD]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from aiokafka import AIOKafkaProducer

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_producer_kwargs
from driftline.local.broker import running_broker
from driftline.pipeline.state import BlobFile, release_free_memory
from driftline.streams import checkpoint as today

STAGE = "bench"
PIECE = 8 * 2**20


def status_mb(field_name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """VmHWM restarts from the current RSS (Linux >= 4.0): the next peak is the step's own."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def settle() -> float:
    """Collect, trim, reset the peak; the RSS now (MB)."""
    gc.collect()
    release_free_memory()
    reset_peak()
    return status_mb("VmRSS")


def baseline_module(commit: str) -> ModuleType:
    """``streams/checkpoint.py`` as of ``commit``, imported under another name."""
    source = subprocess.run(["git", "show", f"{commit}:streams/checkpoint.py"], check=True,
                            capture_output=True, cwd=Path(__file__).resolve().parent.parent).stdout
    path = Path(tempfile.mkdtemp(prefix="bench-chain-")) / "baseline_checkpoint.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("baseline_checkpoint", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def blob_file(directory: Path, megabytes: int) -> BlobFile:
    """``megabytes`` MB of random bytes in an unlinked file, written a piece at a time."""
    file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (the BlobFile returned owns it)
    size = megabytes * 2**20
    for _ in range(0, size, PIECE):
        file.write(os.urandom(PIECE))
    file.flush()
    return BlobFile(file, size)


async def write_chains(module: ModuleType, settings: Settings, producer: AIOKafkaProducer,
                       shards: Sequence[int], base_mb: int, deltas: int, delta_mb: int,
                       spool: Path) -> dict[str, float]:
    """Every shard's base at once, then its deltas: (MB) before, peak over before, after, trimmed."""
    store = module.CheckpointStore(settings, producer)
    await store.start()
    bases = [blob_file(spool, base_mb) for _ in shards]
    links = [os.urandom(delta_mb * 2**20) for _ in range(deltas)]
    before = settle()
    started = time.perf_counter()
    writes = [store.save_link(STAGE, shard, blob, {("preds", shard): 1}, base=True, parent=None)
              for shard, blob in zip(shards, bases, strict=True)]
    parents = await asyncio.gather(*writes)
    base_peak = status_mb("VmHWM") - before
    for shard, parent in zip(shards, parents, strict=True):
        for i, delta in enumerate(links):
            parent = await store.save_link(STAGE, shard, delta, {("preds", shard): 2 + i}, base=False,
                                           parent=parent)
    seconds = time.perf_counter() - started
    await store.local_copies_kept()
    peak = status_mb("VmHWM") - before
    after = status_mb("VmRSS") - before
    for blob in bases:
        blob.close()
    await store.stop()
    del links
    trimmed = settle() - before
    return {"base peak": base_peak, "peak": peak, "after": after, "trimmed": trimmed, "seconds": seconds}


async def read_chains(module: ModuleType, settings: Settings, producer: AIOKafkaProducer,
                      shards: Sequence[int], expect_deltas: int) -> dict[str, float]:
    """``load_all`` of the shards' chains, then each checkpoint's deltas walked and let go in turn."""
    store = module.CheckpointStore(settings, producer)
    await store.start()
    before = settle()
    started = time.perf_counter()
    saved = await store.load_all(STAGE, shards)
    read_s = time.perf_counter() - started
    held = status_mb("VmRSS") - before
    read_peak = status_mb("VmHWM") - before
    walked = 0
    for shard in shards:
        checkpoint = saved.pop(shard)
        assert len(checkpoint.deltas) == expect_deltas, (shard, len(checkpoint.deltas))
        for delta in checkpoint.deltas:  # as ShardProcessor.restore applies them
            walked += len(delta)
            del delta
        close = getattr(checkpoint, "close", None)
        if close is not None:
            close()
        elif isinstance(checkpoint.blob, BlobFile):
            checkpoint.blob.close()
        del checkpoint
    peak = status_mb("VmHWM") - before
    await store.stop()
    after = settle() - before
    return {"held": held, "read peak": read_peak, "peak": peak, "after": after, "seconds": read_s,
            "delta MB walked": walked / 2**20}


async def run(args: argparse.Namespace, settings: Settings, modules: dict[str, ModuleType],
              spool: Path) -> None:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        shards = list(range(args.shards))
        figures: dict[tuple[str, str], list[dict[str, float]]] = {}
        names = list(modules)
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                wrote = await write_chains(modules[name], settings, producer, shards, args.base_mb,
                                           args.deltas, args.delta_mb, spool)
                figures.setdefault((name, "write"), []).append(wrote)
                print(f"round {round_} {name} write: " + fmt(wrote), flush=True)
                read = await read_chains(modules[name], settings, producer, shards, args.deltas)
                figures.setdefault((name, "read"), []).append(read)
                print(f"round {round_} {name} read: " + fmt(read), flush=True)
        print(f"{args.shards} shards, a {args.base_mb} MB base and {args.deltas} deltas of "
              f"{args.delta_mb} MB each, bases local (worker.state_dir); best (lowest) of each figure "
              "over the rounds, MB:")
        for (name, step), runs in sorted(figures.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            best = {key: min(r[key] for r in runs) for key in runs[0]}
            print(f"  {step:5} {name:8}: " + fmt(best))
    finally:
        await producer.stop()


def fmt(figures: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.1f}" if k == "seconds" else f"{k} {v:,.0f}" for k, v in figures.items())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--base-mb", type=int, default=128, help="each shard's base (a 10M worker's: ~630)")
    parser.add_argument("--delta-mb", type=int, default=16, help="each delta (the 10M run's: ~20)")
    parser.add_argument("--deltas", type=int, default=6, help="deltas after each base (the 10M run's: 6-8)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", default="HEAD", help="commit whose checkpoint module is compared")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    modules: dict[str, Any] = {"baseline": baseline_module(args.baseline), "today": today}
    with tempfile.TemporaryDirectory(prefix="driftline-chain-memory-") as tmp, running_broker() as broker:
        home = Path(tmp)
        settings = Settings(home=home, kafka={"bootstrap_servers": broker.bootstrap_servers},
                            worker={"state_dir": str(home / "state")})
        ensure_topics(settings)
        asyncio.run(run(args, settings, modules, home))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
