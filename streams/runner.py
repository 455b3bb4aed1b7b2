"""StageRunner: feeds a stage's processors from Kafka in batches and checkpoints them.

One processor per *shard* = partition number p of every (co-partitioned) input topic. The
consumer group uses the range assignor, which gives partition p of each input topic to the same
member. Offsets are never committed to Kafka: the checkpoint (snapshot + the input offsets it
reflects, written only after every output so far was acknowledged) is the source of truth, so
the group id only spreads shards over members.

Loop: ``getmany`` -> records grouped by shard -> ``processor.process`` -> produce the outputs
and await their acknowledgements -> advance the shard's offsets. Every
``worker.checkpoint_interval_s``, on revocation and on stop: save every changed shard (no producer
flush first: every output was acknowledged already, and a flush would wait for another shard's
base in flight, ``docs/state.md``). A producer outage blocks the loop inside ``deliver`` with
fetching paused; its waits between retries are ``getmany`` calls on the paused partitions
(:func:`~driftline.streams.group_wait.wait_in_group`), so the runner stays in its group however
long the outage lasts.

Checkpoints form chains (``driftline.streams.checkpoint``, ``docs/state.md``). A processor that
can report its changes (``driftline.pipeline.state.Incremental``: both stages) writes a base
snapshot, then deltas, then a new base once restoring the chain would take longer than
``worker.restore_target_s`` (:class:`RestoreCosts`: the base's bytes and the deltas' changed
records at the costs this process measured), ``worker.checkpoint_deltas_per_base`` deltas followed
it, or their bytes passed ``worker.checkpoint_delta_ratio`` times its size; any other writes a
base every time. A base is taken from a copy of the shard (``base_copy``, under the lock: a
list copy of stage 1's join groups, of stage 2's outcome buckets) and pickled and written while
batches go on; no other link of that shard is written until the broker acknowledged it, and
revocation and stop wait for it. At most one such base is in flight per runner: a shard due for
one meanwhile writes a delta and waits for its turn (``_base_turn``; a shard's first base never
waits). Restoring reads the last base and its deltas; how long that took and how many
bytes it read are the shard's ``restore_*`` gauges, the estimate for the chain as it stands
``restore_estimate_seconds``. The shards of an assignment are rebuilt one after the other, the
smallest chain first; each takes batches as soon as it is rebuilt, while the others are rebuilt
in the background with their partitions paused (``on_assigned``).

Why batch consumers instead of Faust agents: a trivial Faust agent processes ~5k events/s on the
embedded broker, aiokafka ``getmany`` reads ~118k msg/s; the processors are written for batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast, overload

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest

from driftline.config import Settings
from driftline.kafka.admin import CopartitioningError, partition_counts
from driftline.kafka.clients import aiokafka_consumer
from driftline.kafka.offsets import unread_after_fed
from driftline.kafka.records import as_raw
from driftline.operators.validate import RawRecord
from driftline.pipeline.reroute import NO_TIME
from driftline.pipeline.stage import (
    FollowsIdle,
    OutboundMessage,
    StageFactory,
    StageProcessor,
    WaitsForInputs,
)
from driftline.pipeline.state import BaseCopy, BlobFile, Incremental, delta_records, release_free_memory
from driftline.streams.broadcast import BroadcastReader
from driftline.streams.checkpoint import FULL, Checkpoint, CheckpointStore, delta_heads
from driftline.streams.delivery import deliver
from driftline.streams.group_wait import wait_in_group

log = logging.getLogger(__name__)


@dataclass
class ShardState:
    processor: StageProcessor
    offsets: dict[TopicPartition, int]  # next offset to feed, per input partition
    checkpoint_id: str | None  # the checkpoint this state equals, while not dirty
    dirty: bool = False
    checkpointed_at: float = field(default_factory=time.time)
    chain: ChainLength | None = None  # incremental processors: the chain checkpoint_id ends
    restore_figures: dict[str, float] = field(default_factory=dict)  # for /metrics
    base_in_flight: asyncio.Task[None] | None = None  # a base written beside batches, not acknowledged yet
    base_waiting_since: float | None = None  # due for a base since (time.monotonic), waiting for its turn
    base_waited_deltas: int = 0  # deltas written instead of that base (its chain grew meanwhile)
    checkpointed_offsets: dict[TopicPartition, int] = field(default_factory=dict)  # where a restart resumes
    # per input partition, when it last had a record, or was found read to its end (time.monotonic)
    heard_at: dict[TopicPartition, float] = field(default_factory=dict)
    # The furthest predictions mark the shard knew of when a silence began, and when (time.monotonic):
    # where its watermark moves on from with wall time (StageRunner._follow_silence)
    silence: tuple[int, float] | None = None


_T = TypeVar("_T")
_Wait = Callable[[float], Awaitable[None]]  # a write's wait between its attempts

STOP_GRACE_S = 5.0
"""How long a write (a batch's outputs, a delta or a full snapshot; not a base) may take once stop()
came before it is given up (:meth:`StageRunner._unless_stopped`): a healthy broker acknowledges
one well within it, while an attempt in an outage lasts the producer's ``request_timeout_ms``
(40 s, above the worker's 30 s stop timeout)."""
IDLE_CHECK_S = 1.0
"""How often the loop looks for idle input partitions (``worker.idle_partition_s``)."""
BYTES_PER_CHANGE = 132
"""A delta's bytes per changed record at steady traffic (a new 25-feature record ~220 bytes, a
joined one ~50), pickled: how many changes a restored chain's deltas carry, for
:meth:`RestoreCosts.measured`, where a delta does not say (one written before delta format 4)."""


def chain_records(deltas: Sequence[bytes]) -> int:
    """The records a restore applied from ``deltas``: as each delta's header counts them (delta
    format 4 on, whatever its codec), else guessed from its bytes (:data:`BYTES_PER_CHANGE`: an
    older delta's, which LZ4 made ~5-30 % smaller than that guess assumed).

    >>> from driftline.pipeline.state import dump_delta
    >>> chain_records([dump_delta(["a"], records=1_000), b"DLSD\x03z" + bytes(1_318)])
    1010
    """
    return sum(size // BYTES_PER_CHANGE if (n := delta_records(head)) is None else n
               for head, size in delta_heads(deltas))  # a spooled delta is not read for it


BASE_TIME_SHARE = 0.1
"""The restore bound starts a base only once ``base hold time / BASE_TIME_SHARE`` passed since the
last one, the hold being how long batches were kept out for it (copying the shard; before the
base, or a processor without ``base_copy``, the whole write): this bounds the share of time bases
stall the worker, at the price of a restore estimate over the target (reported)."""
MIN_MEASURED_BASE_BYTES = 32 * 2**20
"""The bases this process restored must hold this many bytes (summed over its restores) before
their CPU time sets the cost per MB of a base: in a smaller sample fixed costs (the settings, the
shared profiles) weigh in, and one small shard's base could price a 600 MB one."""
MIN_MEASURED_CHANGES = 20_000
"""Likewise the changed records its restores applied before their CPU time sets the cost of one."""
MIN_READ_BYTES = 64 * 2**20
"""A read of fewer bytes (broker or local copy) is mostly latency: it does not recalibrate a speed."""
READ_TIMING_EVERY_S = 600.0
"""A runner times the broker's read of a chain's deltas (:meth:`StageRunner._time_read`) at most
this often, whichever shard's: the speed is the broker's, not a shard's, and each timing reads
64 MiB back (every chain of 4 shards at 10M would be ~1 MB/s of reads beside ~2 MB/s of deltas)."""
TRIM_AFTER_DELTA_BYTES = 8 * 2**20
"""A delta this large (the one after a base: every record added while the base was written, whole,
with their tracked keys and the delta's pickle) leaves that much freed in glibc's heap, which the
RSS keeps until the next base's trim unless the heap is trimmed after it too (issue 19: a live
worker's heap grew by ~200 MB over its in-use bytes at 1-1.5M pending; docs/state.md)."""
RATIO_FLOOR_BYTES = MIN_READ_BYTES
"""``worker.checkpoint_delta_ratio`` starts a base only once the chain (base + deltas) holds more:
a smaller chain is read in about a second, and the restore bound still prices it. Without the
floor a state that grows from empty (a worker catching up, the bench's burst) or whose deltas
carry its windows and detectors whole (~2 MB a shard with a training profile, more than a
1 MB base of few pending predictions) wrote a base at every other checkpoint: in bench row (1)
bases took ~30 % of the worker's CPU and held batches while copied."""


@dataclass(frozen=True, slots=True)
class RestoreCosts:
    """What restoring a stage-1 chain costs this process: a base per MB unpickled, a delta per
    changed record applied (a lookup and a splice each), both in CPU time, the MB per second
    reading the chain from the broker, and the MB per second reading a base from its local copy
    (``worker.state_dir``: the CRC check included). The defaults are conservative figures from a
    loaded 2-core machine (docs/state.md), for a first start; the restores this process ran set
    the CPU costs (:class:`RestoreSample`: a base's and its deltas' CPU time apart), and the
    broker's read speed is also set by reading a chain's deltas back once they hold
    :data:`MIN_READ_BYTES` (``StageRunner._time_read``: a worker that never restored knows it too).

    >>> costs = RestoreCosts()  # 1M pending: a 270 MB base and 300,000 changed records (6 deltas)
    >>> round(costs.seconds(base_bytes=270_000_000, delta_bytes=40_000_000, changed=300_000), 1)
    20.1
    >>> round(costs.seconds(270_000_000, 40_000_000, 300_000, local_base=True), 1)  # the base on disk
    7.5
    >>> measured = costs.measured(RestoreSample(270_000_000, 5.4, 300_000, 3.0))  # 20 ms a MB, 10 us
    >>> round(measured.base_s_per_mb * 1e3, 2), round(measured.change_s * 1e6, 2)
    (20.0, 10.0)
    >>> costs.measured(RestoreSample(1_000_000, 0.2, 100, 0.1)) == costs  # too small to tell
    True
    >>> costs.read(bytes_read=500_000_000, seconds=2.0).read_mb_per_s
    250.0
    >>> costs.local_read(bytes_read=810_000_000, seconds=0.9).local_read_mb_per_s
    900.0
    """

    base_s_per_mb: float = 0.008
    change_s: float = 8e-6  # the bulk apply (51b0055): 6.3 us measured at load 11, 7.7 before it
    read_mb_per_s: float = 20.0
    local_read_mb_per_s: float = 300.0

    def cpu_seconds(self, base_bytes: int, changed: int) -> float:
        return base_bytes / 1e6 * self.base_s_per_mb + changed * self.change_s

    def base_read_mb_per_s(self, local_base: bool) -> float:
        return self.local_read_mb_per_s if local_base else self.read_mb_per_s

    def seconds(self, base_bytes: int, delta_bytes: int, changed: int, local_base: bool = False) -> float:
        """A restore of a base of ``base_bytes``, deltas of ``delta_bytes`` carrying ``changed``
        records; the base read from its local copy if ``local_base`` (the deltas from the broker)."""
        return (self.cpu_seconds(base_bytes, changed) + base_bytes / 1e6 / self.base_read_mb_per_s(local_base)
                + delta_bytes / 1e6 / self.read_mb_per_s)

    def measured(self, sample: RestoreSample) -> RestoreCosts:
        """These costs with the CPU costs of ``sample``'s restores where it holds enough of each."""
        costs = self
        if sample.base_measured:
            costs = dataclasses.replace(costs, base_s_per_mb=sample.base_cpu_s / (sample.base_bytes / 1e6))
        if sample.delta_measured:
            costs = dataclasses.replace(costs, change_s=sample.delta_cpu_s / sample.changed)
        return costs

    def read(self, bytes_read: int, seconds: float) -> RestoreCosts:
        """These costs with the broker read speed of a load of chains (a large enough one)."""
        if bytes_read < MIN_READ_BYTES or seconds <= 0:
            return self
        return dataclasses.replace(self, read_mb_per_s=bytes_read / 1e6 / seconds)

    def local_read(self, bytes_read: int, seconds: float) -> RestoreCosts:
        """These costs with the read speed of the local copies of bases a load read (enough bytes)."""
        if bytes_read < MIN_READ_BYTES or seconds <= 0:
            return self
        return dataclasses.replace(self, local_read_mb_per_s=bytes_read / 1e6 / seconds)


@dataclass(frozen=True, slots=True)
class RestoreSample:
    """What this process's restores of stage-1 chains took, summed: the bases' bytes and the CPU
    time unpickling them (the restoring thread's, up to the first delta asked for), the changed
    records the deltas carried and the CPU time loading and applying them. It prices a restore
    (:meth:`RestoreCosts.measured`) once it holds :data:`MIN_MEASURED_BASE_BYTES` of bases or
    :data:`MIN_MEASURED_CHANGES` records, each part apart: at 10M pending a restore cost ~16-22
    ms a MB with its deltas, ~2-3x the 8 ms default (docs/state.md).

    >>> sample = RestoreSample().plus(40 * 2**20, 0.9, 5_000, 0.04).plus(40 * 2**20, 0.8, 5_000, 0.05)
    >>> sample.base_measured, sample.delta_measured, round(sample.base_cpu_s, 2)
    (True, False, 1.7)
    """

    base_bytes: int = 0
    base_cpu_s: float = 0.0
    changed: int = 0
    delta_cpu_s: float = 0.0

    @property
    def base_measured(self) -> bool:
        return self.base_bytes >= MIN_MEASURED_BASE_BYTES and self.base_cpu_s > 0

    @property
    def delta_measured(self) -> bool:
        return self.changed >= MIN_MEASURED_CHANGES and self.delta_cpu_s > 0

    def plus(self, base_bytes: int, base_cpu_s: float, changed: int, delta_cpu_s: float) -> RestoreSample:
        return RestoreSample(self.base_bytes + base_bytes, self.base_cpu_s + base_cpu_s,
                             self.changed + changed, self.delta_cpu_s + delta_cpu_s)


class TimedDeltas(Sequence[bytes]):
    """A chain's deltas as handed to a processor's restore, noting the restoring thread's CPU time
    when they are first iterated: what came before is the base's unpickling, what comes after the
    deltas' (a restore applies its deltas in order after loading its base). ``cpu_at`` stays None
    if the restore never iterates them (no deltas asked for: all of it is the base's).

    >>> deltas = TimedDeltas([b"a", b"b"])
    >>> deltas.cpu_at is None, list(deltas), deltas.cpu_at is not None, len(deltas), deltas[1]
    (True, [b'a', b'b'], True, 2, b'b')
    """

    def __init__(self, deltas: Sequence[bytes]) -> None:
        self._deltas = deltas
        self.cpu_at: float | None = None

    def __iter__(self) -> Iterator[bytes]:
        if self.cpu_at is None:
            self.cpu_at = time.thread_time()
        return iter(self._deltas)

    def __len__(self) -> int:
        return len(self._deltas)

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        return self._deltas[index]


@dataclass
class ChainLength:
    """What a shard's checkpoint chain holds: when to start a new base, what a restore reads."""

    base_bytes: int
    deltas: int = 0
    delta_bytes: int = 0
    changed: int = 0  # records the deltas carry: a restore applies each
    base_hold_s: float = 0.0  # wall time the base held batches (0: another process wrote it)
    started: float = field(default_factory=time.monotonic)
    base_id: str | None = None  # the base's checkpoint id
    local_base: bool = False  # a restore here reads the base from its local copy (worker.state_dir)
    read_timed: bool = False  # its deltas were read back to time the broker (StageRunner._time_read)

    def restore_seconds(self, costs: RestoreCosts, next_changed: int = 0) -> float:
        """The estimated restore of this chain (and a next delta of ``next_changed`` records)."""
        return costs.seconds(self.base_bytes, self.delta_bytes, self.changed + next_changed, self.local_base)

    def base_due(self, deltas_per_base: int, delta_ratio: float, restore_target_s: float = 0.0,
                 costs: RestoreCosts = RestoreCosts(), next_changed: int = 0,
                 elapsed_s: float = float("inf")) -> bool:
        """Whether the next checkpoint (a delta of ``next_changed`` records, ``elapsed_s`` after
        the base) should be a new base: the deltas would pass ``restore_target_s`` of estimated
        restore, ``deltas_per_base`` or ``delta_ratio`` x the base's bytes (in a chain of more
        than ``RATIO_FLOOR_BYTES``). The restore bound
        waits for ``base_hold_s / BASE_TIME_SHARE`` after the base, and needs deltas to cut: a
        base whose own restore passes the target is not rewritten (the estimate says so).

        >>> MB = 2**20
        >>> chain = ChainLength(base_bytes=100 * MB, deltas=3, delta_bytes=90 * MB)
        >>> chain.base_due(720, 1.0), chain.base_due(3, 1.0), chain.base_due(720, 0.5), chain.base_due(0, 1.0)
        (False, True, True, True)
        >>> small = ChainLength(base_bytes=MB, deltas=3, delta_bytes=6 * MB)  # under RATIO_FLOOR_BYTES
        >>> small.base_due(720, 1.0), small.base_due(3, 1.0)
        (False, True)
        >>> kafka = RestoreCosts(base_s_per_mb=0.0015, change_s=8e-6, read_mb_per_s=100.0)  # as measured
        >>> big = ChainLength(base_bytes=2_200_000_000, deltas=19, delta_bytes=140_000_000,
        ...                   changed=950_000, base_hold_s=100.0)
        >>> [big.base_due(720, 1.0, 60.0, kafka, next_changed=n) for n in (50_000, 4_000_000)]
        [False, True]
        >>> big.base_due(720, 1.0, 60.0, kafka, 4_000_000, elapsed_s=900.0)  # bases would stall > 10 %
        False
        >>> big.local_base = True  # the base is read from its local copy at 300 MB/s, not 100
        >>> big.base_due(720, 1.0, 60.0, kafka, next_changed=4_000_000)
        False
        """
        if self.deltas >= deltas_per_base:
            return True
        if (self.delta_bytes > delta_ratio * self.base_bytes
                and self.base_bytes + self.delta_bytes > RATIO_FLOOR_BYTES):
            return True
        if not restore_target_s or self.deltas == 0:
            return False
        if costs.seconds(self.base_bytes, 0, 0, self.local_base) >= restore_target_s:
            return False
        return (self.restore_seconds(costs, next_changed) > restore_target_s
                and elapsed_s * BASE_TIME_SHARE >= self.base_hold_s)


@dataclass
class RunnerStats:
    """Counters for /metrics (read at scrape time; plain numbers, no locking needed)."""

    records_in: Counter[str] = field(default_factory=Counter)  # per input topic
    broadcast_in: int = 0
    messages_out: Counter[str] = field(default_factory=Counter)  # per output topic
    batches: int = 0
    checkpoints: int = 0
    checkpoint_bytes: Counter[str] = field(default_factory=Counter)  # acknowledged, per kind: base, delta
    produce_retries: int = 0
    rebalances: int = 0
    restored_shards: int = 0
    created_shards: int = 0
    blocked: bool = False
    idle_partitions: int = 0  # predictions and labels partitions whose watermarks follow the others
    inputs_waiting: int = 0  # input partitions paused because their processor asked (_hold_back)
    input_waits: int = 0  # times one was paused so
    started_at: float = field(default_factory=time.time)


class StageRunnerError(RuntimeError):
    pass


class _Stopped(Exception):
    """stop() came while the broker refused a write: given up (:meth:`StageRunner._give_up_if_stopping`)."""


class StageRunner:
    """Runs one stage (a group of shard processors) until ``stop()``."""

    def __init__(self, settings: Settings, stage_name: str, group_id: str, input_topics: Sequence[str],
                 factory: StageFactory, broadcast_topics: Sequence[str] = (), *,
                 producer: AIOKafkaProducer, checkpoints: CheckpointStore,
                 poll_timeout_ms: int = 200) -> None:
        if not input_topics:
            raise ValueError("a stage needs at least one input topic")
        self.settings = settings
        self.stage = stage_name
        self.group_id = group_id
        self.input_topics = list(input_topics)
        self.broadcast_topics = list(broadcast_topics)
        self.factory = factory
        self.producer = producer
        self.checkpoints = checkpoints
        self.poll_timeout_ms = poll_timeout_ms
        self.stats = RunnerStats()
        self.shards: dict[int, ShardState] = {}
        self._parked: dict[int, ShardState] = {}  # revoked, checkpointed; reused if handed back unchanged
        # Assigned shards whose chains are still being rebuilt (their partitions paused), and the
        # task rebuilding them while the shards already restored take batches (on_assigned).
        self._restoring: set[int] = set()
        self._restore_task: asyncio.Task[None] | None = None
        self._broadcast = BroadcastReader(settings, broadcast_topics,
                                          max_records=settings.worker.batch_max_records)
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()  # one of: a batch, a rebalance callback, a checkpoint
        self._stopping = asyncio.Event()
        self._stopped_at = math.inf  # when stop() came (time.monotonic)
        self._gave_up = asyncio.Event()  # a write was given up on stop(): no link may be written after it
        self._listener_error: BaseException | None = None
        self._base_error: BaseException | None = None  # a base written beside batches failed
        self._last_checkpoint = time.monotonic()
        self._read_seconds = 0.0  # how long the last load of checkpoints took (restores report it)
        # the defaults (the factory's price of a changed record, if it has one) until this runner's
        # restores and reads say
        change_s = getattr(factory, "restore_change_s", None)
        self.restore_costs = RestoreCosts() if change_s is None else RestoreCosts(change_s=change_s)
        self.restore_sample = RestoreSample()  # every restore this runner ran: its CPU costs
        self._read_timing: asyncio.Task[None] | None = None  # a chain's deltas read back (_time_read)
        self._read_timed_at = -float("inf")  # when the last one started (time.monotonic)
        self._idle_checked_at = time.monotonic()
        # Input partitions paused because their shard's processor asked (inputs_to_hold: labels
        # ahead of a predictions backlog), resumed once it no longer does.
        self._held_back: set[TopicPartition] = set()
        self.running = False

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to finish: it checkpoints every shard and returns. During a produce outage
        it gives the blocked write up instead and checkpoints nothing (:meth:`_give_up_if_stopping`)."""
        if not self._stopping.is_set():
            self._stopped_at = time.monotonic()
        self._stopping.set()
        if self._read_timing is not None:
            self._read_timing.cancel()  # only a measurement

    async def run(self) -> None:
        counts = await asyncio.to_thread(partition_counts, self.settings,
                                         [*self.input_topics, *self.broadcast_topics])
        self._check_topics(counts)
        consumer = aiokafka_consumer(self.settings, self.group_id, raw_records=True,
                                     partition_assignment_strategy=(RangePartitionAssignor,))
        await consumer.start()
        self._consumer = consumer
        try:
            await self._broadcast.start(counts)
            self.stats.broadcast_in = self._broadcast.records_in
            consumer.subscribe(self.input_topics, listener=_Rebalance(self))
            self.running = True
            with contextlib.suppress(_Stopped):
                while not self._stopping.is_set():
                    await self._step(consumer)
                await self._restored()  # the shards still rebuilding, then every shard is checkpointed
                async with self._lock:
                    await self._checkpoint(list(self.shards), beside_batches=False)
            if self._given_up:
                await self._bases_ended()
                log.warning("stage %s: stopped while the broker refused writes; nothing more is "
                            "checkpointed: each shard's next owner reads on from its last checkpoint, "
                            "as after a kill", self.stage)
            await _leave_group(consumer)
        finally:
            self.running = False
            if self._restore_task is not None:
                self._restore_task.cancel()  # a rebuild under way ends in its thread, then is dropped
            self._consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self._broadcast.stop()

    def _check_topics(self, counts: dict[str, int]) -> None:
        missing = [t for t in (*self.input_topics, *self.broadcast_topics) if t not in counts]
        if missing:
            raise StageRunnerError(f"stage {self.stage}: topic(s) {', '.join(missing)} do not exist")
        inputs = {t: counts[t] for t in self.input_topics}
        if len(set(inputs.values())) != 1:
            raise CopartitioningError(
                f"stage {self.stage}: inputs must be co-partitioned (same partition count): {inputs}")

    # -- the loop -------------------------------------------------------------------------------

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        if self._listener_error is not None:
            raise StageRunnerError(f"stage {self.stage}: rebalance failed") from self._listener_error
        self._raise_base_error()
        broadcast = await self._broadcast.poll()
        batch = await consumer.getmany(timeout_ms=self.poll_timeout_ms,
                                       max_records=self.settings.worker.batch_max_records)
        async with self._lock:
            if self._listener_error is not None:
                return
            if broadcast:
                self.stats.broadcast_in = self._broadcast.records_in
                await self._feed({shard: list(broadcast) for shard in self.shards})
            if batch:
                await self._feed(self._group(consumer, batch))
                self.stats.batches += 1
            self._hold_back(consumer)
            if time.monotonic() - self._idle_checked_at >= IDLE_CHECK_S:
                await self._follow_idle(consumer)
            if time.monotonic() - self._last_checkpoint >= self.settings.worker.checkpoint_interval_s:
                await self._checkpoint(list(self.shards), beside_batches=True)

    def _group(self, consumer: AIOKafkaConsumer,
               batch: dict[TopicPartition, list[Any]]) -> dict[int, list[RawRecord]]:
        # ``batch``: RawRecords, as the consumer is made (``raw_records``); ConsumerRecords where
        # aiokafka's fetch path could not be patched
        assigned = consumer.assignment()
        by_shard: dict[int, list[RawRecord]] = {}
        for tp in sorted(batch):
            if tp not in assigned:
                continue  # revoked while the batch was in flight; the new owner reads it again
            state = self.shards.get(tp.partition)
            if state is None and tp.partition in self._restoring:
                continue  # paused while it is rebuilt; its restore seeks back to its checkpoint
            if state is None:
                raise StageRunnerError(f"stage {self.stage}: records for {tp} but no processor for shard")
            expected = state.offsets.get(tp, 0)
            records = as_raw(batch[tp])
            if records and records[0].offset < expected:  # a partition's records come in offset order
                records = [r for r in records if r.offset >= expected]
            if not records:
                continue
            state.offsets[tp] = records[-1].offset + 1
            state.heard_at[tp] = time.monotonic()
            self.stats.records_in[tp.topic] += len(records)
            by_shard.setdefault(tp.partition, []).extend(records)
        return by_shard

    async def _feed(self, records_by_shard: dict[int, list[RawRecord]]) -> None:
        """Process each shard's records, then produce all outputs and wait for the acks."""
        out: list[OutboundMessage] = []
        for shard in sorted(records_by_shard):
            records = records_by_shard[shard]
            if not records:
                continue
            state = self.shards[shard]
            out.extend(state.processor.process(records))
            state.dirty = True
        await self._produce(out)

    async def _follow_idle(self, consumer: AIOKafkaConsumer) -> None:
        """Tell each stage-1 shard which of its input partitions are idle: read to their end
        (the fetch's high watermark) with no record for ``worker.idle_partition_s``. Their
        watermarks then follow the other partitions' (``ShardProcessor.follow_idle``), so a
        partition without traffic does not hold every window open."""
        now = self._idle_checked_at = time.monotonic()
        limit = self.settings.worker.idle_partition_s
        if not limit or self.stats.blocked:
            return
        idle = 0
        out: list[OutboundMessage] = []
        for _, state in sorted(self.shards.items()):
            if not isinstance(state.processor, FollowsIdle):
                return  # a stage without event-time watermarks of its own (stage 2)
            topics = set()
            watermarked = state.processor.watermark_topics()
            for tp, offset in state.offsets.items():
                if tp.topic not in watermarked:
                    continue  # e.g. the re-routing topic: always quiet with a murmur2 producer
                if unread_after_fed(consumer, tp, offset) != 0:
                    state.heard_at.pop(tp, None)  # records still to read: not idle, however old
                    continue
                if now - state.heard_at.setdefault(tp, now) >= limit:
                    topics.add(tp.topic)
            idle += len(topics)
            messages = state.processor.follow_idle(topics) if topics else []
            predictions_idle = self.settings.topics.predictions in topics
            messages += self._follow_silence(state, state.processor, predictions_idle, now)
            if messages:
                out.extend(messages)
                state.dirty = True
        self.stats.idle_partitions = idle
        await self._produce(out)

    def _follow_silence(self, state: ShardState, processor: FollowsIdle, idle: bool,
                        now: float) -> list[OutboundMessage]:
        """``worker.silent_predictions_s``: once no predictions mark this shard knows of (its own
        watermark, the furthest another partition delivered) has passed where they stood for that
        long, and its predictions partition is idle, its watermark moves on with wall time from
        there, that far behind: the windows before a silence of every partition (a night without
        traffic) close and are scored. Marks that other shards' own silence advances move keep
        within that line; a mark past it by half the silence is traffic somewhere (events come
        about a silence ahead of the line) and starts the count again, as does a restart."""
        limit = self.settings.worker.silent_predictions_s
        reached = max(processor.prediction_marks())
        if not limit:
            return []
        if state.silence is not None:
            since, at = state.silence
            line = since + max(0, int((now - at - limit) * 1000))
            if reached <= line + int(limit * 500):
                return processor.follow_silence(line) if idle and since != NO_TIME else []
        state.silence = (reached, now)
        return []

    async def _produce(self, messages: list[OutboundMessage]) -> None:
        if not messages:
            return
        self.stats.produce_retries += await self._unless_stopped(functools.partial(
            deliver, self.producer, messages, on_blocked=self._set_blocked, what=f"{self.stage} outputs"),
            self._wait)
        self.stats.messages_out.update(m.topic for m in messages)

    async def _wait(self, seconds: float) -> None:
        """A blocked loop's wait between produce retries: in ``getmany`` on the paused partitions,
        not a sleep, or an outage longer than ``max_poll_interval_ms`` hands the shards over. On
        stop() it ends within :data:`~driftline.streams.group_wait.STEP_S` and gives the write up."""
        consumer = self._consumer
        if consumer is None:
            await self._sleep(seconds)
            return
        self._give_up_if_stopping()
        await wait_in_group(consumer, seconds, until=self._stopping)
        self._give_up_if_stopping()

    async def _sleep(self, seconds: float) -> None:
        """The wait between retries of a write the loop is not blocked in (a base beside batches,
        a revocation's or stop's pass): a sleep, ended by stop(), which gives the write up."""
        self._give_up_if_stopping()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        self._give_up_if_stopping()

    async def _unless_stopped(self, write: Callable[..., Awaitable[_T]], wait: _Wait, *,
                              base: bool = False) -> _T:
        """``write(wait=wait)``: outputs delivered or a link saved, ``wait`` between its attempts. Once
        stop() came the attempt under way is not awaited to its end (up to the producer's
        ``request_timeout_ms``, 40 s, above the worker's stop timeout): it is cancelled and the
        write given up (:meth:`_give_up_if_stopping`) once an attempt of it failed, another write
        was given up, or (not a base: a large one takes longer) :data:`STOP_GRACE_S` passed since
        stop() or since the write began, whichever is later. A cancelled attempt's records may
        still reach the broker later (the producer keeps them): as a given-up write's, harmless."""
        started = time.monotonic()
        failed = False

        async def retry_wait(seconds: float) -> None:
            nonlocal failed
            failed = True
            await wait(seconds)

        task = asyncio.ensure_future(write(wait=retry_wait))
        try:
            await _first(task, self._stopping)
            deadline = math.inf if base else max(self._stopped_at, started) + STOP_GRACE_S
            while not (task.done() or failed or self._given_up or time.monotonic() >= deadline):
                await _first(task, self._gave_up, timeout=deadline - time.monotonic())
            if not task.done():
                self._gave_up.set()
                raise _Stopped
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait([task])  # its clean-up (a spooled copy let go) before the runner goes on

    @property
    def _given_up(self) -> bool:
        return self._gave_up.is_set()

    def _give_up_if_stopping(self) -> None:
        """After a failed attempt, once stop() came: give the write up rather than wait for the
        broker (the worker would cancel the runner after its stop timeout). No attempt is made
        again, as one lasts up to the producer's ``request_timeout_ms`` (40 s, above that
        timeout), and one under way is cut short (:meth:`_unless_stopped`).

        A batch's outputs given up were not all acknowledged, so no shard may be checkpointed
        after it (its offsets and state are past them); nor after a given-up link (a delta's
        changes were taken for it, a base's since its copy). So nothing more is written: the
        runner ends as after a kill, each next owner re-reads from the shard's last checkpoint
        and produces those outputs again (some twice: downstream is idempotent)."""
        if self._stopping.is_set():
            self._gave_up.set()
            raise _Stopped

    def _set_blocked(self, blocked: bool) -> None:
        self.stats.blocked = blocked
        consumer = self._consumer
        if consumer is None:
            return
        partitions = consumer.assignment()
        if blocked:
            consumer.pause(*partitions)
        else:  # a shard still being rebuilt stays paused until its restore seeks and resumes it,
            # and an input its processor holds back until _hold_back resumes it
            consumer.resume(*(tp for tp in partitions
                              if tp.partition not in self._restoring and tp not in self._held_back))

    def _hold_back(self, consumer: AIOKafkaConsumer) -> None:
        """Pause the input partitions each shard's processor asks to wait (:class:`WaitsForInputs`,
        given what is left to read in each of its inputs) and resume those it no longer does.
        Not while the stage is blocked (everything is paused) or a shard is being rebuilt."""
        if self.stats.blocked:
            return
        paused = consumer.paused()
        self._held_back &= paused  # (a rebalance resumes or drops partitions by itself)
        for shard, state in self.shards.items():
            processor = state.processor
            if not isinstance(processor, WaitsForInputs) or shard in self._restoring:
                continue
            tps = [TopicPartition(topic, shard) for topic in self.input_topics]
            held = processor.inputs_to_hold(
                {tp.topic: unread_after_fed(consumer, tp, state.offsets.get(tp, 0)) for tp in tps})
            for tp in tps:
                if tp.topic in held and tp not in paused:
                    consumer.pause(tp)
                    self._held_back.add(tp)
                    self.stats.input_waits += 1
                elif tp.topic not in held and tp in self._held_back:
                    consumer.resume(tp)
                    self._held_back.discard(tp)
        self.stats.inputs_waiting = len(self._held_back)

    def lag(self) -> dict[TopicPartition, int]:
        """Per owned input partition: the records still to feed (:func:`unread_after_fed`: to the
        Fetch's high watermark, or last stable offset under read_committed)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out = {}
        for state in list(self.shards.values()):
            for tp, offset in list(state.offsets.items()):
                left = unread_after_fed(consumer, tp, offset)
                if left is not None:
                    out[tp] = left
        return out

    # -- checkpoints ----------------------------------------------------------------------------

    async def _checkpoint(self, shards: Sequence[int], *, beside_batches: bool) -> None:
        """Save the changed shards among `shards`, after every output so far is acknowledged (and
        start the base of one waiting for its turn even if unchanged, :meth:`_base_turn`).

        Snapshots (and restores) run in a thread, under the lock that keeps batches out, so a
        large one does not stall the event loop (group heartbeats, /metrics). A stage-1 base
        is taken from a copy (``base_copy``) and, ``beside_batches``, written while batches go
        on: a shard with a base in flight writes no link until it is acknowledged (its next
        delta then carries every change since the copy). Otherwise (revocation, stop) every
        base of `shards`, in flight or new, is acknowledged before this returns."""
        self._last_checkpoint = time.monotonic()
        if not beside_batches:
            await self._settle(shards)
        if self._given_up:  # a base settled above, or a revocation's pass, gave a link up
            raise _Stopped
        changed = [s for s in shards if s in self.shards and self.shards[s].dirty
                   and self.shards[s].base_in_flight is None]
        # A shard waiting for its base turn keeps its claim at a checkpoint where it has nothing to
        # write (a base without changes still ends its long chain): with sparse traffic it was
        # passed over by shards due after it, indefinitely.
        waiting = [s for s in shards if s in self.shards and not self.shards[s].dirty
                   and self.shards[s].base_waiting_since is not None
                   and self.shards[s].base_in_flight is None]
        if not changed and not waiting:
            return
        wrote_base = False
        large_delta = False  # the delta after a base carries every record added while it was written
        due = {shard: records for shard in (*changed, *waiting)
               if (records := self._base_due(shard)) is not None}
        turn = self._base_turn(due, changed)
        links = [*changed, turn] if turn is not None and turn in waiting else changed
        for shard in links:
            state = self.shards[shard]
            offsets = {(tp.topic, tp.partition): off for tp, off in state.offsets.items()}
            processor = state.processor
            chain = state.chain
            started, records = time.monotonic(), 0
            if isinstance(processor, Incremental):
                records = processor.changed_records()
                base = chain is None or shard == turn
                if base:
                    copy = await asyncio.to_thread(processor.base_copy)
                    state.dirty = False
                    self._base_started(shard, state)
                    state.base_in_flight = asyncio.create_task(
                        self._write_base(shard, state, copy, offsets, time.monotonic() - started))
                    continue
                if shard in due:  # another shard's base first: this chain grows by a delta meanwhile
                    self._base_deferred(state)
                blob = await asyncio.to_thread(processor.checkpoint, False)
            else:
                base, blob = True, await asyncio.to_thread(processor.snapshot)
            # Beside batches the loop waits for the link: paused, in the group however long it takes.
            state.checkpoint_id = await self._unless_stopped(functools.partial(
                self.checkpoints.save_link, self.stage, shard, blob, offsets, base=base,
                parent=state.checkpoint_id, on_blocked=self._set_blocked if beside_batches else None),
                self._wait if beside_batches else self._sleep)
            size = len(blob)
            del blob  # a base can be gigabytes: not kept while the next shard's is built
            self.stats.checkpoint_bytes["base" if base or chain is None else "delta"] += size
            if base or chain is None:
                chain = self._new_chain(shard, state, size, time.monotonic() - started)
                wrote_base = True
            else:
                chain.deltas += 1
                chain.delta_bytes += size
                chain.changed += records
                large_delta |= size > TRIM_AFTER_DELTA_BYTES
                self._estimate(state, chain)
                self._time_read(shard, chain)
            state.dirty = False
            state.checkpointed_at = time.time()
            state.checkpointed_offsets = {TopicPartition(t, p): o for (t, p), o in offsets.items()}
            self.stats.checkpoints += 1
        if wrote_base or large_delta:  # building it left the heap holding its size again in freed blocks
            await asyncio.to_thread(release_free_memory)
        if not beside_batches:
            await self._settle(shards)

    async def _write_base(self, shard: int, state: ShardState, copy: BaseCopy,
                          offsets: dict[tuple[str, int], int], hold_s: float) -> None:
        """Pickle and write the base ``copy`` (taken at ``offsets``) while batches go on, then make
        it the shard's last link. A failure is the runner's (raised by its loop): the changes since
        the copy were handed to this base, so no delta can follow the previous link any more."""
        started = time.monotonic()
        try:
            try:  # pickled into a file beside the spooled bases: never whole in memory
                blob = await asyncio.to_thread(copy.dump_to_file, self.checkpoints.spool_dir)
            finally:
                copy.release()  # on this (the processor's) thread
                # The groups the copy alone kept (those batches replaced meanwhile) are freed now,
                # not when the broker acknowledges the base: give the heap back while it is written.
                trim_cpu_s = await asyncio.to_thread(_trim_cpu_seconds)
            try:
                state.checkpoint_id = await self._unless_stopped(functools.partial(
                    self.checkpoints.save_link, self.stage, shard, blob, offsets, base=True,
                    parent=state.checkpoint_id), self._sleep, base=True)
            finally:
                if isinstance(blob, BlobFile):
                    blob.close()  # the temporary file goes
            size = len(blob)
            del blob
            self.stats.checkpoint_bytes["base"] += size
            self._new_chain(shard, state, size, hold_s)
            written_s = time.monotonic() - started
            state.restore_figures.update(base_hold_seconds=hold_s, base_write_seconds=written_s)
            state.checkpointed_at = time.time()
            state.checkpointed_offsets = {TopicPartition(t, p): o for (t, p), o in offsets.items()}
            self.stats.checkpoints += 1
            trim_cpu_s += await asyncio.to_thread(_trim_cpu_seconds)
            log.info("stage %s: shard %d's base acknowledged, %.1f MB written in %.1f s beside batches "
                     "(heap trims %.1f ms CPU)", self.stage, shard, size / 1e6, written_s, trim_cpu_s * 1e3)
        except _Stopped:  # the runner checkpoints nothing more (_give_up_if_stopping)
            log.warning("stage %s: the base of shard %d given up on stop", self.stage, shard)
        except Exception as err:
            log.exception("stage %s: writing the base of shard %d failed", self.stage, shard)
            self._base_error = err  # raised by the loop's next step, or by _settle
        finally:
            state.base_in_flight = None
            state.restore_figures["base_in_flight"] = 0.0

    def _base_due(self, shard: int) -> int | None:
        """The changed records of the shard's next link if it is due for a base (its chain passed a
        bound, :meth:`ChainLength.base_due`), else None; a shard without a chain is not counted
        here (its first base is never deferred, :meth:`_base_turn`)."""
        state = self.shards[shard]
        processor, chain = state.processor, state.chain
        if not isinstance(processor, Incremental) or chain is None:
            return None
        worker = self.settings.worker
        records = processor.changed_records()
        # Its local copy may have failed since (kept in the background).
        chain.local_base = self.checkpoints.has_local_base(self.stage, shard, chain.base_id)
        elapsed_s = time.monotonic() - chain.started
        if chain.base_due(worker.checkpoint_deltas_per_base, worker.checkpoint_delta_ratio,
                          worker.restore_target_s, self.restore_costs, records, elapsed_s):
            return records
        if state.base_waiting_since is not None:  # due no more (a local copy, costs measured since)
            state.base_waiting_since, state.base_waited_deltas = None, 0
            state.restore_figures["base_waiting"] = 0.0
        return None

    def _base_turn(self, due: dict[int, int], changed: Sequence[int]) -> int | None:
        """Which shard of ``due`` (shard: the changed records of its next link) starts its base
        now: at most one base is in flight per runner (issue 19: under uniform traffic every
        shard's chain crosses its bound at once, and each base's copy keeps the groups batches
        replace alive while it is written). None while any base is in flight or a shard of
        ``changed`` without a chain starts its first one (it cannot write a delta: never waits) or
        shards are still being rebuilt after a restart (:meth:`_restore_rest`: at 10M pending a
        restored shard's base copy beside the last rebuild made the restart's peak); else the shard
        due the longest, then the one whose estimated restore is the longest, so a shard waits for
        at most one base of each other shard (the worst case: docs/state.md). ``due`` includes the
        waiting shards without changes: their claim holds at a checkpoint they write nothing in."""
        if not due or self._restoring:
            return None
        if any(state.base_in_flight is not None for state in self.shards.values()):
            return None
        if any(self.shards[s].chain is None and isinstance(self.shards[s].processor, Incremental)
               for s in changed):
            return None
        now = time.monotonic()

        def order(shard: int) -> tuple[float, float, int]:
            state = self.shards[shard]
            chain = cast(ChainLength, state.chain)
            since = now if state.base_waiting_since is None else state.base_waiting_since
            return since, -chain.restore_seconds(self.restore_costs, due[shard]), shard

        return min(due, key=order)

    def _base_deferred(self, state: ShardState) -> None:
        """The shard is due for a base but writes a delta: another shard's base goes first."""
        if state.base_waiting_since is None:
            state.base_waiting_since = time.monotonic()
        state.base_waited_deltas += 1
        state.restore_figures["base_waiting"] = 1.0
        state.restore_figures["bases_deferred"] = state.restore_figures.get("bases_deferred", 0.0) + 1

    def _base_started(self, shard: int, state: ShardState) -> None:
        if state.base_waiting_since is not None:
            log.info("stage %s: shard %d's base starts after waiting %.1f s for other shards' bases "
                     "(%d deltas written meanwhile)", self.stage, shard,
                     time.monotonic() - state.base_waiting_since, state.base_waited_deltas)
        state.base_waiting_since, state.base_waited_deltas = None, 0
        state.restore_figures.update(base_in_flight=1.0, base_waiting=0.0)

    def _new_chain(self, shard: int, state: ShardState, base_bytes: int, hold_s: float) -> ChainLength:
        """The shard's chain once its base ``state.checkpoint_id`` was acknowledged."""
        base_id = state.checkpoint_id
        local = self.checkpoints.has_local_base(self.stage, shard, base_id)
        chain = state.chain = ChainLength(base_bytes, base_hold_s=hold_s, base_id=base_id, local_base=local)
        self._estimate(state, chain)
        return chain

    def _time_read(self, shard: int, chain: ChainLength) -> None:
        """Once the deltas of the shard's chain hold :data:`MIN_READ_BYTES`, read them back from the
        broker in the background to learn its read speed (once a chain, one read at a time, at
        most every :data:`READ_TIMING_EVERY_S`): a worker that never restored would otherwise price
        every delta's read at the default ``RestoreCosts.read_mb_per_s``, which sets how many
        deltas a base allows (issue 19)."""
        if (chain.read_timed or chain.delta_bytes < MIN_READ_BYTES or self._read_timing is not None
                or time.monotonic() - self._read_timed_at < READ_TIMING_EVERY_S):
            return
        chain.read_timed = True
        self._read_timed_at = time.monotonic()
        self._read_timing = asyncio.create_task(self._timed_read(shard))

    async def _timed_read(self, shard: int) -> None:
        try:
            timed = await self.checkpoints.time_delta_read(self.stage, shard)
            if timed is not None:
                read, seconds = timed
                self.restore_costs = self.restore_costs.read(read, seconds)
                log.info("stage %s: shard %d's deltas read back, %.1f MB in %.2f s: the restore estimate "
                         "reads the broker at %.0f MB/s", self.stage, shard, read / 1e6, seconds,
                         self.restore_costs.read_mb_per_s)
        except Exception as err:  # a measurement: the estimate keeps its speed
            log.warning("stage %s: timing the read of shard %d's deltas failed (%s)", self.stage, shard, err)
        finally:
            self._read_timing = None

    def _estimate(self, state: ShardState, chain: ChainLength) -> None:
        """The restore figures of the shard's chain as it stands, for /metrics."""
        costs = self.restore_costs
        state.restore_figures.update(
            restore_estimate_seconds=chain.restore_seconds(costs),
            restore_base_local=float(chain.local_base),
            restore_base_read_mb_per_s=costs.base_read_mb_per_s(chain.local_base),
            restore_delta_read_mb_per_s=costs.read_mb_per_s,  # the default until a read is timed
            restore_base_cpu_ms_per_mb=costs.base_s_per_mb * 1e3,  # the defaults until a restore says
            restore_delta_cpu_us_per_record=costs.change_s * 1e6,
            restore_base_cpu_measured=float(self.restore_sample.base_measured),
            restore_delta_cpu_measured=float(self.restore_sample.delta_measured))

    async def _settle(self, shards: Sequence[int]) -> None:
        """Wait until the bases in flight of `shards` are acknowledged (or raise their failure)."""
        tasks = [task for s in shards if s in self.shards
                 and (task := self.shards[s].base_in_flight) is not None]
        if tasks:
            await asyncio.gather(*tasks)
        self._raise_base_error()

    async def _bases_ended(self) -> None:
        """Wait for the bases in flight to end (acknowledged or given up: stop() came)."""
        tasks = [task for state in self.shards.values() if (task := state.base_in_flight) is not None]
        await asyncio.gather(*tasks)

    def _raise_base_error(self) -> None:
        if self._base_error is not None:
            raise StageRunnerError(f"stage {self.stage}: writing a base failed") from self._base_error

    # -- rebalancing ----------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._restored()  # a shard is handed on restored, never halfway through its rebuild
        async with self._lock:
            shards = sorted({tp.partition for tp in revoked} & set(self.shards))
            await self._checkpoint(shards, beside_batches=False)
            for shard in shards:
                self._parked[shard] = self.shards.pop(shard)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Adopt the newly assigned shards: every chain is read first (one load), then the shards
        are rebuilt one after the other, the smallest chain first. The first is adopted before
        this returns; the others are rebuilt by a task (:meth:`_restore_rest`) while the shards
        already adopted take batches, their partitions paused until each is adopted (its
        offsets sought, then resumed). Each shard's state and offsets are its checkpoint's
        whichever shard goes first, so the order changes when outputs appear, not which
        (docs/state.md, "Shards take batches as they are restored"). Once stop() came (before,
        or while this waited for the lock or read the chains) nothing is adopted or rebuilt; a
        rebuild under way then is dropped when it ends, and the others do not start."""
        if self._left_on_stop(assigned):  # run() is ending (its consumer may be gone already)
            return
        consumer = self._consumer
        assert consumer is not None
        await self._restored()  # a rebuild of an earlier assignment (revocation waits for it too)
        async with self._lock:
            if self._left_on_stop(assigned):  # stop() came meanwhile (a rebuild, a batch blocked)
                return
            self.stats.rebalances += 1
            shards = sorted({tp.partition for tp in assigned})
            for shard in shards:
                missing = [t for t in self.input_topics if TopicPartition(t, shard) not in assigned]
                if missing:
                    raise StageRunnerError(f"stage {self.stage}: shard {shard} assigned without {missing}; "
                                           "all members must use the range assignor")
            new = [s for s in shards if s not in self.shards]
            started, read_before = time.perf_counter(), self.checkpoints.bytes_read
            saved = await self.checkpoints.load_all(self.stage, new) if new else {}
            if self._left_on_stop(assigned):  # stop() came while the chains were read
                for unused in saved.values():
                    unused.close()
                return
            self._read_seconds = time.perf_counter() - started
            local_s = sum(ckpt.local_read_seconds for ckpt in saved.values())  # not the broker's speed
            self.restore_costs = self.restore_costs.read(
                self.checkpoints.bytes_read - read_before, self._read_seconds - local_s).local_read(
                sum(ckpt.local_bytes for ckpt in saved.values()), local_s)
            if saved:  # reading the chains left freed blocks in the heap, under every rebuild
                await asyncio.to_thread(release_free_memory)
            # parked shards handed back unchanged and shards without a checkpoint cost nothing;
            # then the chains, smallest first: the first shard takes batches soonest
            later = sorted((s for s in new if s in saved and not self._parked_fits(s, saved[s])),
                           key=lambda s: (_chain_bytes(saved[s]), s))
            now = [s for s in new if s not in later] + later[:1]
            later = later[1:]
            self._restoring = set(later)
            if later:
                consumer.pause(*(TopicPartition(t, s) for s in later for t in self.input_topics))
            try:
                for shard in now:  # each base let go once restored: one alive at a time
                    checkpoint = saved.pop(shard, None)
                    try:
                        await self._adopt(consumer, shard, checkpoint)
                    finally:
                        if checkpoint is not None:
                            checkpoint.close()  # its files (a spooled base's and deltas' are deleted)
            except BaseException:
                self._restoring = set()
                for checkpoint in saved.values():
                    checkpoint.close()
                raise
            if later:
                self._restore_task = asyncio.create_task(
                    self._restore_rest(consumer, [(s, saved.pop(s)) for s in later]))
            self._parked.clear()
            log.info("stage %s: shards %s assigned%s", self.stage, shards,
                     f" ({sorted(later)} restoring while the others take batches)" if later else "")

    def _left_on_stop(self, assigned: set[TopicPartition]) -> bool:
        """Whether stop() came: then the assigned partitions are not adopted (paused: the loop
        fetches none of them), their shards are the next owner's, from their last checkpoints."""
        if not self._stopping.is_set():
            return False
        if self._consumer is not None:
            self._consumer.pause(*assigned)
        log.info("stage %s: partitions assigned after stop() left to the next owner", self.stage)
        return True

    def _parked_fits(self, shard: int, saved: Checkpoint) -> bool:
        """Whether the parked state of ``shard`` is its checkpoint ``saved`` (no restore needed)."""
        parked = self._parked.get(shard)
        return parked is not None and saved.checkpoint_id == parked.checkpoint_id

    async def _restored(self) -> None:
        """Wait for the shards still being rebuilt (:meth:`_restore_rest`) to be adopted."""
        task = self._restore_task
        if task is not None and not task.done():
            await asyncio.shield(task)  # a cancelled waiter leaves the rebuild to finish

    async def _restore_rest(self, consumer: AIOKafkaConsumer, chains: list[tuple[int, Checkpoint]]) -> None:
        """Rebuild ``chains``' shards one after the other in a thread, outside the lock (the
        shards already adopted take batches meanwhile), each adopted under the lock as soon as
        it is rebuilt. A failure is the rebalance's (raised by the loop's next step). Once stop()
        came no rebuild starts and the one under way is dropped, not adopted: the shard's state
        is its checkpoint, its next owner's (run() would wait for the rebuilds first)."""
        waiting = list(chains)
        try:
            while waiting and not self._stopping.is_set():
                shard, checkpoint = waiting.pop(0)  # the thread closes it, even if this task is cancelled
                offsets = {tp: checkpoint.offsets[(tp.topic, tp.partition)] for tp in self._tps(shard)
                           if (tp.topic, tp.partition) in checkpoint.offsets}
                state = await asyncio.to_thread(self._restore_closing, shard, checkpoint, offsets)
                if self._stopping.is_set():  # dropped: nothing was fed to it, its checkpoint is its state
                    break
                async with self._lock:
                    self.stats.restored_shards += 1
                    await self._install(consumer, shard, state, fresh=True)
                    self._restoring.discard(shard)
            if self._restoring:
                log.info("stage %s: shards %s left unrebuilt on stop(); their next owner restores them",
                         self.stage, sorted(self._restoring))
        except asyncio.CancelledError:
            raise
        except _Stopped:  # stop() gave up a write of an adoption (its broadcast records' outputs)
            log.warning("stage %s: shards still to rebuild left on stop; their next owner restores them",
                        self.stage)
        except Exception as err:
            log.exception("stage %s: restoring shards failed", self.stage)
            self._listener_error = err
        finally:
            for _, checkpoint in waiting:
                checkpoint.close()
            self._restoring = set()

    def _restore_closing(self, shard: int, saved: Checkpoint,
                         offsets: dict[TopicPartition, int]) -> ShardState:
        """:meth:`_restore`, then the checkpoint's files let go (in the restoring thread)."""
        try:
            return self._restore(shard, saved, offsets)
        finally:
            saved.close()

    def _tps(self, shard: int) -> list[TopicPartition]:
        return [TopicPartition(t, shard) for t in self.input_topics]

    async def _adopt(self, consumer: AIOKafkaConsumer, shard: int, saved: Checkpoint | None) -> None:
        tps = self._tps(shard)
        parked = self._parked.get(shard)
        fresh = False
        if parked is not None and (saved.checkpoint_id if saved else None) == parked.checkpoint_id:
            state = parked  # nobody checkpointed it since we gave it up
        elif saved is not None:
            offsets = {tp: saved.offsets[(tp.topic, tp.partition)] for tp in tps
                       if (tp.topic, tp.partition) in saved.offsets}
            state = await asyncio.to_thread(self._restore, shard, saved, offsets)
            if self._left_on_stop(set(tps)):  # dropped, as a rebuild in _restore_rest: nothing fed to it
                return
            self.stats.restored_shards += 1
            fresh = True
        else:
            state = ShardState(self.factory.create(shard), {}, None)
            self.stats.created_shards += 1
            fresh = True
        await self._install(consumer, shard, state, fresh)

    async def _install(self, consumer: AIOKafkaConsumer, shard: int, state: ShardState, fresh: bool) -> None:
        """Make ``state`` the shard's: its partitions sought to its offsets (and resumed: a shard
        rebuilt after the others was paused), the retained broadcast records fed if it is new."""
        tps = self._tps(shard)
        if fresh and isinstance(state.processor, Incremental):
            state.processor.track_changes()
        unknown = [tp for tp in tps if tp not in state.offsets]
        if unknown:
            state.offsets.update(await consumer.beginning_offsets(unknown))
        for tp in tps:
            consumer.seek(tp, state.offsets[tp])
        self.shards[shard] = state
        if shard in self._restoring and not self.stats.blocked:
            consumer.resume(*tps)
        if fresh and self._broadcast.enabled:
            await self._feed({shard: self._broadcast.retained()})

    def _restore(self, shard: int, saved: Checkpoint, offsets: dict[TopicPartition, int]) -> ShardState:
        """The shard from its checkpoint: a full snapshot, or a chain's base and deltas."""
        started, cpu = time.perf_counter(), time.thread_time()  # this thread: the restore alone
        timed = TimedDeltas(saved.deltas)  # where the base's unpickling ends and the deltas' begin
        if saved.deltas:
            processor = cast(_ChainFactory, self.factory).restore(shard, saved.blob, timed)
        else:
            processor = self.factory.restore(shard, saved.blob)
        ended = time.thread_time()
        cpu_s = ended - cpu
        base_cpu_s = (ended if timed.cpu_at is None else timed.cpu_at) - cpu
        seconds = time.perf_counter() - started + self._read_seconds
        # What this rebuild freed (deltas' bytes, their unpickled records, whole groups stubbed)
        # goes back before the next shard's: the heap kept each rebuild's leftovers otherwise
        # (docs/state.md, "A restart's peak")
        release_free_memory()
        read = len(saved.blob) + saved.delta_bytes
        chain = None
        if saved.kind != FULL:
            changed = chain_records(saved.deltas)
            chain = ChainLength(len(saved.blob), len(saved.deltas), saved.delta_bytes, changed,
                                base_id=saved.base_id,
                                local_base=self.checkpoints.has_local_base(self.stage, shard, saved.base_id))
            if isinstance(processor, Incremental):
                self.restore_sample = self.restore_sample.plus(len(saved.blob), base_cpu_s, changed,
                                                               cpu_s - base_cpu_s)
                self.restore_costs = self.restore_costs.measured(self.restore_sample)
        source = ""  # a chain's base may come from its local copy (worker.state_dir)
        if chain is not None:
            source = (f": {saved.broker_bytes / 1e6:.1f} MB from the broker, "
                      f"{saved.local_bytes / 1e6:.1f} MB from the local copy of the base")
        log.info("stage %s: shard %d restored from %s in %.2f s (reading checkpoints %.2f s, %.1f MB%s; "
                 "%.2f CPU-s, the base's %.2f); the restore estimate prices %.2f ms a MB of base, %.2f us "
                 "a changed record", self.stage, shard,
                 f"a base and {len(saved.deltas)} deltas" if chain else "a full snapshot",
                 seconds, self._read_seconds, read / 1e6, source, cpu_s, base_cpu_s,
                 self.restore_costs.base_s_per_mb * 1e3, self.restore_costs.change_s * 1e6)
        figures = {"restore_seconds": seconds, "restore_bytes": float(read),
                   "restore_deltas": float(len(saved.deltas)), "restore_read_seconds": self._read_seconds,
                   "restore_cpu_seconds": cpu_s, "restore_base_cpu_seconds": base_cpu_s}
        if chain is not None:
            figures |= {"restore_broker_bytes": float(saved.broker_bytes),
                        "restore_local_bytes": float(saved.local_bytes)}
        state = ShardState(processor, offsets, saved.checkpoint_id, chain=chain, restore_figures=figures,
                           checkpointed_offsets=dict(offsets))
        if chain is not None and isinstance(processor, Incremental):
            self._estimate(state, chain)
        return state


async def _first(task: asyncio.Future[Any], event: asyncio.Event, timeout: float = math.inf) -> None:
    """Wait until ``task`` is done, ``event`` set or ``timeout`` seconds passed (inf: no timeout)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([task, waiter], timeout=None if timeout == math.inf else max(0.0, timeout),
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


def _trim_cpu_seconds() -> float:
    """Trim the heap (:func:`release_free_memory`) and return the CPU seconds it took (this thread)."""
    started = time.thread_time()
    release_free_memory()
    return time.thread_time() - started


def _chain_bytes(saved: Checkpoint) -> int:
    """The bytes a restore of ``saved`` rebuilds from: what orders the shards' restores."""
    return len(saved.blob) + saved.delta_bytes


class _ChainFactory(Protocol):
    """A factory of incremental processors restores a base with the deltas after it."""

    def restore(self, shard: int, blob: bytes | BlobFile, deltas: Sequence[bytes]) -> StageProcessor: ...


class _Rebalance(ConsumerRebalanceListener):
    """Routes aiokafka's callbacks to the runner; a failure stops the runner instead of being logged.
    A write given up on stop() (a revocation's checkpoints, outputs of broadcast records fed to
    an assigned shard) is no failure: the runner ends as after a kill
    (:meth:`StageRunner._give_up_if_stopping`). Partitions assigned once stop() came are not
    adopted (:meth:`StageRunner.on_assigned`): a revocation's pass given up lets the rebalance
    go on while run() returns."""

    def __init__(self, runner: StageRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._guard(self.runner.on_revoked(set(revoked)))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._guard(self.runner.on_assigned(set(assigned)))

    async def _guard(self, callback: Awaitable[None]) -> None:
        try:
            await callback
        except _Stopped:  # run() says what the next owners do (nothing is checkpointed any more)
            log.warning("stage %s: a write in the rebalance given up on stop", self.runner.stage)
        except Exception as err:  # surfaced by the run loop
            log.exception("stage %s: rebalance callback failed", self.runner.stage)
            self.runner._listener_error = err


async def _leave_group(consumer: AIOKafkaConsumer) -> None:
    """Send LeaveGroup even in generation 0, so the next member need not wait out our session.

    aiokafka only leaves for generation > 0; the embedded broker numbers a fresh group's first
    generation 0, so its first member would otherwise never leave on a clean stop.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "generation", None) != 0 or not coordinator.member_id:
        return
    with contextlib.suppress(KafkaError, asyncio.TimeoutError):
        await asyncio.wait_for(
            coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id)), 2.0)
    coordinator.reset_generation()
