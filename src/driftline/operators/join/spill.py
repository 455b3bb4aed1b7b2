"""Spilling: under a memory budget, the payloads of pending records go to the on-disk
:class:`~driftline.operators.pending_store.PendingStore` and the records become stubs (their
payload's reference instead); read back whole wherever a payload is needed."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from driftline.operators.join.records import (
    _AT,
    _BODY,
    _HEAD,
    _PENDING,
    _PRED,
    _SPILLED,
    _STUB_LENGTH,
    _TS,
    _UUID_CODE,
    _walk,
)
from driftline.operators.join.scan import _group_record_starts, _spans, _u32_at
from driftline.operators.join.table import _BUCKET_MS, RecordTable
from driftline.operators.pending_store import PendingStore, PinnedSegments

_NO_BUDGET = 2**62


class SpillingTable(RecordTable):
    """A record table that keeps its records under a memory budget (:meth:`set_memory_budget`)."""

    _store: PendingStore | None
    _pinned: PinnedSegments | None
    _copy: bool
    _budget: int
    _check_at: int
    _spilling: bool
    _spilled_key: int | None
    _through: bool
    _unspilled: set[int] | None
    _unspilled_heap: list[int]

    def _no_store(self) -> None:
        """No memory budget: every record whole in memory (a checkpoint never holds a store)."""
        self._store: PendingStore | None = None
        self._pinned: PinnedSegments | None = None  # a base copy's view of the store it was taken from
        self._copy = False  # a base copy (base_copy): pickled in a thread while the join goes on
        self._budget = 0
        self._check_at = _NO_BUDGET  # record bytes added past which the budget is looked at
        self._spilling = False
        self._spilled_key: int | None = None  # newest bucket whose pending payloads were spilled
        # Over the budget at the last look: a new pending record goes to the store as it comes.
        self._through = False
        # Buckets that may hold whole pending records (added while not over the budget), once the
        # first pass over every bucket is done; None: not known (each bucket from _spilled_key on).
        self._unspilled: set[int] | None = None
        self._unspilled_heap: list[int] = []  # the same seconds, oldest first

    def _adopt_store(self, store: PendingStore, budget: int) -> None:
        """Run with the store a restore under ``budget`` (:func:`~.restore.restoring_under_budget`)
        spilled into: every pending record not kept whole is a stub, and those kept whole fit in
        3/4 of the budget, so no second needs walking (:attr:`_unspilled` empty)."""
        self._store, self._budget = store, budget
        self._check_at = 0  # look at the budget at the next prediction
        self._unspilled, self._unspilled_heap = set(), []

    def set_memory_budget(
        self, budget_bytes: int, directory: Path | str | None = None, segment_ms: int = 900_000
    ) -> None:
        """Keep the records in memory under ``budget_bytes`` (0: no budget, all in memory) by
        moving the payloads of pending predictions (context, prediction, features) to a
        :class:`~driftline.operators.pending_store.PendingStore` in ``directory``: over the
        budget, those of new predictions as they come, and those kept whole before, oldest second
        of event time first. Results and checkpoints are the same either way: a spilled record
        is read back whole wherever its payload is needed (a join, a checkpoint).

        >>> from driftline.operators.join import LabelJoin
        >>> from driftline.schemas.events import LabelEvent, PredictionEvent
        >>> join = LabelJoin(horizon_ms=60_000, max_pending=1000, max_held=1000)
        >>> join.set_memory_budget(1)  # one byte: every payload goes to disk
        >>> for pid, ts in (("p1", 1_000), ("p2", 3_000)):
        ...     event = PredictionEvent(prediction_id=pid, model_id="m", timestamp=ts,
        ...                             features={"x": 0.5, "y": 2.0, "z": 4.0}, prediction=0.9)
        ...     _ = join.on_prediction(event, segment="")
        >>> join.spilled_count, join.store_bytes
        (2, 64)
        >>> join.on_label(LabelEvent(prediction_id="p1", label="1", timestamp=2_000)).features_json
        '{"x":0.5,"y":2.0,"z":4.0}'
        >>> join.set_memory_budget(0)
        """
        if budget_bytes < 0:
            raise ValueError("budget_bytes must be >= 0 (0: no budget)")
        if not budget_bytes:
            if self._store is not None:
                self._groups = list(map(self._whole_group, self._groups))
                self._store.close()
            self._no_store()
            self._estimate = sum(map(len, self._groups))
            return
        if self._store is not None and budget_bytes == self._budget:
            return  # restored under this budget (restoring_under_budget), or set again: as it is
        if self._store is None:
            self._store = PendingStore(directory, segment_ms)
        self._budget = budget_bytes
        self._spilling = self._through = False
        self._unspilled = None
        self._check_at = 0  # look at the budget at the next prediction

    @property
    def spilled_count(self) -> int:
        """Pending predictions whose payload is in the pending store (walks the table: for tests
        and metrics, not per event)."""
        count = 0
        for group in self._groups:
            for pos, _, klen in _walk(group):
                at = pos + _AT + klen
                count += group[at + 8] == _PENDING and bool(group[at + _BODY] & _SPILLED)
        return count

    @property
    def store_bytes(self) -> int:
        """Bytes of the pending store's segment files (0 without a budget)."""
        return 0 if self._store is None else self._store.bytes_on_disk

    def _check_budget(self) -> None:
        """The records may be over the budget. If so, new pending records go to the store as they
        come (:meth:`_spill_record`, until a look finds the records under the budget), and the
        oldest second holding whole pending payloads is spilled (never the newest second), one
        per call (a restore that starts far over the budget catches up over the next predictions
        instead of stalling the first), until the records are under 3/4 of it. A second is walked
        again only if whole pending records were added to it since (:attr:`_unspilled`): spilling
        finds a record by walking its group, several records, so once per record at most."""
        store = self._store
        if store is None:
            self._check_at = _NO_BUDGET
            return
        if not self._spilling:  # a new round: the exact figure (the estimate ignores shrinking)
            self._estimate = sum(map(len, self._groups))
            self._through = self._estimate > self._budget
            if not self._through:
                self._check_at = self._budget
                return
            self._spilling = True
        # Never the newest second: it is still filling (a second already spilled keeps the records
        # that arrive in it later in memory until they are looked at again).
        keys = self._bucket_keys
        if self._unspilled is None:
            start = 0 if self._spilled_key is None else bisect.bisect_right(keys, self._spilled_key)
            if start < len(keys) - 1:
                key = keys[start]
                self._estimate -= self._spill_bucket(store, key)
                self._spilled_key = key
            done = start + 2 >= len(keys)
            if done:  # every bucket looked at once: from now on only those with whole records added
                self._unspilled, self._unspilled_heap = set(keys[-1:]), keys[-1:]
        else:
            newest = keys[-1] if keys else None
            heap = self._unspilled_heap
            while heap and heap[0] not in self._buckets:  # forgotten since
                self._unspilled.discard(heapq.heappop(heap))
            if heap and heap[0] != newest:
                key = heapq.heappop(heap)
                self._unspilled.discard(key)
                self._estimate -= self._spill_bucket(store, key)
            done = not heap or heap[0] == newest
        if self._estimate <= self._budget * 3 // 4 or done:
            # Done, or nothing left to spill (closed records and late arrivals fill the budget):
            # look again once another eighth of it was added.
            self._spilling = False
            self._check_at = max(self._budget, self._estimate + self._budget // 8)
        else:
            self._check_at = -1

    def _spill_bucket(self, store: PendingStore, key: int) -> int:
        """Move the payloads of bucket ``key``'s pending records not spilled yet to ``store`` (one
        append for the whole second); the bytes this saved. A record becomes a stub: its head with
        the length changed, id key, time, digest, the flags (+ _SPILLED) to label length, and the
        payload's reference."""
        low, split = self._low, self._split
        high = 2 * low - 1
        low -= 1
        gids = {crc & low if crc & low >= split else crc & high for crc in self._buckets[key]}
        first, last = key * _BUCKET_MS, (key + 1) * _BUCKET_MS
        groups, unpack_head, unpack_ts = self._groups, _HEAD.unpack_from, _TS.unpack_from
        payloads: list[bytes] = []
        found: list[tuple[int, list[tuple[int, int, int]]]] = []  # (group, [(start, end, flags at)])
        for gid in gids:
            group = groups[gid]
            spots: list[tuple[int, int, int]] = []
            pos, size = 0, len(group)
            while pos < size:  # as _walk, inline
                end = pos + unpack_head(group, pos)[0]
                code = group[pos + _AT] | group[pos + _AT + 1] << 8
                at = pos + _AT + (18 if code == _UUID_CODE else 2 + code)
                ts, state = unpack_ts(group, at)
                head = at + _BODY
                if (state == _PENDING and first <= ts < last and not group[head] & _SPILLED
                        and end > head + _PRED.size):
                    spots.append((pos, end, head))
                    payloads.append(group[head + _PRED.size : end])
                pos = end
            if spots:
                found.append((gid, spots))
        if not payloads:
            return 0
        refs = iter(store.put_many(last - 1, payloads))
        saved = 0
        for gid, spots in found:
            group = groups[gid]
            out = bytearray()
            kept = 0
            for pos, end, head in spots:
                out += group[kept:pos]
                stub = len(out)
                out += group[pos : head + _PRED.size]
                ref = next(refs)
                out += ref
                stub_tail = _PRED.size + len(ref)
                _STUB_LENGTH.pack_into(out, stub, head - pos + stub_tail)
                out[stub + head - pos] |= _SPILLED
                kept = end
                saved += end - head - stub_tail
            out += group[kept:]
            groups[gid] = bytes(out)
        return saved

    def _spill_record(self, record: bytes, ts: int) -> bytes:
        """A new pending record (at event time ``ts``) with its payload moved to the store."""
        code = record[_AT] | record[_AT + 1] << 8
        head = _AT + (18 if code == _UUID_CODE else 2 + code) + _BODY
        payload_at = head + _PRED.size
        if len(record) == payload_at or self._store is None:
            return record
        stub = bytearray(record[:payload_at])
        stub += self._store.put(ts, record[payload_at:])
        _STUB_LENGTH.pack_into(stub, 0, len(stub))
        stub[head] |= _SPILLED
        return bytes(stub)

    def _whole(self, record: bytes) -> bytes:
        """``record`` as it was encoded: a spilled one with its payload read back."""
        return record if self._store is None else _whole_record(record, self._store.get)

    def _whole_group(self, group: bytes) -> bytes:
        """A group with every spilled record read back."""
        return group if self._store is None else _whole_group(group, self._store.get)


def _whole_record(record: bytes, read: Callable[[bytes], bytes]) -> bytes:
    """``record`` as it was encoded: a spilled one with its payload read back by ``read``."""
    code = record[_AT] | record[_AT + 1] << 8
    head = _AT + (18 if code == _UUID_CODE else 2 + code) + _BODY
    if record[head - _BODY + 8] != _PENDING or not record[head] & _SPILLED:
        return record
    payload_at = head + _PRED.size
    whole = bytearray(record[:payload_at])
    whole += read(record[payload_at:])
    _STUB_LENGTH.pack_into(whole, 0, len(whole))
    whole[head] &= ~_SPILLED
    return bytes(whole)


def _whole_group(group: bytes, read: Callable[[bytes], bytes]) -> bytes:
    """A group with every spilled record read back by ``read``."""
    return b"".join(_whole_record(group[pos:end], read) for pos, end, _ in _walk(group))


def _stub_group(group: bytes, store: PendingStore) -> bytes:
    """``group`` with the payload of every pending record not spilled yet moved to ``store`` (each
    to the segment of its own event time) and the record made a stub, as
    :meth:`SpillingTable._spill_bucket` makes them."""
    unpack_head, unpack_ts = _HEAD.unpack_from, _TS.unpack_from
    out = bytearray()
    kept = pos = 0
    size = len(group)
    while pos < size:  # as _walk, inline
        end = pos + unpack_head(group, pos)[0]
        code = group[pos + _AT] | group[pos + _AT + 1] << 8
        at = pos + _AT + (18 if code == _UUID_CODE else 2 + code)
        ts, state = unpack_ts(group, at)
        head = at + _BODY
        if state == _PENDING and not group[head] & _SPILLED and end > head + _PRED.size:
            out += group[kept:pos]
            stub = len(out)
            out += group[pos : head + _PRED.size]
            ref = store.put(ts, group[head + _PRED.size : end])
            out += ref
            _STUB_LENGTH.pack_into(out, stub, head - pos + _PRED.size + len(ref))
            out[stub + head - pos] |= _SPILLED
            kept = end
        pos = end
    if not kept:
        return group
    out += group[kept:]
    return bytes(out)


def _stub_groups(groups: list[bytes], store: PendingStore) -> list[bytes]:
    """:func:`_stub_group` of each of ``groups``, with numpy instead of Python per record (a
    restore stubs every record of a base: ~4 us each in Python, 10M at 10M pending): the groups
    are parsed together, one record of every group per round, and the payloads of each segment
    go to the store as one block. Every group is returned as a new ``bytes``.

    >>> from driftline.operators.join import LabelJoin
    >>> from driftline.schemas.events import LabelEvent, PredictionEvent
    >>> join = LabelJoin(horizon_ms=10**9, max_pending=100, max_held=10)
    >>> for i in range(40):
    ...     _ = join.on_prediction(PredictionEvent(prediction_id=f"p{i}", model_id="m", timestamp=i * 400_000,
    ...                                            features={"x": float(i)}, prediction=0.5), segment="")
    >>> _ = join.on_label(LabelEvent(prediction_id="p3", label="1", timestamp=1_300_000))
    >>> one, many = PendingStore(), PendingStore()
    >>> stubs = [_stub_group(group, one) for group in join._groups]
    >>> _stub_groups(join._groups, many) == stubs
    True
    >>> [_whole_group(group, many.get) for group in _stub_groups(join._groups, many)] == join._groups
    True
    >>> one.close(), many.close()
    (None, None)
    """
    sizes = np.fromiter(map(len, groups), np.int64, len(groups))
    buf = b"".join(groups)
    starts = _group_record_starts(np.frombuffer(buf, np.uint8), sizes)
    return _stub_records(buf, starts, np.cumsum(sizes), store)


def _stub_records(buf: bytes, pos: npt.NDArray[np.int64], ends: npt.NDArray[np.int64],
                  store: PendingStore) -> list[bytes]:
    """The pieces of ``buf`` (records starting at ``pos``, the pieces ending at ``ends``) with
    their pending payloads moved to ``store`` (see :func:`_stub_groups`)."""
    sizes = np.diff(ends, prepend=0)
    data = np.frombuffer(buf, np.uint8)
    end = pos + _u32_at(data, pos)
    code = data[pos + _AT].astype(np.int64) | data[pos + _AT + 1].astype(np.int64) << 8
    at = pos + _AT + np.where(code == _UUID_CODE, 18, 2 + code)
    pending = np.flatnonzero(data[at + 8] == _PENDING)  # a closed record may end where its flags would be
    head = at[pending] + _BODY
    payload_at = head + _PRED.size
    chosen = (data[head] & _SPILLED == 0) & (end[pending] > payload_at)
    rec, head, payload_at = pending[chosen], head[chosen], payload_at[chosen]
    if not rec.size:
        return [buf[a:b] for a, b in zip((ends - sizes).tolist(), ends.tolist(), strict=True)]
    rec_pos, rec_end = pos[rec], end[rec]
    lengths = rec_end - payload_at
    stamps = data[at[rec][:, None] + np.arange(8)].view("<i8").ravel()
    segments = stamps // store.segment_ms
    # Each segment's payloads as one block (records in order within it): slices of ``buf``
    # joined (faster here than numpy's per-byte indexing); and their references.
    order = np.argsort(segments, kind="stable")
    bounds = np.flatnonzero(np.diff(segments[order])) + 1
    sorted_lengths = lengths[order]
    froms, tos = payload_at[order].tolist(), rec_end[order].tolist()
    ref_rows: list[npt.NDArray[np.uint8]] = []
    for first, last in zip([0, *bounds.tolist()], [*bounds.tolist(), rec.size], strict=True):
        block = b"".join([buf[a:b] for a, b in zip(froms[first:last], tos[first:last], strict=True)])
        ref_rows.append(store.put_block(int(stamps[order[first]]), block, sorted_lengths[first:last]))
    width = ref_rows[0].shape[1]
    if all(rows.shape[1] == width for rows in ref_rows):
        refs = np.empty((rec.size, width), np.uint8)
        refs[order] = np.concatenate(ref_rows)
        widths = np.full(rec.size, width)
        refs = refs.ravel()
    else:  # a segment past 4 GiB: its references are longer
        widths = np.empty(rec.size, np.int64)
        widths[order] = np.concatenate([np.full(len(rows), rows.shape[1]) for rows in ref_rows])
        flat = np.concatenate([rows.ravel() for rows in ref_rows])
        ref_at = np.empty(rec.size, np.int64)  # where each record's reference starts in ``flat``
        ref_at[order] = np.cumsum(widths[order]) - widths[order]
        refs = flat[_spans(ref_at, widths)]
    # The groups without the payloads, each record's reference where its payload began.
    removed = np.cumsum(lengths) - lengths  # payload bytes before each record's
    added = np.cumsum(widths) - widths
    # Runs of bytes kept and of payloads (then of references) in turn: one boolean a byte.
    edges = np.empty(2 * rec.size + 2, np.int64)
    edges[0], edges[1:-1:2], edges[2:-1:2], edges[-1] = 0, payload_at, rec_end, data.size
    runs = np.diff(edges)
    turns = np.arange(2 * rec.size + 1) % 2 == 0
    kept = data[np.repeat(turns, runs)]
    runs[1::2] = widths
    is_kept = np.repeat(turns, runs)
    out = np.empty(is_kept.size, np.uint8)
    out[is_kept] = kept
    out[~is_kept] = refs
    start = rec_pos - removed + added
    size = payload_at - rec_pos + widths
    for byte in range(4):
        out[start + byte] = size >> 8 * byte & 0xFF
    out[start + head - rec_pos] |= _SPILLED
    before = np.searchsorted(rec_pos, ends, side="left")  # records stubbed before each group's end
    new_ends = (ends - np.concatenate(([0], np.cumsum(lengths)))[before]
                + np.concatenate(([0], np.cumsum(widths)))[before])
    whole = out.tobytes()
    starts = np.concatenate(([0], new_ends[:-1]))
    return [whole[a:b] for a, b in zip(starts.tolist(), new_ends.tolist(), strict=True)]
