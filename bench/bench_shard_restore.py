"""Stage-1 shards' restores, step by step: where a restart's memory peaks (issue 19).

This bench builds one shard's chain as the worker does (``--n`` pending predictions of
``bench_restart``'s workload, a base pickled into a file after ``--base-at`` of them, 90 % by
default, a delta every ``--every`` predictions after it, the first after ``--first-delta``: the
delta after a base carries every record added while the base was written), then restores it
``--shards`` times in a fresh process, one after the other in a thread and each kept, as
``StageRunner._restore`` rebuilds a worker's shards (``ShardFactory.restore`` from a
``BlobFile``, the deltas read one at a time, ``driftline worker``'s 2 glibc heaps, the heap
trimmed after each rebuild unless ``--no-trim``; ``--whole-deltas``: each delta's records applied
in one piece, as before ``join.core.APPLY_PIECE_BYTES``), sampling VmRSS every 2 ms. It prints, per
shard, over the RSS before the first: the highest sample and the RSS at the end of the base's
unpickling and of the deltas' apply, and after the trim.

    .venv/bin/python bench/bench_shard_restore.py --n 2500000 --base-at 1300000 --every 10000 \
        --budget-mb 64 --shards 4 [--dir DIR] [--no-trim]

(one 10M-pending worker's shard: 2.5M pending, a chain of ~120 deltas.) ``--dir`` keeps the chain
there and reuses it when it was built with the same options.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_restart import pending_records
from common import START_MS, bench_settings

from driftline.config import Settings
from driftline.operators.join import core as join_core
from driftline.operators.validate import RawRecord
from driftline.pipeline.shard import ShardFactory, ShardProcessor
from driftline.pipeline.state import BlobFile, limit_malloc_arenas, release_free_memory

BATCH = 5000  # predictions a process() call, the worker's batch_max_records order


def settings(n: int, budget_mb: float, spill_dir: Path) -> Settings:
    return bench_settings("localhost:1", "restore", topics={"partitions": 1},
                          join={"memory_budget_mb": budget_mb, "max_pending": n, "spill_dir": str(spill_dir)})


def build(directory: Path, n: int, base_at: int, every: int, first: int, budget_mb: float) -> None:
    """The chain: ``base.bin`` (the base blob) and ``deltas.bin`` (each delta after its 8-byte size)."""
    conf = settings(n, budget_mb, directory)
    shard = ShardProcessor(0, conf)
    shard.configure(conf)
    shard.track_changes()
    topic = conf.topics.predictions
    batch: list[RawRecord] = []
    started = time.perf_counter()
    with open(directory / "deltas.bin", "wb") as deltas:
        for i, record in enumerate(pending_records(n, conf, seed=1, start_ms=START_MS)):
            batch.append(RawRecord(topic, 0, i, record.timestamp_ms, record.key, record.value))
            done = i + 1
            if len(batch) == BATCH or done == n:
                shard.process(batch)
                batch = []
            if done == base_at:
                copy = shard.base_copy()
                blob = copy.dump_to_file(directory)
                copy.release()
                data = blob if isinstance(blob, bytes) else blob.read()
                (directory / "base.bin").write_bytes(data)
                del data, blob
            elif done > base_at and (done == n or _delta_due(done - base_at - first, every)):
                delta = shard.checkpoint(False)
                deltas.write(len(delta).to_bytes(8, "big") + delta)
    chain = {"n": n, "base_at": base_at, "every": every, "first": first}
    (directory / "chain.json").write_text(json.dumps(chain))
    print(f"built {n:,} pending in {time.perf_counter() - started:.0f} s: base "
          f"{(directory / 'base.bin').stat().st_size / 1e6:.0f} MB, deltas "
          f"{(directory / 'deltas.bin').stat().st_size / 1e6:.0f} MB", flush=True)


def _delta_due(since_first: int, every: int) -> bool:
    """A delta ends here: ``since_first`` predictions after the first delta's end."""
    return since_first >= 0 and since_first % every == 0


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Sampler:
    """VmRSS every ``every`` seconds in a thread; :meth:`step` ends a step and notes its peak."""

    def __init__(self, every: float = 0.002) -> None:
        self.peak = rss_mb()
        self.steps: list[tuple[str, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.peak = max(self.peak, rss_mb())

    def step(self, name: str) -> None:
        now = rss_mb()
        self.steps.append((name, max(self.peak, now), now))
        self.peak = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class FileDeltas(Sequence[bytes]):
    """The chain's deltas read one at a time, as ``checkpoint.ChainDeltas`` hands spooled ones;
    each ends a step of ``sampler`` once the next is asked for."""

    def __init__(self, path: Path, sampler: Sampler) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 (closed by the restore's caller)
        self._spans: list[tuple[int, int]] = []
        size = path.stat().st_size
        offset = 0
        while offset < size:
            self._file.seek(offset)
            length = int.from_bytes(self._file.read(8), "big")
            self._spans.append((offset + 8, length))
            offset += 8 + length
        self._sampler = sampler

    def __len__(self) -> int:
        return len(self._spans)

    def __getitem__(self, index):  # type: ignore[no-untyped-def, override]
        offset, length = self._spans[index]
        self._file.seek(offset)
        return self._file.read(length)

    def __iter__(self) -> Iterator[bytes]:
        self._sampler.step("base unpickled")
        for k in range(len(self)):
            yield self[k]
            self._sampler.step(f"delta {k + 1} applied")


def restore(directory: Path, budget_mb: float, shards: int, trim: bool) -> None:
    """Restore the chain ``shards`` times in this process, one after the other in a thread and each
    kept, as a worker rebuilds its shards (run in a fresh process); print each step's RSS."""
    meta = json.loads((directory / "chain.json").read_text())
    conf = settings(meta["n"], budget_mb, directory)
    factory = ShardFactory(conf)
    release_free_memory()
    sampler = Sampler()
    sampler.step("before")
    before = sampler.steps[0][2]
    kept = []
    print(f"RSS before {before:.0f} MB; MB over it:", flush=True)
    print(f"{'shard':<6} {'base: peak':>10} {'end':>6} {'deltas: peak':>13} {'end':>6} {'trimmed':>8}  "
          "restore")
    for k in range(shards):
        base = open(directory / "base.bin", "rb")  # noqa: SIM115
        blob = BlobFile(base, (directory / "base.bin").stat().st_size)
        deltas = FileDeltas(directory / "deltas.bin", sampler)
        started, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(1) as pool:  # in a thread, as the runner's rebuilds (asyncio.to_thread)
            kept.append(pool.submit(factory.restore, 0, blob, deltas).result())
        sampler.step("configured")
        seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        base.close()
        if trim:
            release_free_memory()
        sampler.step("trimmed")
        steps = sampler.steps[-len(deltas) - 3:]
        unpickled, applied, trimmed = steps[0], steps[1:-1], steps[-1]
        print(f"{k:<6} {unpickled[1] - before:>10.0f} {unpickled[2] - before:>6.0f} "
              f"{max(p for _, p, _ in applied) - before:>13.0f} {applied[-1][2] - before:>6.0f} "
              f"{trimmed[2] - before:>8.0f}  {seconds:.1f} s, {cpu_s:.1f} CPU-s", flush=True)
    sampler.stop()
    join = kept[-1].join
    table = sys.getsizeof(join._groups) + sum(map(sys.getsizeof, join._groups))
    print(f"each shard {join.pending_count:,} pending, groups {table / 2**20:.0f} MB by getsizeof; highest "
          f"{max(p for _, p, _ in sampler.steps) - before:.0f} MB over before, kept "
          f"{sampler.steps[-1][2] - before:.0f}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500_000, help="pending predictions in the chain")
    parser.add_argument("--base-at", type=int, default=0, help="predictions before the base (default 90 %%)")
    parser.add_argument("--every", type=int, default=12_500, help="predictions between two deltas")
    parser.add_argument("--first-delta", type=int, default=0,
                        help="predictions in the first delta after the base (default --every)")
    parser.add_argument("--budget-mb", type=float, default=16.0, help="join.memory_budget_mb")
    parser.add_argument("--dir", type=Path, default=None, help="keep (and reuse) the chain here")
    parser.add_argument("--shards", type=int, default=1, help="restore the chain this many times, each kept")
    parser.add_argument("--whole-deltas", action="store_true",
                        help="apply each delta's records in one piece (before APPLY_PIECE_BYTES)")
    parser.add_argument("--no-trim", action="store_true", help="no malloc_trim after the restore")
    parser.add_argument("--restore-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    temporary = None
    if args.dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="shard-restore-")
        args.dir = Path(temporary.name)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.restore_only:
        limit_malloc_arenas()  # as `driftline worker` does first
        if args.whole_deltas:
            join_core.APPLY_PIECE_BYTES = 2**62
        restore(args.dir, args.budget_mb, args.shards, not args.no_trim)
        return 0
    meta = args.dir / "chain.json"
    chain = {"n": args.n, "base_at": args.base_at or args.n * 9 // 10, "every": args.every,
             "first": args.first_delta or args.every}
    if not meta.exists() or json.loads(meta.read_text()) != chain:
        build(args.dir, args.n, chain["base_at"], args.every, chain["first"], args.budget_mb)
    command = [sys.executable, __file__, "--restore-only", "--dir", str(args.dir), "--budget-mb",
               str(args.budget_mb), "--shards", str(args.shards), *(["--no-trim"] if args.no_trim else []),
               *(["--whole-deltas"] if args.whole_deltas else [])]
    subprocess.run(command, check=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    if temporary is not None:
        temporary.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
