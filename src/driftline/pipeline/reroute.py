"""Re-routing: every prediction and label reaches the shard that joins its ``prediction_id``.

Stage 1 joins on shard ``join_shard(prediction_id, P)`` = murmur2(id) % P, the partition the SDK,
the Java client, kafka-python, aiokafka and kafkajs (v2 default) give a record keyed by its id.
A record another producer put elsewhere (librdkafka's CRC32 ``consistent_random``, kafkajs's
``LegacyPartitioner``, no key at all) is decided on by the shard that read it -- decoded,
judged late or not by *its* partition's watermark, counted in that shard's windows -- and then
forwarded to the joining shard through ``topics.repartition`` (P partitions, key = prediction_id),
the way Kafka Streams re-keys through a repartition topic.

Exact under replay and SIGKILL, because what a shard receives is a function of the logs:

- **Numbered per source.** A forwarded record carries its source (kind, source shard) and a
  sequence number counting the records that source forwarded to this destination so far. The
  counters are part of the source shard's checkpointed state, so a restored shard re-forwards the
  same records with the same numbers; the :class:`Inbox` applies each number once, in order (a
  number ahead of the next expected one waits: an earlier one is still to come, because delivery
  re-sends everything from the first unacknowledged message on).
- **Source watermarks travel with the records.** After each batch a shard tells every other shard
  its prediction and label watermarks together with how many records it had forwarded to it by
  then; the receiver applies a watermark only once it applied those records. A re-routed record
  is never late at the receiver: it was judged at its source, and the receiver's join uses the
  *minimum* over all sources of their watermarks (one source's progress never outruns a record
  that source has yet to deliver).

>>> from driftline.operators.validate import RawRecord
>>> fwd = Forwarder(shard=0, partitions=2, topic="rp")
>>> rec = RawRecord("labels", 0, 7, 1_000, None, b'{"prediction_id":"a","label":1,"timestamp":1000}')
>>> m = fwd.forward(LABEL, 1, rec, "a")
>>> inbox = Inbox(shard=1, partitions=2)
>>> ready = inbox.accept([RawRecord("rp", 1, 0, 0, m.key, m.value)] * 2)  # a re-sent copy is dropped
>>> [(r.topic, r.partition, r.offset) for r in ready[LABEL]], inbox.duplicates
([('labels', 0, 7)], 1)
>>> marks = fwd.progress({PREDICTION: 500, LABEL: 900})
>>> _ = inbox.accept([RawRecord("rp", 1, 1, 0, marks[0].key, marks[0].value)])
>>> inbox.watermark(LABEL, local=2_000), inbox.watermark(PREDICTION, local=2_000)
(900, 500)
>>> inbox.furthest(LABEL), Inbox(shard=1, partitions=2).furthest(LABEL) == NO_TIME
(900, True)
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping, Sequence

import orjson

from driftline.kafka.partitioner import partition_for_key
from driftline.operators.validate import RawRecord
from driftline.pipeline.stage import OutboundMessage

PREDICTION, LABEL = "prediction", "label"
KINDS = (PREDICTION, LABEL)
NO_TIME = -(2**62)  # watermark of a source not heard from yet

_SEP = b"\x00"  # ends the JSON header (JSON text never holds a raw NUL)


def join_shard(prediction_id: str, partitions: int) -> int:
    """The shard that joins ``prediction_id``: Kafka's default partitioner on the id as key.

    >>> [join_shard(p, 4) for p in ("p-1", "p-2", "p-3")]
    [0, 0, 3]
    """
    return partition_for_key(prediction_id.encode("utf-8", "surrogatepass"), partitions)


def _encode(header: Mapping[str, object], payload: bytes = b"") -> bytes:
    return orjson.dumps(header) + _SEP + payload


class Forwarder:
    """The sending side of one shard: numbers forwarded records per (kind, destination)."""

    def __init__(self, shard: int, partitions: int, topic: str) -> None:
        self.shard = shard
        self.partitions = partitions
        self.topic = topic
        self.sent: Counter[tuple[str, int]] = Counter()  # (kind, destination) -> records forwarded

    def forward(self, kind: str, destination: int, record: RawRecord, prediction_id: str) -> OutboundMessage:
        """The repartition message carrying ``record`` (with its source coordinates) to ``destination``."""
        seq = self.sent[(kind, destination)]
        self.sent[(kind, destination)] = seq + 1
        header = {
            "k": kind, "src": self.shard, "seq": seq, "topic": record.topic, "partition": record.partition,
            "offset": record.offset, "ts": record.timestamp_ms,
            "key": None if record.key is None else record.key.hex(),
        }
        return OutboundMessage(self.topic, prediction_id.encode("utf-8", "surrogatepass"),
                               _encode(header, record.value or b""), destination)

    def progress(self, watermarks: Mapping[str, int]) -> list[OutboundMessage]:
        """This shard's source watermarks, to every other shard, each with the number of records
        forwarded to that shard so far (the receiver applies the watermark after those)."""
        out = []
        for destination in range(self.partitions):
            if destination == self.shard:
                continue
            header = {"k": "watermarks", "src": self.shard,
                      "marks": [[kind, watermarks[kind], self.sent[(kind, destination)]] for kind in KINDS]}
            out.append(OutboundMessage(self.topic, None, _encode(header), destination))
        return out


class ForwardedPredictions:
    """The ids of predictions a shard forwarded, to tell a re-sent one (same id, time within the
    horizon of an earlier copy: the join's duplicate rule) before counting it in the windows.
    A copy is remembered until this partition's watermark passes its time + horizon, after which a
    further copy inside that horizon would be late anyway; so on one partition this decides
    exactly as the join does. Copies on different partitions (keyless re-sends) are not seen here.

    >>> ids = ForwardedPredictions()
    >>> [ids.is_resend("p", ts, horizon_ms=500) for ts in (1_000, 1_400, 1_600)]
    [False, True, False]
    >>> ids.forget(watermark=2_200, horizon_ms=500); len(ids)
    0
    """

    def __init__(self) -> None:
        self.times: dict[str, list[int]] = {}  # id -> times of the copies counted, in log order
        self._expiry: list[tuple[int, str]] = []  # heap of (time, id) of the copies remembered

    def __len__(self) -> int:
        return len(self.times)

    def is_resend(self, prediction_id: str, ts: int, horizon_ms: int) -> bool:
        """Whether this copy repeats a remembered one; if not, it is remembered."""
        times = self.times.setdefault(prediction_id, [])
        if any(ts <= t + horizon_ms for t in times):
            return True
        times.append(ts)
        heapq.heappush(self._expiry, (ts, prediction_id))
        return False

    def forget(self, watermark: int, horizon_ms: int) -> None:
        """Drop copies whose horizon the watermark has passed."""
        while self._expiry and self._expiry[0][0] + horizon_ms < watermark:
            ts, prediction_id = heapq.heappop(self._expiry)
            times = self.times[prediction_id]
            times.remove(ts)
            if not times:
                del self.times[prediction_id]


class Inbox:
    """The receiving side of one shard: each source's records once and in order, and the sources'
    watermarks once the records they cover are applied."""

    def __init__(self, shard: int, partitions: int) -> None:
        self.shard = shard
        self.partitions = partitions
        self.next_seq: Counter[tuple[str, int]] = Counter()  # (kind, source) -> next number to apply
        self.early: dict[tuple[str, int], dict[int, RawRecord]] = {}  # numbers ahead of next_seq
        self.marks: dict[tuple[str, int], int] = {}  # (kind, source) -> applied watermark
        self.pending_marks: dict[tuple[str, int], list[tuple[int, int]]] = {}  # -> [(records needed, mark)]
        self.duplicates = 0  # records re-sent by a restarted source, dropped
        self.malformed = 0

    def accept(self, records: Sequence[RawRecord]) -> dict[str, list[RawRecord]]:
        """Apply repartition records (in log order); returns the forwarded records now due, per
        kind, as the source held them (its topic, partition, offset, timestamp, key and value)."""
        ready: dict[str, list[RawRecord]] = {PREDICTION: [], LABEL: []}
        for record in records:
            header, _, payload = (record.value or b"").partition(_SEP)
            try:
                h = orjson.loads(header)
                source = int(h["src"])
                if h["k"] == "watermarks":
                    for kind, mark, needed in h["marks"]:
                        self.pending_marks.setdefault((kind, source), []).append((int(needed), int(mark)))
                        self._apply_marks((kind, source))
                    continue
                kind, seq = h["k"], int(h["seq"])
                if kind not in ready:
                    raise ValueError(kind)
                original = RawRecord(h["topic"], int(h["partition"]), int(h["offset"]), int(h["ts"]),
                                     None if h["key"] is None else bytes.fromhex(h["key"]), payload)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                self.malformed += 1  # not written by a Forwarder: nothing to apply
                continue
            src = (kind, source)
            if seq < self.next_seq[src] or seq in self.early.get(src, {}):
                self.duplicates += 1
                continue
            self.early.setdefault(src, {})[seq] = original
            waiting = self.early[src]
            while self.next_seq[src] in waiting:
                ready[kind].append(waiting.pop(self.next_seq[src]))
                self.next_seq[src] += 1
            if not waiting:
                del self.early[src]
            self._apply_marks(src)
        return ready

    def _apply_marks(self, src: tuple[str, int]) -> None:
        pending = self.pending_marks.get(src)
        if not pending:
            return
        applied = self.next_seq[src]
        due = [mark for needed, mark in pending if needed <= applied]
        if due:
            self.marks[src] = max(self.marks.get(src, NO_TIME), *due)
            pending[:] = [(needed, mark) for needed, mark in pending if needed > applied]
        if not pending:
            del self.pending_marks[src]

    def furthest(self, kind: str) -> int:
        """The furthest watermark of ``kind`` another source partition has delivered here
        (``NO_TIME`` if none has): what an idle partition may follow (``ShardProcessor.follow_idle``)."""
        return max((mark for (k, s), mark in self.marks.items() if k == kind and s != self.shard),
                   default=NO_TIME)

    def watermark(self, kind: str, local: int) -> int:
        """The watermark the join may use for ``kind``: the minimum over every source partition
        (this shard's own is ``local``) of what it has delivered here."""
        others = [self.marks.get((kind, s), NO_TIME) for s in range(self.partitions) if s != self.shard]
        return min([local, *others])
