"""Single steps of the pipeline timed against their reference in one process: CPU time
(``time.process_time``), best of ``--rounds``, the two sides alternating, the collector off.

- **normal scores**: ``NormalScores.scores_by_feature`` of a batch of 1,250 events x 20 features
  (references of 1,000 points), the C loop (``_watch.normal_scores``) against the numpy steps
  (``reference_paths``), CPU-us a batch;
- **bucket close**: ``OutcomeClock.close`` of 1,260 classification outcomes of one target over 5
  metrics intervals, the column tally (``_tally_one_target``) against the outcome-by-outcome loop,
  CPU-us an outcome;
- **category codes**: ``ColumnBlock.of`` of a batch's 5 categorical columns of 1,250 values (8
  categories, a few None), one C pass (``_watch.first_codes``) against the Python steps
  (``reference_paths``), CPU-ns a value;
- **features packed**: the join's ``_packed_features`` of 1,250 events of 20 float and 5
  categorical features (the pending records' encodings), one C pass (``packed_rows``) against the
  Python steps, CPU-ns an event;
- **pending tails**: the join's ``_pending_tails`` of 1,250 scored class outputs (int labels 0/1, as
  the decoder's columns hold them), one C pass (``pending_tails``) against the Python steps,
  CPU-ns an output;
- **digests and id keys**: ``payload_digests`` of 1,250 prediction-like (~770 bytes) and 1,250
  label-like (~90 bytes) JSON payloads and ``_keyed_crcs`` of their 2,500 UUID ids, the join's C
  extension against zlib's CRC-32 a value at a time (``reference_paths``), CPU-ns a payload with its id;
- **held runs copied out**: a ``RUN_EVENTS`` round of a shard's feature watch, ~1,000 Zipf models'
  held runs of 52 grouped batches of 625 events, copied out model by model (``_Held.settle``)
  against one gather for all (``settle_together``), both sides' parts checked equal, CPU-ms a round;
- with ``--baseline REV``, the same steps of another revision's module (``git show``, its imports
  today's): many models' columnar records (the per-model records a message a record carries, of
  1,250 outcomes of Zipf-chosen models over 300: ``ShardProcessor._columns_records`` where REV has
  it, else made from its stacked records), CPU-us a batch; the same outcomes from the shard to stage 2's
  metrics buckets (made into model-events messages, encoded, decoded, added: stacked records against
  REV's bundles, or where REV has none, as at or after stacked records, against a message a record),
  CPU-us a batch; a record's metrics bucket found
  (``OutcomeClock.add_outcomes`` of 20 records of 4 outcomes a model, 300 models, each model's in one
  metrics interval, as a batch a second brings them), CPU-us a record; a batch's events buffered
  into their windows (``ShardProcessor._buffer_groups`` of 1,250 events of 25 features over 300
  Zipf-chosen models, a second of event time, the default 300 s and 3,600 s windows), CPU-us a
  (model, segment) group; a filled window's close merge (4 values-form partials of a 289-event
  window, 20 float and 5 categorical features, parsed and merged with sketches: REV's window_stats
  module against this one; REV must read the values form), CPU-us a window; and a small window's
  values-form partial checked on arrival (``check_partial``, REV's windows module against this
  one), CPU-us a partial;
- **sketch buckets**: a filled window's 20 float features' sketch buckets found sketch by sketch
  against all at once (``QuantileSketch.find_buckets``), CPU-us a window;
- **outcomes made**: the join's ``outcome_rows`` of 1,250 joined labels, each outcome's slots filled
  in C against a call of the dataclass's ``__init__`` (a subclass with no slots of its own, which
  the C path calls as it called every class before), CPU-ns an outcome;
- **outcome messages**: the outcomes topic's messages of 1,250 outcomes of 25 features, the join's C
  writer against msgspec's struct per outcome (``reference_paths``), CPU-ns an outcome;
- **stage 2's record**: ``records.stacks`` of 1,250 outcomes, their slots read in one C call
  (``slot_columns``) against ``attrgetter`` a column (``reference_paths``), CPU-ns an outcome;
- **sample id hashes**: ``model_watch.id_hashes`` of 1,250 UUID ids, ``_watch.c``'s BLAKE2b against
  hashlib's from Python (``reference_paths``), CPU-ns an id.

    .venv/bin/python bench/bench_stage_steps.py [--rounds 5] [--baseline 1a8ff97]
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import time
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np
import orjson
from common import module_at_revision

from driftline.config import Settings
from driftline.operators import feature_watch, window_stats
from driftline.operators.columns import OutputColumns
from driftline.operators.compiled_paths import reference_paths
from driftline.operators.float_block import FloatBlock
from driftline.operators.join import JoinedOutcome, LabelJoin
from driftline.operators.join import features as join_features
from driftline.operators.join import native as join_native
from driftline.operators.join import outputs as join_outputs
from driftline.operators.join import records as join_records
from driftline.operators.model_watch import id_hashes
from driftline.operators.multivariate import NormalScores
from driftline.operators.sketch import QuantileSketch
from driftline.operators.triggers import RetrainPolicy
from driftline.operators.window_stats import ColumnBlock, EventColumns, values_partial
from driftline.pipeline import outcomes, records, shard
from driftline.pipeline import windows as windows_module
from driftline.pipeline.outcome_messages import outcome_messages
from driftline.pipeline.records import Outcomes, Progress
from driftline.pipeline.references import ProfileBook
from driftline.schemas.events import Prediction

START = 1_767_225_600_000


Side = tuple[Callable[[], Any], Callable[[], AbstractContextManager[Any]]]


def best_of(rounds: int, sides: dict[str, Side], per: int) -> dict[str, float]:
    """Per side, the least CPU-us per item of ``rounds`` calls of its step (``per`` items a call),
    the sides alternating (their order flipped each round), each inside its context."""
    best = {name: float("inf") for name in sides}
    names = list(sides)
    gc.disable()
    try:
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                step, context = sides[name]
                with context():
                    t0 = time.process_time()
                    step()
                    best[name] = min(best[name], (time.process_time() - t0) / per * 1e6)
    finally:
        gc.enable()
    return best


def normal_scores(rounds: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    scores = NormalScores([f"f{j}" for j in range(20)], [np.sort(rng.normal(size=1_000)) for _ in range(20)])
    x = rng.normal(size=(1_250, 20))
    scores.scores_by_feature(x)  # (its table built)

    def step() -> None:
        for _ in range(20):
            scores.scores_by_feature(x)

    return best_of(rounds, {"numpy": (step, reference_paths), "C": (step, nullcontext)}, 20)


def category_codes(rounds: int) -> dict[str, float]:
    rng = random.Random(5)
    categories: list[str | None] = [f"c{k}" for k in range(8)]
    columns = [[rng.choice(categories) if rng.random() < 0.98 else None for _ in range(1_250)]
               for _ in range(5)]

    def step() -> None:
        for _ in range(20):
            for column in columns:
                ColumnBlock.of(column)

    return {name: us * 1e3 for name, us in best_of(
        rounds, {"Python": (step, reference_paths), "C": (step, nullcontext)}, 20 * 5 * 1_250).items()}


def features_packed(rounds: int) -> dict[str, float]:
    rng = np.random.default_rng(4)
    floats = [np.round(rng.normal(size=1_250), 4) for _ in range(20)]
    categories = [[f"c{k}" for k in rng.integers(0, 8, 1_250).tolist()] for _ in range(5)]
    names = tuple(f"x{j}" for j in range(20)) + tuple(f"c{j}" for j in range(5))
    columns = [f.tolist() for f in floats] + categories
    numbers = [*floats, *[None] * 5]

    def step() -> None:
        for _ in range(20):
            join_features._packed_features(names, columns, numbers)

    return {name: us * 1e3 for name, us in best_of(
        rounds, {"Python": (step, reference_paths), "C": (step, nullcontext)}, 20 * 1_250).items()}


def pending_tails(rounds: int) -> dict[str, float]:
    rng = random.Random(6)
    scores = [round(rng.random(), 4) for _ in range(1_250)]
    outputs = OutputColumns([int(s >= 0.5) for s in scores], scores, [None] * 1_250,
                            frozenset({"label", "score"}))

    def step() -> None:
        for _ in range(20):
            join_outputs._pending_tails(outputs)

    return {name: us * 1e3 for name, us in best_of(
        rounds, {"Python": (step, reference_paths), "C": (step, nullcontext)}, 20 * 1_250).items()}


def digests_and_keys(rounds: int) -> dict[str, float]:
    rng = random.Random(3)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(1_250)]
    payloads = [orjson.dumps({"prediction_id": pid, "model_id": "m", "timestamp": START,
                              "features": {f"f{j}": rng.gauss(0, 1) for j in range(25)},
                              "prediction": {"score": rng.random()}}) for pid in ids]
    payloads += [orjson.dumps({"prediction_id": pid, "label": 1, "timestamp": START}) for pid in ids]
    ids += ids

    def step() -> None:
        for _ in range(20):
            join_records.payload_digests(payloads)
            join_records._keyed_crcs(ids)

    return {name: us * 1e3 for name, us in best_of(
        rounds, {"zlib": (step, reference_paths), "C": (step, nullcontext)}, 20 * len(payloads)).items()}


def _outcome_batch(seed: int = 8) -> list[JoinedOutcome]:
    """1,250 outcomes of scored class predictions with 20 float and 5 category features, as the
    join makes them (through a LabelJoin)."""
    rng = random.Random(seed)
    join = LabelJoin(3_600_000, 1_000_000, 1_000_000)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(1_250)]
    features = [{**{f"x{j}": rng.gauss(10, 5) for j in range(20)}, **{f"c{j}": f"c{rng.randrange(8)}"
                                                                      for j in range(5)}} for _ in ids]
    outputs = [Prediction(label=str(k % 2), score=rng.random()) for k in range(len(ids))]
    join.on_predictions(ids, [START] * len(ids), [("m", "1", "")] * len(ids), outputs, features,
                        [join_records.payload_digest(pid.encode()) for pid in ids], [None] * len(ids))
    label_digests = [join_records.payload_digest(b"l" + pid.encode()) for pid in ids]
    return join.on_labels(ids, [START + 5_000] * len(ids), [str(rng.randrange(2)) for _ in ids],
                          [None] * len(ids), label_digests, [None] * len(ids))


def outcome_made(rounds: int) -> dict[str, float]:
    """outcome_rows of a batch's joined labels: each outcome's slots filled in C against a call of
    the dataclass's __init__ (a subclass with no slots of its own is called, as every class was)."""
    joined: list[Any] = []
    built = join_native.NATIVE
    if built is None:
        return {"called": math.nan, "slots filled": math.nan}

    class Recorded:
        def __getattr__(self, name: str) -> Any:
            return getattr(built, name)

        def outcome_rows(self, *args: Any) -> Any:
            joined.append(args)
            return built.outcome_rows(*args)

    join_native.NATIVE = Recorded()
    try:
        _outcome_batch()
    finally:
        join_native.NATIVE = built

    class Called(JoinedOutcome):
        __slots__ = ()

    def step(cls: type) -> Callable[[], None]:
        def run() -> None:
            for _ in range(20):
                for args in joined:
                    built.outcome_rows(*args[:6], cls)
        return run

    count = sum(len(args[0]) for args in joined)
    return {name: us * 1e3 for name, us in best_of(rounds, {
        "called": (step(Called), nullcontext), "slots filled": (step(JoinedOutcome), nullcontext)},
        20 * count).items()}


def outcome_messages_written(rounds: int) -> dict[str, float]:
    """The outcomes topic's messages of 1,250 outcomes: the join's C writer against msgspec's
    struct per outcome (``reference_paths``), CPU-ns an outcome."""
    batch = _outcome_batch()

    def step() -> None:
        for _ in range(20):
            outcome_messages(batch, "bench-run")

    return {name: us * 1e3 for name, us in best_of(
        rounds, {"msgspec": (step, reference_paths), "C": (step, nullcontext)}, 20 * len(batch)).items()}


def record_columns(rounds: int) -> dict[str, float]:
    """Stage 2's columnar record of 1,250 outcomes (``records.stacks``: the model keys and the 7
    columns): slots read in one C call against attrgetter a column, CPU-ns an outcome."""
    batch = _outcome_batch()

    def step() -> None:
        for _ in range(20):
            records.stacks(0, 4, Outcomes, batch)

    return {name: us * 1e3 for name, us in best_of(
        rounds, {"attrgetter": (step, reference_paths), "C": (step, nullcontext)}, 20 * len(batch)).items()}


def sample_hashes(rounds: int) -> dict[str, float]:
    """The multivariate sample's id hashes (BLAKE2b-64) of 1,250 UUID ids: hashlib from Python
    against _watch.c's, CPU-ns an id."""
    rng = random.Random(9)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(1_250)]

    def step() -> None:
        for _ in range(20):
            id_hashes(ids)

    return {name: us * 1e3 for name, us in best_of(
        rounds, {"hashlib": (step, reference_paths), "C": (step, nullcontext)}, 20 * len(ids)).items()}


def _clock(module: Any) -> Any:
    settings = Settings(topics={"partitions": 1}, windows={"metrics_interval_s": 60})  # type: ignore[arg-type]
    return module.OutcomeClock(0, 1, settings, "", ProfileBook(), RetrainPolicy(settings.triggers, "h"))


def one_target_records(seed: int = 7, regression: bool = False) -> list[Outcomes]:
    """Records of one model's outcomes of one target (no segment tags; all classification, or all
    regression) over 5 metrics intervals of 60 s, the model worse after the 600th (the online
    detector alarms), some outcomes re-routed, a few regression errors beyond the bound
    (``tests/test_pipeline_outcome_clock.py`` holds the column tally to the loop on them)."""
    rng = random.Random(seed)
    made, n = [], 0
    for step in range(40):
        rows = []
        for _ in range(rng.randint(1, 60)):
            n += 1
            bad = n > 600
            correct = None if regression else int(rng.random() < (0.4 if bad else 0.9))
            error = None if not regression else (
                rng.choice([1e300, rng.expovariate(0.2 if bad else 2.0)]) if rng.random() < 0.02
                else rng.expovariate(0.2 if bad else 2.0))
            rows.append((f"p{n}", "", START + step * 7_500 + rng.randint(0, 7_000), rng.randint(0, 9_000),
                         correct, error, int(rng.random() < 0.05)))
        made.append(Outcomes(0, "m", "1", *[list(column) for column in zip(*rows, strict=True)]))
    return made


def bucket_close(rounds: int) -> dict[str, float]:
    made = one_target_records()
    n = sum(len(r.prediction_id) for r in made)
    column_tally = outcomes.OutcomeClock._tally_one_target

    def side(tally: Any) -> Side:
        held: list[Any] = []

        def fill() -> AbstractContextManager[Any]:  # a fresh clock per round, filled untimed
            outcomes.OutcomeClock._tally_one_target = tally  # type: ignore[method-assign]
            clock = _clock(outcomes)
            for record in made:
                clock.add_outcomes(record)
            clock.advance(Progress(0, START + 400_000, START + 400_000, START + 400_000))
            held[:] = [clock]
            return nullcontext()

        return (lambda: held[0].close()), fill

    try:
        return best_of(rounds, {"loop": side(lambda *_: False), "columns": side(column_tally)}, n)
    finally:
        outcomes.OutcomeClock._tally_one_target = column_tally  # type: ignore[method-assign]


_Item = namedtuple("_Item", ("model_id", "model_version", *records.OUTCOME_FIELDS))  # type: ignore[misc]


def _zipf_items() -> list[Any]:
    """1,250 outcomes, each of one of 300 models chosen Zipf (s=1.1), as the shard's items."""
    rng = random.Random(0)
    weights = [1 / (k + 1) ** 1.1 for k in range(300)]
    return [_Item(f"m{rng.choices(range(300), weights)[0]:04d}", "1", f"p{i}", "", i, 5, 1, None, 0)
            for i in range(1_250)]


def columns_records(rounds: int, baseline: Any) -> tuple[dict[str, float], int]:
    """The per-model records of a batch (what a message a record carries): the baseline's
    ``_columns_records`` against this revision's, made from its stacked records where it has no
    ``_columns_records``; CPU-us a batch, and the batch's models (records made)."""
    items = _zipf_items()

    class Shard:
        shard = 0

    def per_model(module: Any) -> Callable[[], list[Any]]:
        if hasattr(module.ShardProcessor, "_columns_records"):
            return lambda: module.ShardProcessor._columns_records(Shard, records.Outcomes, items)
        return lambda: [r for _, made in records.stacks(0, 3, records.Outcomes, items)
                        for r in made.records()]

    def step(make: Callable[[], list[Any]]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(20):
                make()
        return run

    def in_model_order(made: list[Any]) -> list[Any]:  # stacks come partition by partition
        return sorted(made, key=lambda r: (r.model_id, r.model_version))

    before, now = per_model(baseline), per_model(shard)
    made = now()
    if in_model_order(before()) != in_model_order(made):
        raise SystemExit("the baseline's records differ from this revision's")
    sides = {"baseline": (step(before), nullcontext), "this": (step(now), nullcontext)}
    return best_of(rounds, sides, 20), len(made)


def model_events(rounds: int, baseline: str, old_shard: Any) -> tuple[dict[str, float], int, str]:
    """CPU-us a batch from a shard's outcomes of many models to stage 2's metrics buckets (made into
    model-events messages, encoded, decoded, added): this revision's stacked records against the
    baseline's bundles of per-model records, or where it has none (at or after stacked records)
    against this revision's message a record (``old_shard``: the baseline's shard module); the
    models, and what the baseline side is."""
    items = _zipf_items()
    old_records = module_at_revision(baseline, "src/driftline/pipeline/records.py", "baseline_records")
    old_messages = getattr(old_records, "bundled", None)  # the revisions before stacked records

    class Shard:  # what _model_events reads of a shard
        shard, model_events_topic, model_events_partitions, bundle_model_events = 0, "t", 3, True

    class Alone(Shard):
        bundle_model_events = False

    def before() -> Any:
        if old_messages is None:
            sent = shard.ShardProcessor._model_events(Alone(), items, [], [], [])  # type: ignore[arg-type]
            made = [records.decode_model_event(m.value) for m in sent]
        else:
            made = old_shard.ShardProcessor._columns_records(Shard, old_records.Outcomes, items)
            sent = old_messages(Shard.model_events_topic, Shard.model_events_partitions, 0, made)
            made = [r for m in sent for r in old_records.decode_model_event(m.value).records]
        clock = _clock(outcomes)
        for record in made:
            clock.add_outcomes(record)
        return clock

    def now() -> Any:
        clock = _clock(outcomes)
        for message in shard.ShardProcessor._model_events(Shard(), items, [], [], []):  # type: ignore[arg-type]
            clock.add_stacked_outcomes(records.decode_model_event(message.value))
        return clock

    def buckets(clock: Any) -> dict[Any, Any]:
        return {model: {start: (b.outcomes, b.rerouted) for start, b in held.items()}
                for model, held in clock.buckets.items()}

    if buckets(before()) != buckets(now()):
        raise SystemExit("the baseline's buckets differ from this revision's")

    def step(side: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(20):
                side()
        return run

    sides = {"baseline": (step(before), nullcontext), "this": (step(now), nullcontext)}
    against = "a message each" if old_messages is None else "bundles"
    return best_of(rounds, sides, 20), len(buckets(now())), against


def bucket_lookup(rounds: int, baseline: Any) -> dict[str, float]:
    # a batch a second: each model's 20 records fall in one metrics interval (one bucket found 20 times)
    made = [Outcomes(0, f"m{m}", "1", [f"p{m}-{r}-{k}" for k in range(4)], [""] * 4, [START + r * 1_000] * 4,
                     [5] * 4, [1] * 4, [None] * 4, [0] * 4) for r in range(20) for m in range(300)]

    def step(module: Any) -> Callable[[], None]:
        def run() -> None:
            clock = _clock(module)
            for record in made:
                clock.add_outcomes(record)
        return run

    return best_of(rounds, {"baseline": (step(baseline), nullcontext), "this": (step(outcomes), nullcontext)},
                   len(made))


def buffer_groups(rounds: int, baseline: Any) -> tuple[dict[str, float], int]:
    """The two revisions' CPU-us a group, and the groups of the batch."""
    rng = random.Random(1)
    n, names = 1_250, [f"x{j}" for j in range(20)] + [f"c{j}" for j in range(5)]
    floats = [np.array([rng.gauss(0, 1) for _ in range(n)]) for _ in range(20)]
    cats = [[rng.choice("abcd") for _ in range(n)] for _ in range(5)]
    listed = [f.tolist() for f in floats] + cats
    features = [dict(zip(names, row, strict=True)) for row in zip(*listed, strict=True)]
    columns = EventColumns.of(features, [Prediction(label="a", score=0.5)] * n, [5.0] * n,
                              (names, listed, [*floats, *[None] * 5]))
    timestamps = START + np.sort(np.array([rng.randrange(1_000) for _ in range(n)], dtype=np.int64))
    by_model: dict[tuple[str, str], list[int]] = {}
    for i, item in enumerate(_zipf_items()):
        by_model.setdefault((item.model_id, "1"), []).append(i)
    sizes_ms = [size * 1_000 for size in Settings().windows.sizes_s]

    def buffers(module: Any) -> Any:
        class Buffers:  # what _buffer_groups and _buffer_window read and write of a shard
            _buffer_window = module.ShardProcessor._buffer_window
            _accumulate = module.ShardProcessor._accumulate

            def __init__(self) -> None:
                self.sizes_ms, self.buffered, self.open, self._first_end = sizes_ms, {}, {}, 2**62

        made = Buffers()
        module.ShardProcessor._buffer_groups(made, columns, timestamps, [""] * n, by_model)
        return made

    def step(module: Any) -> Callable[[], None]:
        def run() -> None:
            for _ in range(5):
                buffers(module)
        return run

    def parts(made: Any) -> list[tuple[Any, list[int]]]:
        return sorted((tuple(key), [part.n for part in held.parts]) for key, held in made.buffered.items())

    if parts(buffers(baseline)) != parts(buffers(shard)):
        raise SystemExit("the baseline's window buffers differ from this revision's")
    sides = {"baseline": (step(baseline), nullcontext), "this": (step(shard), nullcontext)}
    return best_of(rounds, sides, 5 * len(by_model)), len(by_model)


def held_runs(rounds: int, models: int = 1_000, batches: int = 52,
              batch_events: int = 625) -> tuple[dict[str, float], int, int]:
    """CPU-ms a ``RUN_EVENTS`` round of a shard's watch: ``models`` models' held runs of ``batches``
    grouped batches (Zipf traffic over the models, 20 float and 5 categorical features, as
    bench_models' 1,000 models at 5,000 predictions/s bring a shard ~52 batches a round) copied
    out model by model (``_Held.settle``) and in one gather (``settle_together``), both sides'
    parts checked equal; and the models and runs of the round."""
    rng = np.random.default_rng(2)
    share = np.arange(1, models + 1) ** -1.1
    numeric, others = [f"x{j}" for j in range(20)], [f"c{j}" for j in range(5)]
    kept = []
    for b in range(batches):
        chosen = np.sort(rng.choice(models, size=batch_events, p=share / share.sum()))
        keys, counts = np.unique(chosen, return_counts=True)
        starts = [0, *np.cumsum(counts).tolist()]
        floats = FloatBlock(tuple(numeric), rng.normal(size=(20, batch_events)))
        values = {name: [str(v) for v in rng.integers(0, 4, batch_events)] for name in others}
        grouped = feature_watch.GroupedEvents([(f"m{k:04d}", "1") for k in keys.tolist()], starts,
                                              list(range(batch_events)),
                                              [f"p{b}-{i}" for i in range(batch_events)], floats, values)
        kept.append((grouped, keys.tolist()))

    def helds() -> list[Any]:
        held: dict[int, Any] = {}
        for grouped, keys in kept:
            for g, k in enumerate(keys):
                h = held.get(k)
                if h is None:
                    h = held[k] = feature_watch._Held(0)
                    h.reads = (numeric, others)
                h.runs.append((grouped, grouped.starts[g], grouped.starts[g + 1]))
        return [held[k] for k in sorted(held)]

    made: dict[str, list[Any]] = {}

    def fresh(side: str) -> Callable[[], AbstractContextManager[Any]]:
        @contextmanager
        def context() -> Iterator[None]:
            made[side] = helds()
            yield
        return context

    sides: dict[str, Side] = {
        "alone": (lambda: [h.settle() for h in made["alone"]], fresh("alone")),
        "together": (lambda: feature_watch.settle_together(made["together"]), fresh("together")),
    }
    best = best_of(rounds, sides, 1)
    parts = {side: [(h.numbers[0].matrix.tobytes(), h.values) for h in made[side]] for side in sides}
    if parts["alone"] != parts["together"]:
        raise SystemExit("the runs copied out together differ from each model's own")
    runs = sum(len(keys) for _, keys in kept)
    return {side: us / 1e3 for side, us in best.items()}, len(made["alone"]), runs


def filled_partials(windows: int = 20, events: int = 289) -> list[list[dict[str, Any]]]:
    """``windows`` windows of ``events`` events of 20 float and 5 categorical features, each as its
    4 shards' partials in the values form (each shard below ``drift.min_count``: how most of 1,000
    models' 300 s windows reach stage 2 at 5,000 predictions/s), decoded from JSON."""
    rng = random.Random(9)
    names = [f"x{j}" for j in range(20)] + [f"c{j}" for j in range(5)]
    out = []
    for _ in range(windows):
        shards = []
        for k in range(4):
            rows = [{name: rng.gauss(0, 1) if name[0] == "x" else rng.choice("abcd") for name in names}
                    for _ in range(k, events, 4)]
            labels = [Prediction(label=rng.choice("01")) for _ in rows]
            part = EventColumns.of(rows, labels, [5.0] * len(rows))
            shards.append(orjson.loads(orjson.dumps(values_partial([part]))))
        out.append(shards)
    return out


def filled_merge(rounds: int, baseline: Any) -> dict[str, float]:
    """CPU-us a window: its 4 values-form partials parsed and merged with sketches (a filled
    window's close), by ``baseline`` (a revision's window_stats module) and by this one."""
    windows = filled_partials()

    def step(module: Any) -> Callable[[], None]:
        def run() -> None:
            for window in windows:
                parts = [module.WindowAccumulator.from_partial(partial) for partial in window]
                module.merge_accumulators(parts, sketches=True, consume=True)
        return run

    sides = {"baseline": (step(baseline), nullcontext), "this": (step(window_stats), nullcontext)}
    return best_of(rounds, sides, len(windows))


def partial_checks(rounds: int, baseline: Any) -> dict[str, float]:
    """CPU-us a partial: a values-form partial of a 1-26 event window checked on arrival
    (``check_partial``) by ``baseline`` (a revision's windows module) and by this one."""
    windows = filled_partials(windows=40, events=14)
    partials = [partial for window in windows for partial in window]

    def step(module: Any) -> Callable[[], None]:
        def run() -> None:
            for partial in partials:
                module.check_partial(partial)
        return run

    sides = {"baseline": (step(baseline), nullcontext), "this": (step(windows_module), nullcontext)}
    return best_of(rounds, sides, len(partials))


def window_buckets(rounds: int) -> dict[str, float]:
    """CPU-us a window: the sketch buckets of a filled window's 20 float features, found sketch by
    sketch (``QuantileSketch.buckets``) and all at once (``QuantileSketch.find_buckets``)."""
    parse = window_stats.WindowAccumulator.from_partial
    merged = [window_stats.merge_accumulators([parse(p) for p in window]) for window in filled_partials()]
    sketches = [[stats.sketch for name, stats in m.features.items() if name[0] == "x"] for m in merged]

    def alone() -> None:
        for group in sketches:
            for sketch in group:
                sketch._buckets = None
                sketch.buckets()

    def together() -> None:
        for group in sketches:
            for sketch in group:
                sketch._buckets = None
            QuantileSketch.find_buckets(group)

    return best_of(rounds, {"one by one": (alone, nullcontext), "at once": (together, nullcontext)},
                   len(sketches))


def _against(title: str, sides: dict[str, float], unit: str, digits: int = 0) -> str:
    """A step's line: its reference's figure (the first side) against the other's, and the ratio."""
    (old, before), (new, after) = sides.items()
    return f"{title}: {old} {before:.{digits}f} vs {new} {after:.{digits}f} {unit} ({before / after:.2f}x)"


def measure(rounds: int, baseline: str | None) -> list[str]:
    lines = [
        _against("normal scores, 1,250 x 20 a batch", normal_scores(rounds), "CPU-us a batch"),
        _against("category codes, 5 columns of 1,250", category_codes(rounds), "CPU-ns a value", 1),
        _against("features packed, 1,250 events of 25 features", features_packed(rounds), "CPU-ns an event"),
        _against("pending tails, 1,250 scored class outputs", pending_tails(rounds), "CPU-ns an output"),
        _against("digests and id keys, 2,500 payloads", digests_and_keys(rounds),
                 "CPU-ns a payload with its id"),
        _against("outcomes made, 1,250 labels joined", outcome_made(rounds), "CPU-ns an outcome"),
        _against("outcome messages, 1,250 outcomes of 25 features", outcome_messages_written(rounds),
                 "CPU-ns an outcome"),
        _against("stage 2's record, 1,250 outcomes", record_columns(rounds), "CPU-ns an outcome"),
        _against("sample id hashes, 1,250 ids", sample_hashes(rounds), "CPU-ns an id"),
        _against("bucket close, 1,260 one-target outcomes", bucket_close(rounds), "CPU-us an outcome", 2),
        _against("sketch buckets, a filled window's 20 float features", window_buckets(rounds),
                 "CPU-us a window"),
    ]
    if baseline is not None:
        old_shard = module_at_revision(baseline, "src/driftline/pipeline/shard.py", "baseline_shard")
        old_outcomes = module_at_revision(baseline, "src/driftline/pipeline/outcomes.py", "baseline_outcomes")
        cr, groups = columns_records(rounds, old_shard)
        lines.append(f"columnar records, 1,250 outcomes of {groups} models: {baseline} "
                     f"{cr['baseline']:.0f} vs this {cr['this']:.0f} CPU-us a batch "
                     f"({cr['baseline'] / cr['this']:.2f}x)")
        bl = bucket_lookup(rounds, old_outcomes)
        lines.append(f"bucket lookup, records of 4 outcomes over 300 models: {baseline} "
                     f"{bl['baseline']:.2f} vs this {bl['this']:.2f} CPU-us a record "
                     f"({bl['baseline'] / bl['this']:.2f}x)")
        me, made, against = model_events(rounds, baseline, old_shard)
        lines.append(f"model-events records, 1,250 outcomes of {made} models: {against} "
                     f"{me['baseline']:.0f} vs stacked {me['this']:.0f} CPU-us a batch "
                     f"({me['baseline'] / me['this']:.2f}x)")
        bg, groups = buffer_groups(rounds, old_shard)
        lines.append(f"window buffers, 1,250 events of {groups} models: {baseline} {bg['baseline']:.1f} vs "
                     f"this {bg['this']:.1f} CPU-us a group ({bg['baseline'] / bg['this']:.2f}x)")
        old_stats = module_at_revision(baseline, "src/driftline/operators/window_stats.py",
                                       "baseline_window_stats")
        fm = filled_merge(rounds, old_stats)
        lines.append(f"filled window merged, 4 values-form partials of 289 events: {baseline} "
                     f"{fm['baseline']:.0f} vs this {fm['this']:.0f} CPU-us a window "
                     f"({fm['baseline'] / fm['this']:.2f}x)")
        old_windows = module_at_revision(baseline, "src/driftline/pipeline/windows.py", "baseline_windows")
        pc = partial_checks(rounds, old_windows)
        lines.append(f"partial checked on arrival, values form of 3-4 events a shard: {baseline} "
                     f"{pc['baseline']:.1f} vs this {pc['this']:.1f} CPU-us a partial "
                     f"({pc['baseline'] / pc['this']:.2f}x)")
    hr, held, runs = held_runs(rounds)
    lines.append(f"held runs copied out, {held} models' {runs:,} runs of a round: model by model "
                 f"{hr['alone']:.0f} vs together {hr['together']:.0f} CPU-ms "
                 f"({hr['alone'] / hr['together']:.2f}x)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="also time the per-model records and the bucket lookup of this revision")
    args = parser.parse_args(argv)
    for line in measure(args.rounds, args.baseline):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
