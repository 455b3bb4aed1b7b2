"""Where one join's memory goes over a base cycle (issue 19): RSS and peak at each step of each base.

One ``LabelJoin`` under an 8 MB budget (nearly every payload on disk, as a 10M worker's 64 MB a
shard), fed 500 predictions a call with 25 float features and tracking changes; a delta every
5,000 predictions; every ``--base-every`` a base copy (``base_copy``) pickled into a file by another
thread while ``--added`` more arrive with no delta meanwhile (the runner's cadence), then the delta
after it, which carries every record added meanwhile whole. For each base it prints the RSS over
the start (MB) and the peak at: the copy; once the records fed meanwhile are in (with how many
keys are tracked); the copy pickled and released; the delta after it taken (``take_changes``) and
pickled. Run it as

    .venv/bin/python bench/bench_join_base_cycle.py [--n 1000000] [--base-every 500000] [--added 200000]
"""

from __future__ import annotations

import argparse
import pickle
import random
import resource
import tempfile
import threading
from collections.abc import Sequence

from bench_join_base_memory import pymalloc, rss_mb

from driftline.operators.join import LabelJoin, payload_digest
from driftline.pipeline.state import BlobFile, dump_state_to_file
from driftline.schemas.events import Prediction

BATCH = 500
DELTA_EVERY = 5_000
FEATURES = 25
POOL = 2_000


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(n: int, base_every: int, added: int) -> None:
    join = LabelJoin(horizon_ms=86_400_000, max_pending=10 * n, max_held=1_000)
    join.set_memory_budget(8 * 2**20, tempfile.mkdtemp(prefix="bench-join-cycle-"))
    join.track_changes()
    rng = random.Random(1)
    pool = [{f"f{i}": rng.random() for i in range(FEATURES)} for _ in range(POOL)]
    prediction, ctx = Prediction(label="yes", score=0.7), ("bench", "1", "")
    start = rss_mb()

    def step(done: int, what: str) -> None:
        print(f"{done:>10,} {what:<34} RSS +{rss_mb() - start:5.0f} MB, peak {peak_mb():5.0f} MB", flush=True)

    copy, dumper, copied_at, dumped = None, None, 0, []
    for at in range(0, n, BATCH):
        ids = [f"{rng.getrandbits(64):016x}-pred-{i}" for i in range(at, at + BATCH)]
        join.on_predictions(ids, list(range(1_700_000_000_000 + at, 1_700_000_000_000 + at + BATCH)),
                            [ctx] * BATCH, [prediction] * BATCH,
                            [pool[i % POOL] for i in range(at, at + BATCH)],
                            [payload_digest(i.encode()) for i in ids], [None] * BATCH)
        done = at + BATCH
        if copy is None and done % DELTA_EVERY == 0:
            pickle.dumps(join.take_changes(), pickle.HIGHEST_PROTOCOL)
        if copy is None and done % base_every == base_every // 2:
            step(done, "base copy taken")
            copy, copied_at = join.base_copy(), done
            dumper = threading.Thread(target=lambda c=copy: dumped.append(dump_state_to_file(c)))
            dumper.start()
        if copy is not None and dumper is not None and done - copied_at >= added:
            step(done, f"{added:,} fed, {join.changed_count:,} tracked")
            dumper.join()
            blob = dumped.pop()
            if isinstance(blob, BlobFile):
                blob.close()
            copy.release_copy()
            copy = None
            step(done, "base pickled, copy released")
            changes = join.take_changes()
            step(done, f"delta taken ({len(changes.records) / 1e6:.0f} MB of records)")
            blob = pickle.dumps(changes, pickle.HIGHEST_PROTOCOL)
            del changes, blob
            step(done, "delta pickled")
    arenas, used = pymalloc()
    step(n, f"end (pymalloc {arenas} arenas, {used:.0f} MB)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1_000_000, help="pending predictions fed")
    parser.add_argument("--base-every", type=int, default=500_000, help="predictions between bases")
    parser.add_argument("--added", type=int, default=200_000, help="predictions fed while a base is written")
    args = parser.parse_args(argv)
    run(args.n, args.base_every, args.added)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
