"""A digest of a join's outputs and checkpoint bytes over a randomized run, to compare revisions bit
for bit (a change meant to keep results must print the same digest on both).

The run feeds batches of predictions (UUID and short ids, reused ids) and labels (some before their
prediction, duplicates), moves the watermarks, takes a delta every few batches and a base now and
then, restores each base with the deltas after it (tracking changes, so a restore's own tracking is
covered too), and hashes every outcome, expiry, duplicate, orphan, delta and base, in memory and
under a memory budget (payloads spilled). Run it on each revision, e.g.

    .venv/bin/python bench/bench_join_digest.py
    git worktree add /tmp/wt-old <rev>; PYTHONPATH=/tmp/wt-old/src .venv/bin/python bench/bench_join_digest.py
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import random
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any

from driftline.operators.join import LabelJoin, payload_digest
from driftline.schemas.events import Prediction

HORIZON = 20_000


def _ids(rng: random.Random, n: int) -> list[str]:
    uuids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n // 2)]
    return uuids + [f"p{i}" for i in range(n // 2)]


def run(seed: int, budget: int, batches: int) -> str:
    """The hex digest of one randomized run."""
    rng = random.Random(seed)
    out = hashlib.sha256()

    def note(value: Any) -> None:
        out.update(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))

    join = LabelJoin(HORIZON, max_pending=3_000, max_held=500)
    if budget:
        join.set_memory_budget(budget, tempfile.mkdtemp(prefix="bench-join-digest-"), 5_000)
    join.track_changes()
    ids = _ids(rng, 4_000)
    ts = 1_000_000
    base: bytes | None = None
    deltas: list[Any] = []
    for batch in range(batches):
        ts += rng.randrange(50, 400)
        n = rng.randrange(1, 40)
        pids = [rng.choice(ids) for _ in range(n)]
        stamps = [ts + rng.randrange(0, 300) for _ in range(n)]
        if rng.random() < 0.55:
            contexts = [("m", "1", rng.choice(("", "s")))] * n
            predictions = [Prediction(label=rng.choice("ab"), score=rng.random()) for _ in range(n)]
            features = [{"x": rng.random(), "c": rng.choice("abc")} for _ in range(n)]
            digests = [payload_digest(f"{p}{s}".encode()) for p, s in zip(pids, stamps, strict=True)]
            note(join.on_predictions(pids, stamps, contexts, predictions, features, digests, [None] * n))
        else:
            stamps = [s - rng.randrange(0, 3_000) for s in stamps]
            digests = [payload_digest(f"l{p}{s}".encode()) for p, s in zip(pids, stamps, strict=True)]
            note(join.on_labels(pids, stamps, [rng.choice("ab") for _ in range(n)], [None] * n, digests,
                                [None] * n))
        if rng.random() < 0.2:
            note(join.advance(ts - rng.randrange(0, 2_000), ts - rng.randrange(HORIZON // 2, 2 * HORIZON)))
        note((join.take_duplicates(), join.take_orphans() if hasattr(join, "take_orphans") else None))
        if batch % 7 == 6:
            note(join.changed_count)
            changes = join.take_changes()
            blob = pickle.dumps(changes, pickle.HIGHEST_PROTOCOL)
            out.update(blob)
            deltas.append(changes)
        if batch % 150 == 149:
            if base is not None:  # the last base and its deltas restore this join's state
                restored = pickle.loads(base)
                restored.track_changes()
                for changes in deltas[:-1]:
                    restored.apply_changes(changes)
                restored.take_changes()
                restored.apply_changes(deltas[-1])
                out.update(pickle.dumps(restored.take_changes(), pickle.HIGHEST_PROTOCOL))
                out.update(pickle.dumps(restored, pickle.HIGHEST_PROTOCOL))
            base = pickle.dumps(join, pickle.HIGHEST_PROTOCOL)
            out.update(base)
            join.reset_changes()
            deltas = []
    out.update(pickle.dumps(join, pickle.HIGHEST_PROTOCOL))
    return out.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=1_500)
    args = parser.parse_args(argv)
    whole = hashlib.sha256()
    for seed in range(args.seeds):
        for budget in (0, 1):
            digest = run(seed, budget, args.batches)
            whole.update(digest.encode())
            print(f"seed {seed} budget {budget}: {digest[:16]}")
    print(f"all: {whole.hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
