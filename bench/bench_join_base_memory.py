"""A live join's RSS per pending prediction with and without bases written beside it (issue 19).

A live 4-shard worker held 140-230 B of RSS a pending prediction where a restarted one holds ~80
and the join's groups ~85 (docs/state.md, "where the memory goes"). This bench reproduces the
difference in one ``LabelJoin`` under an 8 MB budget (nearly every payload on disk), fed 500
predictions a call with 25 float features, in a fresh process per mode:

- ``none``: a delta (``take_changes``, pickled) every 5,000 predictions, no base;
- ``bases``: the same, and every ``--base-every`` predictions a base copy (``base_copy``) pickled
  into a file by another thread (``dump_state_to_file``) while ``--added`` more are fed, with no
  delta meanwhile (``StageRunner``: a shard with a base in flight writes no link), then the
  delta after it, which carries every record added meanwhile;
- ``trimmed``: as ``bases``, and the heap trimmed (``release_free_memory``, glibc's ``malloc_trim``)
  as soon as each copy is released, as ``StageRunner._write_base`` does: that trim's CPU time
  (``time.thread_time``) is printed per base.

It prints each mode's RSS over its start per pending prediction, its peak, glibc's heap (in use
and free, ``mallinfo2``), pymalloc's arenas for its bytes in use, and the RSS after a
``malloc_trim``. Run it as

    .venv/bin/python bench/bench_join_base_memory.py [--n 600000] [--base-every 150000] [--added 60000]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pickle
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from driftline.operators.join import LabelJoin, payload_digest
from driftline.pipeline.state import BlobFile, dump_state_to_file, release_free_memory
from driftline.schemas.events import Prediction

BATCH = 500
DELTA_EVERY = 5_000
FEATURES = 25
POOL = 2_000  # feature vectors drawn once, reused
BUDGET = 8 * 2**20
MODES = ("none", "bases", "trimmed")


_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
           "keepcost")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pymalloc() -> tuple[int, float]:
    """pymalloc's arenas (1 MiB each) and MB in use (``sys._debugmallocstats`` on the C stderr)."""
    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write)
    text = os.read(read, 1 << 20).decode()
    os.close(read)
    arenas, used = 0, 0.0
    for line in text.splitlines():
        if "arenas allocated current" in line:
            arenas = int(line.split()[-1])
        elif "bytes in allocated blocks" in line:
            used = int(line.split()[-1].replace(",", "")) / 2**20
    return arenas, used


def run(n: int, base_every: int, added: int, trim: bool = False) -> str:
    """One mode in this process (``base_every`` 0: no base; ``trim``: the heap trimmed after each
    copy's release); a line of figures."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    spill = tempfile.mkdtemp(prefix="bench-join-base-")
    join = LabelJoin(horizon_ms=86_400_000, max_pending=10 * n, max_held=1_000)
    join.set_memory_budget(BUDGET, spill)
    join.track_changes()
    rng = random.Random(1)
    pool = [{f"f{i}": rng.random() for i in range(FEATURES)} for _ in range(POOL)]
    prediction, ctx = Prediction(label="yes", score=0.7), ("bench", "1", "")
    start_mb = rss_mb()
    copy, dumper, copied_at, dumped = None, None, 0, []
    trims: list[tuple[float, float]] = []  # (CPU seconds, RSS MB given back) of each trim
    for at in range(0, n, BATCH):
        ids = [f"{rng.getrandbits(64):016x}-pred-{i}" for i in range(at, at + BATCH)]
        join.on_predictions(ids, list(range(1_700_000_000_000 + at, 1_700_000_000_000 + at + BATCH)),
                            [ctx] * BATCH, [prediction] * BATCH,
                            [pool[i % POOL] for i in range(at, at + BATCH)],
                            [payload_digest(i.encode()) for i in ids], [None] * BATCH)
        done = at + BATCH
        if copy is None and done % DELTA_EVERY == 0:
            pickle.dumps(join.take_changes(), pickle.HIGHEST_PROTOCOL)
        if base_every and copy is None and done % base_every == base_every // 2:
            copy, copied_at = join.base_copy(), done
            dumper = threading.Thread(target=lambda c=copy: dumped.append(dump_state_to_file(c)))
            dumper.start()
        if copy is not None and dumper is not None and done - copied_at >= added:
            dumper.join()
            blob = dumped.pop()
            if isinstance(blob, BlobFile):
                blob.close()
            copy.release_copy()
            copy = None
            if trim:
                before, cpu = rss_mb(), time.thread_time()
                release_free_memory()
                trims.append((time.thread_time() - cpu, before - rss_mb()))
            pickle.dumps(join.take_changes(), pickle.HIGHEST_PROTOCOL)  # the delta after the base
    end_mb = rss_mb()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = libc.mallinfo2()
    arenas, used = pymalloc()
    libc.malloc_trim(0)
    groups = sum(map(sys.getsizeof, join._groups))
    trimmed = ""
    if trims:
        cpu_ms = sorted(t * 1e3 for t, _ in trims)
        trimmed = (f"; {len(trims)} trims after a copy's release: {cpu_ms[len(cpu_ms) // 2]:.1f} ms CPU "
                   f"median, {cpu_ms[-1]:.1f} max, {sum(mb for _, mb in trims) / len(trims):.0f} MB given "
                   "back each on average")
    return (f"RSS +{end_mb - start_mb:.0f} MB = {(end_mb - start_mb) * 2**20 / n:.0f} B a pending prediction "
            f"(groups {groups / n:.0f} B), peak {peak_mb:.0f} MB; glibc heap {info.arena / 2**20:.0f} MB, "
            f"{info.uordblks / 2**20:.0f} in use, {info.fordblks / 2**20:.0f} free; "
            f"pymalloc {arenas} arenas for {used:.0f} MB in use; RSS {end_mb:.0f} MB, "
            f"{rss_mb():.0f} after malloc_trim{trimmed}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=600_000, help="pending predictions fed")
    parser.add_argument("--base-every", type=int, default=150_000, help="predictions between bases")
    parser.add_argument("--added", type=int, default=60_000, help="predictions fed while a base is written")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one mode, in a child
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode is not None:
        print(run(args.n, 0 if args.mode == "none" else args.base_every, args.added, args.mode == "trimmed"))
        return 0
    print(f"{args.n:,} pending predictions, an 8 MB budget; bases every {args.base_every:,}, "
          f"{args.added:,} fed while each is written")
    for mode in MODES:
        child = subprocess.run([sys.executable, __file__, "--mode", mode, "--n", str(args.n), "--base-every",
                                str(args.base_every), "--added", str(args.added)],
                               capture_output=True, text=True, check=True)
        print(f"{mode:>7}: {child.stdout.strip()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
