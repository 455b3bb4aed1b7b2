"""Memory and speed of LabelJoin's pending state.

Feeds N predictions with 25 features and no labels (all stay pending), then prints the bytes of
join state per pending prediction (tracemalloc: what survives once the events are gone) and the
time per ``on_prediction`` / ``on_label`` (separate, untraced run), each with the digest of the
record's payload that duplicate detection compares (computed in the timed loop, as the shard does).

    .venv/bin/python bench/bench_join_state.py [--n 200000]

Profiles: ``mixed`` = 20 full-precision floats + 3 ints + 2 categorical strings, ``float`` = 25
full-precision floats. Prediction ids are UUID strings (36 characters), as the client SDK makes.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from driftline.operators.join import LabelJoin, payload_digest
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


def events(n: int, profile: Callable[[random.Random], dict[str, Any]]) -> Iterator[PredictionEvent]:
    rng = random.Random(7)
    for i in range(n):
        yield PredictionEvent(
            prediction_id=str(uuid.UUID(int=rng.getrandbits(128))),
            model_id="fraud",
            model_version="3",
            timestamp=1_767_225_600_000 + i * 5,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="pending predictions")
    args = parser.parse_args()
    for name, profile in PROFILES.items():
        per_pending = measure_memory(args.n, profile)
        insert_us, join_us = measure_speed(min(args.n, 50_000), profile)
        print(
            f"{name:6s} n={args.n} bytes/pending={per_pending:.0f} "
            f"on_prediction={insert_us:.1f}us on_label(join)={join_us:.1f}us"
        )


if __name__ == "__main__":
    main()
