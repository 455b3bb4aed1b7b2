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

``--pending N`` measures a join with N pending predictions (25 floats, UUID ids) held under
``--budget-mb`` (``join.memory_budget_mb``) against the same join all in memory, each in a
process of its own: RSS, the CPU time per event of steady traffic (a prediction and the label of
the oldest pending one, ``--rate`` of each per second) with checkpoint deltas every
``--interval`` s, the checkpoint bytes per second against the input's (a base every ``--ratio``
x its size, amortised), and the restore (the base and the most deltas that can follow it, then
the first prediction), each beside the issue's target for 10M pending. Then the chain the runner
keeps at 10M under ``worker.restore_target_s`` (:func:`bounded_chain`: the runner's own
``ChainLength.base_due`` with the costs this run's restore measured): deltas per base, checkpoint
bytes per second against the input's, the worst restore in CPU time and in this run's wall time,
and how long writing a base stalls batches. Not measured: reading the chain from the broker (taken
at ``RestoreCosts``' default 100 MB/s; the worker's ``driftline_stage_restore_read_seconds`` has it).

    .venv/bin/python bench/bench_join_state.py --pending 1000000 --budget-mb 64

``--base-write N`` times writing a base of N pending (``dump_state``), all in memory and under
``--budget-mb``: how long a runner's checkpoint keeps batches out before the broker write, and the
process RSS around it (each in a fresh process): with the join built, the peak while the base is
pickled and cut into the checkpoint store's message groups, after, and after ``malloc_trim``.

    .venv/bin/python bench/bench_join_state.py --base-write 1000000

``--local-restore N`` writes a base of N pending and three deltas through the checkpoint store on a
fresh embedded broker and reads the chain back as a restart does: from the broker, and with the
base's local copy (``worker.state_dir``), warm and with its pages evicted; the read speeds and a
linear extrapolation to 10M.

    .venv/bin/python bench/bench_join_state.py --local-restore 1000000

``--flush-hold MB`` writes a base of MB through the checkpoint store on a fresh embedded broker, as
a runner writes one beside batches, and every 0.5 s delivers a batch of outputs and then times a
``producer.flush()``: what a flush before another shard's checkpoint holds batches for while the
base is in flight (``docs/state.md``).

    .venv/bin/python bench/bench_join_state.py --flush-hold 270
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import multiprocessing
import random
import resource
import sys
import time
import tracemalloc
import types
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from driftline.operators.join import (
    JoinChanges,
    LabelJoin,
    _closing_starts,
    payload_digest,
    restoring_under_budget,
)
from driftline.pipeline.state import (
    BlobFile,
    dump_delta,
    dump_state,
    dump_state_to_file,
    load_delta,
    load_state,
    release_free_memory,
)
from driftline.schemas.events import LabelEvent, PredictionEvent
from driftline.streams.runner import BASE_TIME_SHARE, ChainLength, RestoreCosts

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


@dataclass
class SpillRun:
    """One join of ``pending`` predictions under ``budget_mb`` (0: all in memory)."""

    pending: int
    budget_mb: int
    build_s: float
    rss_mb: float  # after the steady traffic, less the process's before the join was built
    peak_rss_mb: float  # the most, checkpoints and restore included
    table_mb: float  # the join's record table and time index as Python objects (sys.getsizeof)
    spilled: int
    store_mb: float
    event_us: float  # a prediction and a label of steady traffic (wall)
    event_cpu_us: float  # the same in this process's CPU time, system calls included
    input_bytes_per_s: float
    base_bytes: int
    base_write_s: float
    delta_bytes: float
    checkpoint_bytes_per_s: float
    restore_s: float  # base + the most deltas before the next base + the first prediction
    restore_deltas: int
    base_load_s: float  # unpickling the base (wall)
    delta_apply_s: float  # one delta: unpickling and applying it (wall)
    restore_cpu_s: float  # restore_s in this process's CPU time (what an idle core takes)
    delta_changes: float  # records changed per delta (new, joined, gone)
    interval_s: float  # traffic between two deltas
    base_write_cpu_s: float = 0.0  # base_write_s in CPU time
    base_load_cpu_s: float = 0.0  # base_load_s in CPU time
    delta_apply_cpu_s: float = 0.0  # delta_apply_s in CPU time
    rss_built_mb: float = 0.0  # the join built, before the base (less the process's before)
    base_peak_rss_mb: float = 0.0  # the process's peak while the base was pickled (VmHWM)
    rss_trimmed_mb: float = 0.0  # rss_mb after release_free_memory, as the runner does after a base
    table_parts: dict[str, float] = field(default_factory=dict)  # bytes per pending prediction, by structure
    restore_peak_rss_mb: float = 0.0  # the process's peak while base and deltas were restored
    rss_before_restore_mb: float = 0.0  # the process then (the join built and dropped)
    delta_changed_all: float = 0.0  # records a delta's header counts (added, closings, gone)
    apply_ab_cpu_s: dict[str, float] = field(default_factory=dict)  # a delta, by applier, best of rounds
    delta_load_cpu_s: float = 0.0  # a delta unpickled (LZ4 and pickle), best of the A/B's rounds
    base_ab_cpu_s: float = 0.0  # the base restored (under the budget), best of the A/B's restores


Applier = Callable[[LabelJoin, JoinChanges], None]


def baseline_applier(path: str) -> Applier:
    """``LabelJoin.apply_changes`` as the join module at ``path`` (an older copy: ``git show
    <commit>:src/driftline/operators/join.py > path``) applies a delta, with that module's own
    lookups and splices bound to the join for the call."""
    spec = importlib.util.spec_from_file_location("driftline_join_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    old = vars(module.LabelJoin)
    methods = ("_apply_closings", "_put", "_locate", "_put_records", "_gids", "_close_records", "_close_one")
    names = [name for name in methods if name in old]

    def apply(join: LabelJoin, changes: JoinChanges) -> None:
        for name in names:
            setattr(join, name, types.MethodType(old[name], join))
        try:
            old["apply_changes"](join, changes)
        finally:
            for name in names:
                delattr(join, name)

    return apply


def _table_digest(join: LabelJoin) -> str:
    """SHA-256 of the record table as it is laid out: groups in order, the time index in order."""
    digest = hashlib.sha256()
    for group in join._groups:
        digest.update(len(group).to_bytes(4, "little") + group)
    for second, crcs in join._buckets.items():
        digest.update(second.to_bytes(8, "little", signed=True) + crcs.tobytes())
    digest.update(repr((join._low, join._split, join._records, join._pending, join._bucket_keys)).encode())
    return digest.hexdigest()


def apply_ab(base: bytes | BlobFile, deltas: list[bytes], budget_mb: int, appliers: Mapping[str, Applier],
             rounds: int) -> tuple[dict[str, float], float, float]:
    """The base restored under ``budget_mb`` and ``deltas`` applied by each of ``appliers`` in turn
    (the order flipped every round), ``rounds`` each, in this process: the CPU time of a delta's
    apply by applier, of a delta's unpickling (LZ4 and pickle: the same for all) and of the base
    restore, best of the rounds. Every applier must leave the same table (:func:`_table_digest`),
    else AssertionError."""
    best: dict[str, float] = {}
    base_best = load_best = float("inf")
    digests: set[str] = set()
    for turn in range(rounds):
        names = list(appliers) if turn % 2 == 0 else list(appliers)[::-1]
        for name in names:
            gc.collect()
            cpu = time.process_time()
            with restoring_under_budget(budget_mb * 2**20):
                join = load_state(base, LabelJoin, "bench")
            if budget_mb:
                join.set_memory_budget(budget_mb * 2**20)
            base_best = min(base_best, time.process_time() - cpu)
            cpu = time.process_time()
            changes = [load_delta(delta, "bench") for delta in deltas]
            load_best = min(load_best, (time.process_time() - cpu) / len(deltas))
            cpu = time.process_time()
            for change in changes:
                appliers[name](join, change)
            best[name] = min(best.get(name, float("inf")), (time.process_time() - cpu) / len(deltas))
            digests.add(_table_digest(join))
            if join._store is not None:
                join._store.close()
            del join, changes
    assert len(digests) == 1, f"the appliers left different tables: {sorted(digests)}"
    return best, load_best, base_best


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def table_parts(join: LabelJoin) -> dict[str, float]:
    """Bytes per pending prediction of each structure of the join's table (``sys.getsizeof``)."""
    groups, buckets = join._groups, join._buckets
    record_bytes = sum(map(len, groups))
    parts = {
        "records": record_bytes,
        "bytes headers of the groups": sum(map(sys.getsizeof, groups)) - record_bytes,
        "list of groups": sys.getsizeof(groups),
        "time index": sum(map(sys.getsizeof, buckets.values())) + sys.getsizeof(buckets)
        + sys.getsizeof(join._bucket_keys),
    }
    pending = max(1, join.pending_count)
    return {name: size / pending for name, size in parts.items()}


def measure_spill(pending: int, budget_mb: int, rate: float = 5_000, interval_s: float = 5.0,
                  intervals: int = 4, ratio: float = 1.0, appliers: Mapping[str, Applier] | None = None,
                  ab_rounds: int = 3) -> SpillRun:
    """Build ``pending`` predictions (25 floats), then ``intervals`` checkpoint intervals of steady
    traffic: each prediction comes with the label of the oldest pending one (spilled, past a budget).
    ``appliers``: the restore's deltas also applied by each of them in turn (:func:`apply_ab`)."""
    step_ms = max(1, round(1000 / rate))
    per_interval = int(rate * interval_s)
    total = pending + per_interval * intervals
    join = LabelJoin(horizon_ms=10 * total * step_ms, max_pending=total + 1, max_held=1000)
    if budget_mb:
        join.set_memory_budget(budget_mb * 2**20)
    stream = events(total + 1, floats, step_ms=step_ms)  # one more: the first after the restore
    order = bytearray()  # pending ids, oldest first, 16 raw bytes each (not the join's memory)
    gc.collect()
    rss_before = _rss_mb()
    started = time.perf_counter()
    for event in (next(stream) for _ in range(pending)):
        join.on_prediction(event, segment="region=eu", digest=payload_digest(event.prediction_id.encode()))
        order += uuid.UUID(event.prediction_id).bytes
    build_s = time.perf_counter() - started
    gc.collect()
    rss_built = _rss_mb() - rss_before - len(order) / 2**20
    join.track_changes()
    _reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    base = dump_state_to_file(join)  # as the runner writes a base: into a file, never whole in memory
    base_write_s, base_write_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    base_peak = _status_mb("VmHWM")
    base_bytes = len(base)
    deltas: list[bytes] = []
    busy = busy_cpu = 0.0
    input_bytes = labelled = 0
    for _ in range(intervals):
        batch = [next(stream) for _ in range(per_interval)]
        payloads = [event.model_dump_json().encode() for event in batch]
        for event in batch:  # first: with fewer pending than an interval's labels, some label this batch
            order += uuid.UUID(event.prediction_id).bytes
        oldest = (str(uuid.UUID(bytes=bytes(order[16 * i : 16 * i + 16])))
                  for i in range(labelled, labelled + per_interval))
        labels = [LabelEvent(prediction_id=pid, label="ok", timestamp=event.timestamp)
                  for pid, event in zip(oldest, batch, strict=True)]
        label_payloads = [label.model_dump_json().encode() for label in labels]
        labelled += per_interval
        started, cpu = time.perf_counter(), time.process_time()
        for event, payload, label, label_payload in zip(batch, payloads, labels, label_payloads, strict=True):
            join.on_prediction(event, segment="region=eu", digest=payload_digest(payload))
            join.on_label(label, digest=payload_digest(label_payload))
        busy += time.perf_counter() - started
        busy_cpu += time.process_time() - cpu
        input_bytes += sum(map(len, payloads)) + sum(map(len, label_payloads))
        deltas.append(dump_delta(join.take_changes()))
    del batch, payloads, labels, label_payloads
    gc.collect()
    held_mb = (len(order) + sum(map(len, deltas)) + (base_bytes if isinstance(base, bytes) else 0)) / 2**20
    rss_mb = _rss_mb() - rss_before - held_mb
    release_free_memory()
    rss_trimmed = _rss_mb() - rss_before - held_mb
    spilled, store_mb = join.spilled_count, join.store_bytes / 2**20
    parts = table_parts(join)
    table_mb = (sys.getsizeof(join._groups) + sum(map(sys.getsizeof, join._groups))
                + sum(sys.getsizeof(a) for a in join._buckets.values())) / 2**20
    del join
    gc.collect()
    delta_bytes = sum(map(len, deltas)) / intervals
    intervals_per_base = max(1.0, ratio * len(base) / delta_bytes)
    checkpoint_bytes_per_s = (delta_bytes + len(base) / intervals_per_base) / interval_s
    release_free_memory()
    rss_before_restore = _rss_mb()
    _reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    with restoring_under_budget(budget_mb * 2**20):  # as ShardProcessor.restore: spilled as it comes
        restored = load_state(base, LabelJoin, "bench")
    if budget_mb:
        restored.set_memory_budget(budget_mb * 2**20)
    base_s, base_cpu = time.perf_counter() - started, time.process_time() - cpu
    ab, load_ab, base_ab = ({}, 0.0, 0.0) if not appliers else apply_ab(base, deltas, budget_mb, appliers,
                                                                         ab_rounds)
    if isinstance(base, BlobFile):
        base.close()
    del base
    changed = changed_all = 0  # counted first: not part of the apply
    for delta in deltas:
        changes = load_delta(delta, "bench")
        changed += len(changes.gone) + _record_count(changes.records)
        changed_all += (len(changes.gone) + _record_count(changes.records)
                        + len(_closing_starts(changes.closings)[0]))
    started, cpu = time.perf_counter(), time.process_time()
    for delta in deltas:
        changes = load_delta(delta, "bench")
        assert isinstance(changes, JoinChanges)
        restored.apply_changes(changes)
    restore_peak = _status_mb("VmHWM")
    per_delta_s = (time.perf_counter() - started) / len(deltas)
    per_delta_cpu = (time.process_time() - cpu) / len(deltas)
    started, cpu = time.perf_counter(), time.process_time()
    restored.on_prediction(next(stream), segment="region=eu")
    first_s, first_cpu = time.perf_counter() - started, time.process_time() - cpu
    worst_deltas = max(len(deltas), int(intervals_per_base))
    restore_s = base_s + per_delta_s * worst_deltas + first_s
    restore_cpu_s = base_cpu + per_delta_cpu * worst_deltas + first_cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return SpillRun(pending, budget_mb, build_s, rss_mb, peak, table_mb, spilled, store_mb,
                    busy / (intervals * per_interval) * 1e6, busy_cpu / (intervals * per_interval) * 1e6,
                    input_bytes / (intervals * interval_s),
                    base_bytes, base_write_s, delta_bytes, checkpoint_bytes_per_s, restore_s, worst_deltas,
                    base_s, per_delta_s, restore_cpu_s, changed / len(deltas), interval_s,
                    base_write_cpu_s, base_cpu, per_delta_cpu, rss_built, base_peak, rss_trimmed, parts,
                    restore_peak, rss_before_restore, changed_all / len(deltas), ab, load_ab, base_ab)


@dataclass
class BoundedChain:
    """A chain at ``pending`` under ``worker.restore_target_s`` (the runner's :meth:`ChainLength.base_due`),
    its costs those a worker would have measured in this run's restore (CPU time; the read speed
    is :class:`RestoreCosts`' default: the bench reads no broker)."""

    pending: int
    target_s: float
    deltas: int  # per base
    checkpoint_bytes_per_s: float  # deltas and their base, amortised
    restore_cpu_s: float  # the worst restore (a base and ``deltas``), CPU time, reading included
    restore_wall_s: float  # the same in this run's wall time (the machine's load included)
    base_stall_s: float  # writing the base (wall): batches wait that long


def bounded_chain(run: SpillRun, pending: int = 10_000_000, target_s: float = 60.0,
                  deltas_per_base: int = 720, ratio: float = 1.0, stall: bool = True,
                  read_mb_per_s: float = RestoreCosts().read_mb_per_s,
                  local_base: bool = False) -> BoundedChain:
    """The chain the runner keeps at ``pending`` (this run's figures scaled linearly but a delta's);
    ``stall=False``: as if a base were written beside batches (no ``BASE_TIME_SHARE`` wait);
    ``local_base``: the base read from its local copy (``worker.state_dir``) at
    :class:`RestoreCosts`' local read speed, the deltas from the broker at ``read_mb_per_s``."""
    scale = pending / run.pending
    base_bytes = int(run.base_bytes * scale)
    changed = int(run.delta_changes)
    costs = RestoreCosts(run.base_load_cpu_s / (run.base_bytes / 1e6), run.delta_apply_cpu_s / changed,
                         read_mb_per_s)
    read_s = base_bytes / 1e6 / costs.base_read_mb_per_s(local_base)
    base_stall_s = run.base_write_s * scale
    chain = ChainLength(base_bytes, base_hold_s=base_stall_s if stall else 0.0, local_base=local_base)
    while not chain.base_due(deltas_per_base, ratio, target_s, costs, changed, chain.deltas * run.interval_s):
        chain.deltas += 1
        chain.delta_bytes += int(run.delta_bytes)
        chain.changed += changed
    n = chain.deltas
    bytes_per_s = (base_bytes + n * run.delta_bytes) / ((n + 1) * run.interval_s)
    delta_read_s = n * run.delta_bytes / 1e6 / costs.read_mb_per_s
    return BoundedChain(pending, target_s, n, bytes_per_s, chain.restore_seconds(costs),
                        run.base_load_s * scale + n * run.delta_apply_s + read_s + delta_read_s, base_stall_s)


def print_bounded(run: SpillRun, pending: int = 10_000_000, target_s: float = 60.0) -> BoundedChain:
    measured = "measured" if pending == run.pending else f"scaled from {run.pending:,}"
    default_read = RestoreCosts().read_mb_per_s
    local_read = RestoreCosts().local_read_mb_per_s
    for stall, read, local in ((True, default_read, False), (False, default_read, False),
                               (False, 5 * default_read, False), (False, default_read, True)):
        chain = bounded_chain(run, pending, target_s, stall=stall, read_mb_per_s=read, local_base=local)
        share = chain.checkpoint_bytes_per_s / run.input_bytes_per_s
        how = (f"base write (batches stalled) {chain.base_stall_s:.0f} s, bases <= {BASE_TIME_SHARE:.0%} "
               "of the time" if stall else "bases written beside batches (stage 1 now)")
        where = (f"the base from its local copy (worker.state_dir) at {local_read:g} MB/s, "
                 f"deltas at {read:g} MB/s" if local else f"chain read at {read:g} MB/s")
        print(f"  restore bound worker.restore_target_s={target_s:g} at {pending:,} pending ({measured}), "
              f"{where}: a base every {chain.deltas} deltas; {how}")
        rows = (("checkpoint bytes/s over input", share, 2.0, "x"),
                ("worst restore, CPU time + reading", chain.restore_cpu_s, target_s, "s"),
                ("worst restore, this run's wall time + reading", chain.restore_wall_s, target_s, "s"))
        for name, value, target, unit in rows:
            verdict = "met" if value <= target else f"MISSED by {value - target:.1f} {unit}"
            print(f"    {name}: {value:.1f} {unit} (target <= {target:g} {unit}): {verdict}")
    return bounded_chain(run, pending, target_s)


@dataclass(frozen=True)
class BaseWrite:
    """Writing one base: its size, the stall, and the process memory around it (MB)."""

    bytes: int
    wall_s: float  # dump_state alone: batches wait that long before the broker write
    cpu_s: float
    rss_built_mb: float  # the join built, before the base
    peak_rss_mb: float  # the most while the base was pickled, chunked and its messages built
    rss_after_mb: float  # the base's messages delivered and the blob let go
    rss_trimmed_mb: float  # then release_free_memory (malloc_trim)


def _status_mb(field_name: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field_name)


def _reset_peak_rss() -> None:
    """Restart VmHWM from the current RSS (Linux >= 4.0), so the peak is the base's own."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure_base_write(pending: int, budget_mb: int,
                       dump: Callable[[object], bytes] = dump_state,
                       encode: Callable[[bytes], Iterator[list[bytes]]] | None = None) -> BaseWrite:
    """A base of ``pending`` predictions (25 floats) under ``budget_mb`` (0: all in memory), written
    as a runner does: ``dump`` (the envelope), then ``encode`` (default: the checkpoint store's
    :func:`chunk_groups`, each group dropped as a delivered group is). Run it in a fresh process
    (:func:`measure_base_write_spawned`): the peak is the process's."""
    from driftline.streams.checkpoint import chunk_groups

    groups = encode or (lambda blob: chunk_groups("bench", blob, {("preds", 0): pending}, kind="base"))
    join = LabelJoin(horizon_ms=10 * pending * 1000, max_pending=pending + 1, max_held=1000)
    if budget_mb:
        join.set_memory_budget(budget_mb * 2**20)
    for event in events(pending, floats, step_ms=1):
        join.on_prediction(event, segment="region=eu", digest=payload_digest(event.prediction_id.encode()))
    join.track_changes()
    gc.collect()
    release_free_memory()  # what the build freed is not the base's
    rss_built = _status_mb("VmRSS")
    _reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    blob = dump(join)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    size = len(blob)
    for group in groups(blob):
        del group  # delivered
    del blob
    gc.collect()
    peak, rss_after = _status_mb("VmHWM"), _status_mb("VmRSS")
    release_free_memory()
    return BaseWrite(size, wall, cpu, rss_built, peak, rss_after, _status_mb("VmRSS"))


@dataclass(frozen=True)
class BaseHold:
    """How long batches are held per base: the whole pickle under the lock (before), or the copy
    (:meth:`LabelJoin.base_copy`, after), with the pickle in a thread while the join goes on."""

    bytes: int
    pickle_s: float  # dump_state of the join: what held batches before (the broker write came on top)
    pickle_cpu_s: float
    copy_s: float  # base_copy: what holds batches now
    copy_cpu_s: float
    beside_s: float  # the copy pickled in a thread while the main thread took events
    events_beside: int  # predictions + labels the join took meanwhile
    equal: bool  # the copy's base restores the records the join's base at the copy held


def measure_base_hold(pending: int, budget_mb: int, rate: float = 5_000) -> BaseHold:
    """:class:`BaseHold` at ``pending`` predictions (25 floats) under ``budget_mb`` (0: all in
    memory): the join's pickle timed as the runner held batches for it, then a copy taken and
    pickled in a thread while the main thread feeds a prediction and a label of the oldest
    pending one per step, until the pickle is done."""
    import threading

    step_ms = max(1, round(1000 / rate))
    join = LabelJoin(horizon_ms=10 * 2 * pending * step_ms, max_pending=2 * pending + 1, max_held=1000)
    if budget_mb:
        join.set_memory_budget(budget_mb * 2**20)
    stream = events(2 * pending, floats, step_ms=step_ms)
    order: list[str] = []
    for event in (next(stream) for _ in range(pending)):
        join.on_prediction(event, segment="region=eu", digest=payload_digest(event.prediction_id.encode()))
        order.append(event.prediction_id)
    join.track_changes()
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    before = dump_state(join)
    pickle_s, pickle_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), time.thread_time()
    copy = join.base_copy()
    copy_s, copy_cpu_s = time.perf_counter() - started, time.thread_time() - cpu
    out: list[bytes] = []
    writer = threading.Thread(target=lambda: out.append(dump_state(copy)))
    started = time.perf_counter()
    writer.start()
    taken = 0
    for event in stream:  # up to ``pending`` more (then the thread has the GIL to itself)
        if not writer.is_alive():
            break
        join.on_prediction(event, segment="region=eu", digest=payload_digest(event.prediction_id.encode()))
        join.on_label(LabelEvent(prediction_id=order[taken], label=1, timestamp=event.timestamp))
        join.advance(event.timestamp, event.timestamp)
        taken += 1
    writer.join()
    beside_s = time.perf_counter() - started
    copy.release_copy()
    equal = load_state(out.pop(), LabelJoin, "copy")._groups == load_state(before, LabelJoin, "join")._groups
    return BaseHold(len(before), pickle_s, pickle_cpu_s, copy_s, copy_cpu_s, beside_s, 2 * taken, equal)


def print_base_hold(pending: int, budget_mb: int, run: BaseHold) -> None:
    print(f"{pending:,} pending, budget {budget_mb} MB, base {run.bytes / 1e6:.0f} MB: batches held "
          f"{run.pickle_s * 1e3:,.0f} ms ({run.pickle_cpu_s * 1e3:,.0f} ms CPU) to pickle it under the lock "
          f"(plus the broker write) before; {run.copy_s * 1e3:,.1f} ms ({run.copy_cpu_s * 1e3:,.1f} ms CPU) "
          f"to copy now: {run.pickle_s / run.copy_s:,.0f}x less. The copy pickled in a thread in "
          f"{run.beside_s:.1f} s while the join took {run.events_beside:,} events; same base: {run.equal}")


def measure_base_write_spawned(pending: int, budget_mb: int) -> BaseWrite:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure_base_write, (pending, budget_mb))


def measure_base_restore(pending: int, budget_mb: int) -> tuple[float, float, float, float]:
    """RSS (MB) around restoring a base of ``pending`` (in a fresh process): with the base's blob
    alone in memory, the peak while it unpickles, after the blob is let go, after malloc_trim."""
    join = LabelJoin(horizon_ms=10 * pending * 1000, max_pending=pending + 1, max_held=1000)
    if budget_mb:
        join.set_memory_budget(budget_mb * 2**20)
    for event in events(pending, floats, step_ms=1):
        join.on_prediction(event, segment="region=eu", digest=payload_digest(event.prediction_id.encode()))
    blob = dump_state(join)
    del join
    gc.collect()
    release_free_memory()
    rss_blob = _status_mb("VmRSS")
    _reset_peak_rss()
    restored = load_state(blob, LabelJoin, "bench")
    if budget_mb:
        restored.set_memory_budget(budget_mb * 2**20)  # as a restored shard is: payloads spill again
    del blob
    gc.collect()
    peak, after = _status_mb("VmHWM"), _status_mb("VmRSS")
    release_free_memory()
    return rss_blob, peak, after, _status_mb("VmRSS")


@dataclass
class RestorePeak:
    """RSS (MB) of one restore of a base (``streamed``: from a file under the budget; else the blob
    in memory, unpickled whole, the budget set after) in a fresh process."""

    pending: int
    budget_mb: int
    streamed: bool
    base_mb: float
    rss_before_mb: float  # the process before the restore (with the blob, when in memory)
    peak_mb: float
    rss_after_mb: float  # the restored join, the blob let go, after malloc_trim
    wall_s: float
    cpu_s: float
    spilled: int


def measure_restore_peak(pending: int, budget_mb: int, streamed: bool) -> RestorePeak:
    """A base of ``pending`` predictions (25 floats, UUID ids; built in memory: its bytes are the
    same under any budget) restored as a shard's restore does, in this process (run it fresh)."""
    import tempfile

    from driftline.operators.join import restoring_under_budget
    from driftline.pipeline.state import BlobFile

    join = LabelJoin(horizon_ms=10 * pending * 1000, max_pending=pending + 1, max_held=1000)
    for event in events(pending, floats, step_ms=1):
        join.on_prediction(event, segment="region=eu", digest=payload_digest(event.prediction_id.encode()))
    blob = dump_state(join)
    base_mb = len(blob) / 2**20
    del join
    with tempfile.TemporaryFile() as file:
        source: bytes | BlobFile = blob
        if streamed:
            file.write(blob)
            file.flush()
            source = BlobFile(file, len(blob))
            del blob
        gc.collect()
        release_free_memory()
        rss_before = _status_mb("VmRSS")
        _reset_peak_rss()
        started, cpu = time.perf_counter(), time.process_time()
        with restoring_under_budget(budget_mb * 2**20 if streamed else 0):
            restored = load_state(source, LabelJoin, "bench")
        restored.set_memory_budget(budget_mb * 2**20)
        if not streamed:  # the records spill at the next predictions: as many as it takes
            restored._check_at = -1
            while restored._spilling or restored._check_at < 0:
                restored._check_budget()
        wall_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        del source
        if not streamed:
            del blob
        gc.collect()
        peak = _status_mb("VmHWM")
        release_free_memory()
        after = _status_mb("VmRSS")
    return RestorePeak(pending, budget_mb, streamed, base_mb, rss_before, peak, after, wall_s, cpu_s,
                       restored.spilled_count)


def print_restore_peak(run: RestorePeak) -> None:
    how = "from a file, spilling as its groups arrive" if run.streamed else "in memory, spilled after"
    print(f"{run.pending:,} pending, base {run.base_mb:.0f} MB, budget {run.budget_mb} MB, restored {how}: "
          f"RSS {run.rss_before_mb:.0f} MB before, peak {run.peak_mb:.0f} "
          f"(+{run.peak_mb - run.rss_before_mb:.0f}), "
          f"after {run.rss_after_mb:.0f}; {run.wall_s:.1f} s wall, {run.cpu_s:.1f} s CPU; "
          f"{run.spilled:,} spilled")


def print_base_write(pending: int, budget_mb: int, run: BaseWrite, label: str = "") -> None:
    print(f"{label}{pending:,} pending, budget {budget_mb} MB: base {run.bytes / 1e6:.0f} MB written in "
          f"{run.wall_s:.1f} s wall, {run.cpu_s:.1f} s CPU; RSS {run.rss_built_mb:.0f} MB built, "
          f"peak {run.peak_rss_mb:.0f} (+{run.peak_rss_mb - run.rss_built_mb:.0f}, "
          f"{(run.peak_rss_mb - run.rss_built_mb) * 2**20 / run.bytes:.2f}x the base), "
          f"after {run.rss_after_mb:.0f}, after malloc_trim {run.rss_trimmed_mb:.0f}")


async def _chain_read(settings: Any, blob: bytes) -> tuple[float, float]:
    from aiokafka import AIOKafkaProducer

    from driftline.kafka.clients import aiokafka_producer_kwargs
    from driftline.streams.checkpoint import CheckpointStore

    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        writer = CheckpointStore(settings, producer)
        await writer.start()
        started = time.perf_counter()
        await writer.save_link("bench", 0, blob, {("preds", 0): 1}, base=True, parent=None)
        write_s = time.perf_counter() - started
        await writer.stop()
        reader = CheckpointStore(settings, producer)
        await reader.start()
        started = time.perf_counter()
        chain = (await reader.load_all("bench", [0]))[0]
        read_s = time.perf_counter() - started
        await reader.stop()
        assert _blob_bytes(chain.blob) == blob
        return write_s, read_s
    finally:
        await producer.stop()


def _blob_bytes(blob: Any) -> bytes:
    """A chain's base as bytes (one over checkpoint.SPOOL_ABOVE is read from a file)."""
    from driftline.pipeline.state import BlobFile

    if isinstance(blob, BlobFile):
        with blob.file:
            return blob.read()
    return bytes(blob)


def measure_chain_read(megabytes: int) -> tuple[float, float]:
    """(write s, read s) of a base of ``megabytes`` through the checkpoint store on a fresh
    embedded broker: the read speed a restore's ``RestoreCosts.read_mb_per_s`` stands for."""
    import asyncio
    import os
    import tempfile
    from pathlib import Path

    from driftline.config import Settings
    from driftline.kafka.admin import ensure_topics
    from driftline.local.broker import running_broker

    blob = os.urandom(megabytes * 10**6)  # incompressible, as packed doubles nearly are
    with tempfile.TemporaryDirectory(prefix="driftline-chain-") as tmp, running_broker() as broker:
        settings = Settings(home=Path(tmp), kafka={"bootstrap_servers": broker.bootstrap_servers})
        ensure_topics(settings)
        return asyncio.run(_chain_read(settings, blob))


@dataclass(frozen=True)
class FlushHold:
    """What a producer flush before a checkpoint costs while another shard's base is in flight:
    each figure once per simulated checkpoint of the other shard (seconds)."""

    base_bytes: int
    base_write_s: float  # save_link of the base, timed from its task
    flush_s: tuple[float, ...]  # producer.flush() while the base was in flight: batches held
    deliver_s: tuple[float, ...]  # delivering a batch of outputs meanwhile (what a batch pays anyway)


async def _flush_hold(settings: Any, blob: bytes, interval_s: float) -> FlushHold:
    import asyncio

    from aiokafka import AIOKafkaProducer

    from driftline.kafka.clients import aiokafka_producer_kwargs
    from driftline.pipeline.stage import OutboundMessage
    from driftline.streams.checkpoint import CheckpointStore
    from driftline.streams.delivery import deliver

    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        store = CheckpointStore(settings, producer)
        await store.start()
        # The shard's topic exists already (a base after the first): the write is the chunks alone.
        await store.save_link("bench", 0, b"first", {("preds", 0): 1}, base=True, parent=None)
        outputs = [OutboundMessage(settings.topics.outcomes, str(i).encode(), b"x" * 200) for i in range(500)]

        async def timed_write() -> float:
            began = time.perf_counter()
            await store.save_link("bench", 0, blob, {("preds", 0): 2}, base=True, parent=None)
            return time.perf_counter() - began

        write = asyncio.ensure_future(timed_write())
        flush_s: list[float] = []
        deliver_s: list[float] = []
        while not write.done():
            await asyncio.sleep(interval_s)  # a batch's worth of time between two checkpoints
            if write.done():
                break
            began = time.perf_counter()
            await deliver(producer, outputs, what="bench outputs")
            deliver_s.append(time.perf_counter() - began)
            began = time.perf_counter()
            await producer.flush()
            flush_s.append(time.perf_counter() - began)
        write_s = await write
        await store.stop()
        return FlushHold(len(blob), write_s, tuple(flush_s), tuple(deliver_s))
    finally:
        await producer.stop()


def measure_flush_hold(megabytes: int, interval_s: float = 0.5) -> FlushHold:
    """:class:`FlushHold` with a base of ``megabytes`` written through the checkpoint store on a
    fresh embedded broker, a checkpoint of another shard every ``interval_s``."""
    import asyncio
    import os
    import tempfile
    from pathlib import Path

    from driftline.config import Settings
    from driftline.kafka.admin import ensure_topics
    from driftline.local.broker import running_broker

    blob = os.urandom(megabytes * 10**6)
    with tempfile.TemporaryDirectory(prefix="driftline-flush-") as tmp, running_broker() as broker:
        settings = Settings(home=Path(tmp), kafka={"bootstrap_servers": broker.bootstrap_servers})
        ensure_topics(settings)
        return asyncio.run(_flush_hold(settings, blob, interval_s))


def print_flush_hold(run: FlushHold) -> None:
    flushes, delivers = sorted(run.flush_s), sorted(run.deliver_s)
    if not flushes:
        print(f"a {run.base_bytes / 1e6:.0f} MB base written in {run.base_write_s:.1f} s: "
              "no checkpoint fell inside")
        return
    print(f"a {run.base_bytes / 1e6:.0f} MB base in flight for {run.base_write_s:.1f} s: "
          f"{len(flushes)} checkpoints of another shard; the producer flush before each held batches median "
          f"{_median(run.flush_s) * 1e3:,.0f} ms, max {flushes[-1] * 1e3:,.0f} ms, "
          f"{sum(flushes):.1f} s in all ({sum(flushes) / run.base_write_s:.0%} of the write); "
          f"a batch of 500 outputs delivered meanwhile in median {_median(run.deliver_s) * 1e3:,.0f} ms, "
          f"max {delivers[-1] * 1e3:,.0f} ms")


@dataclass(frozen=True)
class LocalRestore:
    """Writing a base (and a few deltas) and reading the chain back, from the broker and from the
    base's local copy; each figure once per round (seconds), the rounds alternating the order."""

    base_bytes: int
    write_s: tuple[float, ...]  # save_link of the base, no local copy
    write_local_s: tuple[float, ...]  # the same with a local copy written beside its delivery
    keep_s: tuple[float, ...]  # then until the copy is fsynced and renamed (background: batches go on)
    topic_s: tuple[float, ...]  # load_all reading the chain from the broker
    local_s: tuple[float, ...]  # load_all with the copy in the page cache (just written)
    local_cold_s: tuple[float, ...]  # load_all with the copy's pages evicted first
    broker_bytes_local: int  # what the local path still read from the broker
    unpickle_s: float  # restoring the join from the blob (the same on both paths)


def _median(values: tuple[float, ...]) -> float:
    return sorted(values)[len(values) // 2]


async def _local_restore(settings: Any, state_dir: Any, blob: bytes, deltas: list[bytes],
                         rounds: int) -> dict[str, Any]:
    import os

    from aiokafka import AIOKafkaProducer

    from driftline.kafka.clients import aiokafka_producer_kwargs
    from driftline.streams.checkpoint import CheckpointStore

    local_settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"state_dir": state_dir})})
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    names = ("write_s", "write_local_s", "keep_s", "topic_s", "local_s", "local_cold_s")
    figures: dict[str, Any] = {name: [] for name in names}
    shard = copied = 0
    try:
        for round_ in range(rounds):
            writes = [("write_s", settings), ("write_local_s", local_settings)]
            for name, where in writes[::-1] if round_ % 2 else writes:
                gc.collect()
                writer = CheckpointStore(where, producer)
                await writer.start()
                started = time.perf_counter()
                link = await writer.save_link("bench", shard, blob, {("preds", shard): 1}, base=True,
                                              parent=None)
                figures[name].append(time.perf_counter() - started)
                if where is local_settings:
                    await writer.local_copies_kept()
                    figures["keep_s"].append(time.perf_counter() - started - figures[name][-1])
                    copied = shard
                for i, delta in enumerate(deltas):
                    link = await writer.save_link("bench", shard, delta, {("preds", shard): 2 + i},
                                                  base=False, parent=link)
                await writer.stop()
                shard += 1
        copy = state_dir / f"{settings.topics.state}.bench-{copied}.base"
        reads = [("topic_s", settings), ("local_s", local_settings), ("local_cold_s", local_settings)]
        for round_ in range(rounds):
            for name, where in reads[round_ % 3:] + reads[:round_ % 3]:
                if name == "local_cold_s":  # evict the copy's pages: read from the disk, not the page cache
                    fd = os.open(copy, os.O_RDONLY)
                    os.fsync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    os.close(fd)
                reader = CheckpointStore(where, producer)
                await reader.start()
                gc.collect()
                started = time.perf_counter()
                chain = (await reader.load_all("bench", [copied]))[copied]
                figures[name].append(time.perf_counter() - started)
                await reader.stop()
                assert _blob_bytes(chain.blob) == blob and list(chain.deltas) == deltas
                assert (chain.local_bytes > 0) == (where is local_settings)
                if name == "local_s":
                    figures["broker_bytes_local"] = chain.broker_bytes
                del chain
        return {name: tuple(value) if isinstance(value, list) else value for name, value in figures.items()}
    finally:
        await producer.stop()


def measure_local_restore(pending: int, deltas: int = 3, rounds: int = 3) -> LocalRestore:
    """A base of ``pending`` predictions (25 floats, all in memory) and ``deltas`` deltas of 8 MB (a
    delta at 5,000 predictions/s) written through the checkpoint store on a fresh embedded broker,
    then read back by ``load_all`` as a restarted worker's runner does: from the topic, and with the
    base's local copy (``worker.state_dir``; warm, then with its pages evicted), ``rounds`` times."""
    import asyncio
    import os
    import tempfile
    from pathlib import Path

    from driftline.config import Settings
    from driftline.kafka.admin import ensure_topics
    from driftline.local.broker import running_broker

    join = LabelJoin(horizon_ms=10 * pending * 1000, max_pending=pending + 1, max_held=1000)
    for event in events(pending, floats, step_ms=1):
        join.on_prediction(event, segment="region=eu", digest=payload_digest(event.prediction_id.encode()))
    blob = dump_state(join)
    del join
    gc.collect()
    release_free_memory()
    started = time.perf_counter()
    restored = load_state(blob, LabelJoin, "bench")
    unpickle_s = time.perf_counter() - started
    del restored
    gc.collect()
    release_free_memory()
    links = [os.urandom(8 * 10**6) for _ in range(deltas)]
    with tempfile.TemporaryDirectory(prefix="driftline-local-") as tmp, running_broker() as broker:
        settings = Settings(home=Path(tmp), kafka={"bootstrap_servers": broker.bootstrap_servers})
        ensure_topics(settings)
        figures = asyncio.run(_local_restore(settings, Path(tmp) / "state", blob, links, rounds))
    return LocalRestore(len(blob), unpickle_s=unpickle_s, **figures)


def print_local_restore(pending: int, run: LocalRestore) -> None:
    mb = run.base_bytes / 1e6

    def spread(values: tuple[float, ...]) -> str:
        return f"{_median(values):.1f} s ({min(values):.1f}-{max(values):.1f})"

    print(f"{pending:,} pending, base {mb:.0f} MB + 3 deltas of 8 MB, medians of {len(run.write_s)} rounds "
          f"(min-max):")
    print(f"  base written in {spread(run.write_s)}, with its local copy {spread(run.write_local_s)} "
          f"(then {spread(run.keep_s)} to fsync and rename it, batches going on)")
    topic, local, cold = _median(run.topic_s), _median(run.local_s), _median(run.local_cold_s)
    print(f"  chain read back from the broker in {spread(run.topic_s)}, {mb / topic:.0f} MB/s of base; "
          f"with the local copy {spread(run.local_s)}, {mb / local:.0f} MB/s "
          f"({run.broker_bytes_local / 1e6:.0f} MB from the broker); its pages evicted "
          f"{spread(run.local_cold_s)}, {mb / cold:.0f} MB/s: {topic / local:.1f}x / {topic / cold:.1f}x "
          f"faster; unpickling the base {run.unpickle_s:.1f} s on either path")
    scale = 10_000_000 / pending
    print(f"  extrapolated linearly to 10,000,000 pending (not measured): base {mb * scale / 1e3:.1f} GB, "
          f"read from the broker {topic * scale:.0f} s, from the local copy {local * scale:.0f} s "
          f"(evicted {cold * scale:.0f} s), unpickling {run.unpickle_s * scale:.0f} s")


def _record_count(records: bytes) -> int:
    """Records in a delta's concatenated records (each starts with its length)."""
    count = pos = 0
    while pos < len(records):
        pos += int.from_bytes(records[pos : pos + 4], "little")
        count += 1
    return count


def measure_spill_pair(pending: int, budget_mb: int, **kwargs: Any) -> tuple[SpillRun, SpillRun]:
    """In memory and under the budget, each in a fresh process (RSS of its own; spawned, not
    forked: the caller may run threads, e.g. a broker client in run_all)."""
    context = multiprocessing.get_context("spawn")
    runs = []
    for budget in (0, budget_mb):
        with context.Pool(1) as pool:
            runs.append(pool.apply(measure_spill, (pending, budget), kwargs))
    return runs[0], runs[1]


@dataclass
class EventCost:
    """CPU time per prediction + label of steady traffic, all in memory and under a budget."""

    pending: int
    budget_mb: int
    memory_us: float
    budget_us: float

    @property
    def pct(self) -> float:
        return (self.budget_us / self.memory_us - 1) * 100


def measure_event_cost(pending: int, budget_mb: int, rate: float = 5_000, steady: int = 100_000,
                       chunk: int = 1_000) -> EventCost:
    """The per-event cost of a budget, both joins in one process, taking turns every ``chunk``
    events: CPU time (spilling's writes and reads included: page-cache system calls), so a
    machine whose load moves between two runs (two processes' figures moved by 15-30 % here)
    moves both alike. Each join gets ``pending`` predictions, then ``steady`` predictions each with
    the label of the oldest pending one (spilled, past the budget), as :func:`measure_spill`."""
    step_ms = max(1, round(1000 / rate))
    total = pending + steady
    joins = [LabelJoin(horizon_ms=10 * total * step_ms, max_pending=total + 1, max_held=1000)
             for _ in range(2)]
    joins[1].set_memory_budget(budget_mb * 2**20)
    stream = events(total, floats, step_ms=step_ms)
    order: list[str] = []
    for event in (next(stream) for _ in range(pending)):
        digest = payload_digest(event.prediction_id.encode())
        for join in joins:
            join.on_prediction(event, segment="region=eu", digest=digest)
        order.append(event.prediction_id)
    cpu = [0.0, 0.0]
    for done in range(0, steady, chunk):
        batch = [next(stream) for _ in range(min(chunk, steady - done))]
        payloads = [event.model_dump_json().encode() for event in batch]
        labels = [LabelEvent(prediction_id=order[done + i], label="ok", timestamp=event.timestamp)
                  for i, event in enumerate(batch)]
        label_payloads = [label.model_dump_json().encode() for label in labels]
        order += [event.prediction_id for event in batch]
        for i, join in enumerate(joins):
            started = time.process_time()
            for event, payload, label, label_payload in zip(batch, payloads, labels, label_payloads,
                                                            strict=True):
                join.on_prediction(event, segment="region=eu", digest=payload_digest(payload))
                join.on_label(label, digest=payload_digest(label_payload))
            cpu[i] += time.process_time() - started
    return EventCost(pending, budget_mb, cpu[0] / steady * 1e6, cpu[1] / steady * 1e6)


def measure_event_cost_spawned(pending: int, budget_mb: int, **kwargs: Any) -> EventCost:
    """:func:`measure_event_cost` in a fresh process (spawned: see :func:`measure_spill_pair`)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        cost: EventCost = pool.apply(measure_event_cost, (pending, budget_mb), kwargs)
    return cost


def print_spill(memory: SpillRun | None, spill: SpillRun, cost: EventCost | None = None) -> None:
    scale = 10_000_000 / spill.pending
    print(f"pending={spill.pending:,} (25 floats, UUID ids), budget {spill.budget_mb} MB vs all in memory; "
          f"input {spill.input_bytes_per_s / 1e6:.2f} MB/s")
    for run in (spill,) if memory is None else (memory, spill):
        print(f"  budget {run.budget_mb:>5} MB: build {run.build_s:.0f} s, join RSS {run.rss_mb:.0f} MB "
              f"(table {run.table_mb:.0f} MB) "
              f"(peak {run.peak_rss_mb:.0f}), spilled {run.spilled:,} ({run.store_mb:.0f} MB on disk), "
              f"{run.event_cpu_us:.1f} us CPU ({run.event_us:.1f} wall) per prediction+label, "
              f"base {run.base_bytes / 1e6:.0f} MB "
              f"in {run.base_write_s:.1f} s, delta {run.delta_bytes / 1e6:.2f} MB, "
              f"restore {run.restore_s:.1f} s (base + {run.restore_deltas} deltas)")
        print(f"    join RSS built {run.rss_built_mb:.0f} MB, after the steady traffic {run.rss_mb:.0f} MB "
              f"({run.rss_trimmed_mb:.0f} after malloc_trim, as the runner trims after a base); "
              f"process peak while the base was pickled {run.base_peak_rss_mb:.0f} MB; while base and "
              f"deltas were restored {run.restore_peak_rss_mb:.0f} MB "
              f"(+{run.restore_peak_rss_mb - run.rss_before_restore_mb:.0f} over the process before)")
        print("    table per pending prediction: "
              + ", ".join(f"{name} {size:.1f} B" for name, size in run.table_parts.items())
              + f"; total {sum(run.table_parts.values()):.1f} B")
        per_change_us = run.delta_apply_s / run.delta_changes * 1e6
        print(f"    restore: base {run.base_load_s:.2f} s, a delta of {run.delta_changes:,.0f} changed "
              f"records {run.delta_apply_s:.3f} s ({per_change_us:.1f} us each), "
              f"worst case {run.restore_s:.1f} s wall, {run.restore_cpu_s:.1f} s CPU")
    share = spill.checkpoint_bytes_per_s / spill.input_bytes_per_s
    # RSS at 10M: the table (records kept whole up to the budget, the rest's ids, times and
    # references) grows linearly; what the process holds besides does not (conservative: the part
    # under the budget does not grow either).
    rss_10m = spill.rss_trimmed_mb + spill.table_mb * (scale - 1)
    rows: tuple[tuple[str, float, float, str], ...] = (
        ("join RSS at 10M, trimmed (the table linear from here)", rss_10m, 2048, "MB"),
        ("checkpoint bytes/s over input", share, 2.0, "x"),
        ("restore at 10M, --ratio bound alone (linear from here)", spill.restore_s * scale, 60.0, "s"))
    if memory is not None:
        apart = spill.event_cpu_us / memory.event_cpu_us * 100 - 100
        print(f"  per event, CPU, one run each: {apart:+.0f} % "
              f"(the two processes ran minutes apart; the row below takes turns in one)")
    if cost is not None:
        print(f"  per event, CPU, taking turns in one process: {cost.memory_us:.1f} us in memory, "
              f"{cost.budget_us:.1f} us under {cost.budget_mb} MB")
        rows += (("per-event CPU cost over in-memory", cost.pct, 25.0, "%"),)
    for name, value, target, unit in rows:
        verdict = "met" if value <= target else f"MISSED by {value - target:.1f} {unit}"
        print(f"  {name}: {value:.1f} {unit} (target <= {target:g} {unit}): {verdict}")
    print_bounded(spill)


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
    parser.add_argument("--pending", type=int, default=0, metavar="N",
                        help="measure N pending under --budget-mb against all in memory instead")
    parser.add_argument("--budget-mb", type=int, default=64, help="join.memory_budget_mb for --pending")
    parser.add_argument("--base-write", type=int, default=0, metavar="N",
                        help="time writing a base of N pending, all in memory and under --budget-mb")
    parser.add_argument("--base-hold", type=int, default=0, metavar="N",
                        help="how long a base holds batches at N pending: pickled under the lock vs copied")
    parser.add_argument("--flush-hold", type=int, default=0, metavar="MB",
                        help="how long a producer flush holds batches while a base of MB is in flight")
    parser.add_argument("--chain-read", type=int, default=0, metavar="MB",
                        help="write and read back a base of MB megabytes on an embedded broker")
    parser.add_argument("--local-restore", type=int, default=0, metavar="N",
                        help="restore a base of N pending from an embedded broker and from its local copy")
    parser.add_argument("--base-restore", type=int, default=0, metavar="N",
                        help="peak RSS restoring a base of N pending: in memory, then from a file under "
                        "the budget")
    parser.add_argument("--budget-only", action="store_true",
                        help="--pending: skip the in-memory run (no per-event comparison)")
    args = parser.parse_args()
    if args.local_restore:
        print_local_restore(args.local_restore, measure_local_restore(args.local_restore))
        return
    if args.flush_hold:
        print_flush_hold(measure_flush_hold(args.flush_hold))
        return
    if args.chain_read:
        write_s, read_s = measure_chain_read(args.chain_read)
        print(f"a {args.chain_read} MB base on the embedded broker: written in {write_s:.1f} s "
              f"({args.chain_read / write_s:.0f} MB/s), read back in {read_s:.1f} s "
              f"({args.chain_read / read_s:.0f} MB/s)")
        return
    if args.base_hold:
        for budget in (0, args.budget_mb):
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                run = pool.apply(measure_base_hold, (args.base_hold, budget))
            print_base_hold(args.base_hold, budget, run)
        return
    if args.base_restore:
        for streamed in (False, True):
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                peak = pool.apply(measure_restore_peak, (args.base_restore, args.budget_mb, streamed))
            print_restore_peak(peak)
        return
    if args.base_write:
        for budget in (0, args.budget_mb):
            print_base_write(args.base_write, budget, measure_base_write_spawned(args.base_write, budget))
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            restore = pool.apply(measure_base_restore, (args.base_write, args.budget_mb))
        blob_mb, peak, after, trimmed = restore
        print(f"restoring it (budget {args.budget_mb} MB): RSS {blob_mb:.0f} MB with the base read, peak "
              f"{peak:.0f}, after {after:.0f} (the blob let go), after malloc_trim {trimmed:.0f}")
        return
    if args.pending:
        options = {"rate": args.rate, "interval_s": args.interval, "ratio": args.ratio}
        if args.budget_only:
            print_spill(None, measure_spill(args.pending, args.budget_mb, **options))
        else:
            memory, spill = measure_spill_pair(args.pending, args.budget_mb, **options)
            cost = measure_event_cost_spawned(args.pending, args.budget_mb, rate=args.rate)
            print_spill(memory, spill, cost)
        return
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
