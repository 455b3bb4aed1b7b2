"""Memory and speed of LabelJoin's pending state.

Feeds N predictions with 25 features and no labels (all stay pending), then prints the bytes of
join state per pending prediction (tracemalloc: what survives once the events are gone) and the
time per ``on_prediction`` / ``on_label`` (separate, untraced run), each with the digest of the
record's payload that duplicate detection compares (computed in the timed loop, as the shard does).

    .venv/bin/python bench/bench_join_state.py [--n 200000]

Profiles: ``mixed`` = 20 full-precision floats + 3 ints + 2 categorical strings, ``float`` = 25
full-precision floats. Prediction ids are UUID strings (36 characters), as the client SDK makes.

``--checkpoints N`` measures checkpoint traffic with N pending predictions (``docs/state.md``):
a steady ``--rate`` of predictions, each labelled a horizon's worth of traffic later (so the
pending count stays N), a checkpoint every ``--interval`` seconds of traffic. It prints the bytes
per second a full snapshot per interval writes, what deltas write (with a new base whenever the
deltas pass ``--ratio`` x its size, amortised), both next to the input's bytes per second (the
events' JSON), the time to write each, the time to restore a base and the most deltas that can
follow it (``--ratio`` x its size; the time per delta measured on the deltas of the run), and the
process RSS. In-process, the join alone (a shard's
other state is the same either way).

    .venv/bin/python bench/bench_join_state.py --checkpoints 1000000
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from driftline.operators.join import JoinChanges, LabelJoin, payload_digest
from driftline.pipeline.state import dump_delta, dump_state, load_delta, load_state
from driftline.schemas.events import LabelEvent, PredictionEvent

FEATURES = 25
COLOURS = ("red", "green", "blue", "amber")


def mixed(rng: random.Random) -> dict[str, Any]:
    features: dict[str, Any] = {f"num_{i:02d}": rng.gauss(0.0, 1.0) for i in range(20)}
    features.update({f"count_{i}": rng.randrange(1000) for i in range(3)})
    features.update({f"colour_{i}": rng.choice(COLOURS) for i in range(2)})
    return features


def floats(rng: random.Random) -> dict[str, Any]:
    return {f"num_{i:02d}": rng.gauss(0.0, 1.0) for i in range(FEATURES)}


PROFILES: dict[str, Callable[[random.Random], dict[str, Any]]] = {"mixed": mixed, "float": floats}


def events(n: int, profile: Callable[[random.Random], dict[str, Any]], step_ms: int = 5,
           seed: int = 7) -> Iterator[PredictionEvent]:
    rng = random.Random(seed)
    for i in range(n):
        yield PredictionEvent(
            prediction_id=str(uuid.UUID(int=rng.getrandbits(128))),
            model_id="fraud",
            model_version="3",
            timestamp=1_767_225_600_000 + i * step_ms,
            features=profile(rng),
            prediction={"label": "fraud" if rng.random() < 0.1 else "ok", "score": rng.random()},
        )


def measure_memory(n: int, profile: Callable[[random.Random], dict[str, Any]]) -> float:
    join = LabelJoin(horizon_ms=86_400_000, max_pending=10 * n, max_held=1000)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for event in events(n, profile):
        join.on_prediction(event, segment="region=eu", digest=payload_digest(event.prediction_id.encode()))
    del event
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert join.pending_count == n
    return (after - before) / n


def measure_speed(n: int, profile: Callable[[random.Random], dict[str, Any]]) -> tuple[float, float]:
    predictions = list(events(n, profile))
    labels = [
        LabelEvent(prediction_id=p.prediction_id, label="ok", timestamp=p.timestamp + 1000)
        for p in predictions
    ]
    prediction_payloads = [p.model_dump_json().encode() for p in predictions]
    label_payloads = [label.model_dump_json().encode() for label in labels]
    join = LabelJoin(horizon_ms=86_400_000, max_pending=10 * n, max_held=1000)
    start = time.perf_counter()
    for event, payload in zip(predictions, prediction_payloads, strict=True):
        join.on_prediction(event, segment="region=eu", digest=payload_digest(payload))
    middle = time.perf_counter()
    for label, payload in zip(labels, label_payloads, strict=True):
        join.on_label(label, digest=payload_digest(payload))
    end = time.perf_counter()
    return (middle - start) / n * 1e6, (end - middle) / n * 1e6


@dataclass
class CheckpointTraffic:
    """Checkpoint figures at a steady rate with ``pending`` predictions waiting for labels."""

    pending: int
    rate: float
    input_bytes_per_s: float
    full_bytes: int
    full_write_s: float
    delta_bytes: float  # per interval, mean
    delta_write_s: float
    incremental_bytes_per_s: float  # deltas plus the amortised bases
    restore_s: float  # a base and its deltas just before the next base (the worst case, extrapolated)
    restore_deltas: int
    rss_mb: float

    @property
    def full_bytes_per_s(self) -> float:
        return self.full_bytes / self.interval_s

    interval_s: float = 5.0


def measure_checkpoints(pending: int, rate: float = 5_000, interval_s: float = 5.0, intervals: int = 4,
                        ratio: float = 1.0) -> CheckpointTraffic:
    """Build ``pending`` predictions, then run ``intervals`` checkpoint intervals of steady traffic:
    each interval ``rate * interval_s`` new predictions and as many labels of the oldest pending."""
    step_ms = max(1, round(1000 / rate))
    per_interval = int(rate * interval_s)
    total = pending + per_interval * intervals
    horizon_ms = 10 * total * step_ms  # nothing expires: labels do the work
    join = LabelJoin(horizon_ms=horizon_ms, max_pending=total + 1, max_held=1000)
    stream = events(total, mixed, step_ms=step_ms)
    order: list[str] = []  # pending ids, oldest first
    for event in (next(stream) for _ in range(pending)):
        join.on_prediction(event, segment="region=eu", digest=payload_digest(event.prediction_id.encode()))
        order.append(event.prediction_id)
    join.track_changes()
    started = time.perf_counter()
    base = dump_state(join)
    full_write_s = time.perf_counter() - started
    deltas: list[bytes] = []
    delta_write_s = 0.0
    input_bytes = 0
    labelled = 0
    for _ in range(intervals):
        for _ in range(per_interval):
            event = next(stream)
            payload = event.model_dump_json().encode()
            join.on_prediction(event, segment="region=eu", digest=payload_digest(payload))
            order.append(event.prediction_id)
            pid = order[labelled]
            labelled += 1
            label = LabelEvent(prediction_id=pid, label="ok", timestamp=event.timestamp)
            label_payload = label.model_dump_json().encode()
            join.on_label(label, digest=payload_digest(label_payload))
            input_bytes += len(payload) + len(label_payload)
        started = time.perf_counter()
        deltas.append(dump_delta(join.take_changes()))
        delta_write_s += time.perf_counter() - started
    seconds = intervals * interval_s
    delta_bytes = sum(map(len, deltas)) / intervals
    # A base is rewritten once the deltas since it pass ratio x its size: amortised over that time.
    intervals_per_base = max(1.0, ratio * len(base) / delta_bytes)
    incremental = (delta_bytes + len(base) / intervals_per_base) / interval_s
    del join
    gc.collect()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    restored = load_state(base, LabelJoin, "bench")
    base_s = time.perf_counter() - started
    for delta in deltas:
        changes = load_delta(delta, "bench")
        assert isinstance(changes, JoinChanges)
        restored.apply_changes(changes)
    per_delta_s = (time.perf_counter() - started - base_s) / len(deltas)
    # The worst restore is a base and deltas worth ratio x its size (a new base comes next):
    # extrapolated from the deltas measured (producing that many takes as long as the traffic).
    worst_deltas = max(len(deltas), int(intervals_per_base))
    restore_s = base_s + per_delta_s * worst_deltas
    return CheckpointTraffic(pending, rate, input_bytes / seconds, len(base), full_write_s, delta_bytes,
                             delta_write_s / intervals, incremental, restore_s, worst_deltas, rss_mb,
                             interval_s)


def print_checkpoints(t: CheckpointTraffic) -> None:
    mb = 1e6
    print(f"checkpoints pending={t.pending:,} rate={t.rate:,.0f}/s interval={t.interval_s:g}s "
          f"input={t.input_bytes_per_s / mb:.2f} MB/s")
    print(f"  full snapshot: {t.full_bytes / mb:.1f} MB per checkpoint = {t.full_bytes_per_s / mb:.1f} MB/s "
          f"({t.full_bytes_per_s / t.input_bytes_per_s:.1f}x input), {t.full_write_s:.2f} s to write")
    share = t.incremental_bytes_per_s / t.input_bytes_per_s
    print(f"  incremental:   deltas {t.delta_bytes / mb:.2f} MB per checkpoint, with amortised bases "
          f"{t.incremental_bytes_per_s / mb:.2f} MB/s ({share:.2f}x input), "
          f"{t.delta_write_s:.3f} s to write a delta")
    print(f"  restore (worst case): base + {t.restore_deltas} deltas in {t.restore_s:.2f} s; "
          f"bytes/pending in the base {t.full_bytes / t.pending:.0f}; max RSS {t.rss_mb:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="pending predictions")
    parser.add_argument("--checkpoints", type=int, default=0, metavar="N",
                        help="measure checkpoint traffic with N pending instead")
    parser.add_argument("--rate", type=float, default=5_000, help="predictions (and labels) per second")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between checkpoints")
    parser.add_argument("--ratio", type=float, default=1.0, help="worker.checkpoint_delta_ratio")
    args = parser.parse_args()
    if args.checkpoints:
        print_checkpoints(measure_checkpoints(args.checkpoints, args.rate, args.interval, ratio=args.ratio))
        return
    for name, profile in PROFILES.items():
        per_pending = measure_memory(args.n, profile)
        insert_us, join_us = measure_speed(min(args.n, 50_000), profile)
        print(
            f"{name:6s} n={args.n} bytes/pending={per_pending:.0f} "
            f"on_prediction={insert_us:.1f}us on_label(join)={join_us:.1f}us"
        )


if __name__ == "__main__":
    main()
