"""The record table: a linear-hashing table of ``bytes`` groups (a few records each, chosen by
the CRC-32 of the id) and a time index of id hashes per second of event time. No Python object
per record: adding, finding, replacing, splitting and forgetting work on the groups' bytes."""

from __future__ import annotations

import bisect
import operator
import zlib
from array import array

import numpy as np
import numpy.typing as npt

from driftline.operators.join.records import (
    _AT,
    _HEAD,
    _PENDING,
    _TS,
    _UUID_CODE,
    _find,
    _record_keyed_time,
    _walk,
)
from driftline.operators.join.scan import _group_record_starts, _i64_at, _u32_at

_BUCKET_MS = 1000
"""Time index granularity: expiry scans at most one partially expired bucket per advance."""
_MIN_GROUPS = 64
_LOAD = 4
"""Records per group on average: linear hashing splits one group whenever the average passes it."""


class RecordTable:
    """The groups and the time index of a join's records (:class:`~.core.LabelJoin` sets every
    attribute in ``__init__``/``__setstate__``)."""

    # Records of every remembered prediction, in groups chosen by linear hashing of the id's
    # CRC-32: ``len(_groups) == _low + _split``; the records of one id keep their arrival order.
    _groups: list[bytes]
    _low: int
    _split: int
    _records: int
    _pending: int
    _estimate: int  # an upper bound of the bytes of all records (additions counted, shrinking not)
    _buckets: dict[int, array[int]]  # second of event time -> CRC-32 of the id of each record at it
    _bucket_keys: list[int]
    # The id key and event time (:func:`~.records._keyed_time`) of every record added since the
    # last checkpoint, while a caller checkpoints incrementally (None: nobody asked, so nothing is kept)
    _added: set[bytes] | None

    def _rebuild_indexes(self) -> None:
        """Derived structures, from the records (a base checkpoint keeps the time index)."""
        # an upper bound of the bytes of all records (exact here; additions counted, shrinking not)
        self._estimate = sum(map(len, self._groups))
        # second of event time -> CRC-32 of the id of each record stored with such a time
        self._buckets = {}
        for group in self._groups:
            for pos, _, klen in _walk(group):
                bucket = _TS.unpack_from(group, pos + _AT + klen)[0] // _BUCKET_MS
                if bucket not in self._buckets:
                    self._buckets[bucket] = array("I")
                self._buckets[bucket].append(_HEAD.unpack_from(group, pos)[1])
        self._bucket_keys = sorted(self._buckets)

    def _put_records(self, records: bytes, starts: list[int]) -> None:
        """:meth:`_put` of each of a delta's records (concatenated, starting at ``starts``), in
        order, with the same result byte for byte but without Python per record where it can:
        a record whose id is in its group (rare: a chain holds a delta's new records only when
        one was forgotten and added again) goes through :meth:`_put`; the others are appended.
        Appending them all after the splits their count calls for leaves every group's records
        in the order :meth:`_add` one by one leaves them (a split keeps the order of the records
        it moves, and each group gets its new records last, in the delta's order), and each
        second of the time index gets their id hashes in that order too."""
        count = len(starts)
        if not count:
            return
        data = np.frombuffer(records, np.uint8)
        pos = np.array(starts, np.int64)
        lengths = _u32_at(data, pos)
        crcs = _u32_at(data, pos + 4)
        code = data[pos + _AT].astype(np.int64) | data[pos + _AT + 1].astype(np.int64) << 8
        at = pos + _AT + np.where(code == _UUID_CODE, 18, 2 + code)
        stamps = _i64_at(data, at)
        pending = data[at + 8] == _PENDING
        ends = (pos + lengths).tolist()
        recs = list(map(records.__getitem__, map(slice, starts, ends)))
        key_at = (pos + _AT).tolist()
        keys = list(map(records.__getitem__, map(slice, key_at, at.tolist())))
        groups = self._groups
        new = np.ones(count, bool)
        holding = map(groups.__getitem__, self._gids(crcs).tolist())
        present = np.fromiter(map(operator.contains, holding, keys), bool, count)
        stamp_list = stamps.tolist()
        for i in np.flatnonzero(present).tolist():  # a C-level substring test first, as _locate
            if self._locate(keys[i], stamp_list[i]) is not None:
                self._put(int(crcs[i]), keys[i], stamp_list[i], recs[i])
                new[i] = False
        add = np.flatnonzero(new)
        if not add.size:
            return
        if self._added is not None:  # each record's id key and time, as _keyed_time makes them
            add_list = add.tolist()
            self._added.update(map(records.__getitem__, map(
                slice, map(key_at.__getitem__, add_list), (at[add] + 8).tolist())))
        self._records += add.size
        self._pending += int(np.count_nonzero(pending[add]))
        self._estimate += int(lengths[add].sum())
        splits = -(-self._records // _LOAD) - len(groups)  # as many as _add's would have made
        if splits > 0:
            self._split_groups(splits)
        # The new records of each group, joined in the delta's order, appended to it.
        gids = self._gids(crcs[add])
        order = np.argsort(gids, kind="stable")
        sorted_gids = gids[order]
        first = np.flatnonzero(np.concatenate(([True], sorted_gids[1:] != sorted_gids[:-1])))
        ordered = list(map(recs.__getitem__, add[order].tolist()))
        bounds = [*first.tolist(), add.size]
        tails = ordered if len(first) == add.size else list(
            map(b"".join, map(ordered.__getitem__, map(slice, bounds[:-1], bounds[1:]))))
        targets = sorted_gids[first].tolist()
        grown = map(operator.add, map(groups.__getitem__, targets), tails)
        any(map(groups.__setitem__, targets, grown))  # every group put (setitem returns None): a loop in C
        # The time index: each second's id hashes in the delta's order, new seconds as _add makes them.
        seconds = stamps[add] // _BUCKET_MS
        added_crcs = crcs[add].astype(np.uint32)
        found, first_at = np.unique(seconds, return_index=True)
        for second in found[np.argsort(first_at)].tolist():
            bucket = self._buckets.get(second)
            if bucket is None:
                self._buckets[second] = bucket = array("I")
                bisect.insort(self._bucket_keys, second)
            bucket.frombytes(added_crcs[seconds == second].tobytes())

    def _split_groups(self, count: int) -> None:
        """:meth:`_split_group` ``count`` times, the groups of each run of the split pointer (up to
        where the table doubles) parsed and cut together."""
        groups = self._groups
        while count:
            low, at = self._low, self._split
            runs = min(count, low - at)
            olds = groups[at : at + runs]
            sizes = np.fromiter(map(len, olds), np.int64, runs)
            buf = b"".join(olds)
            data = np.frombuffer(buf, np.uint8)
            starts = _group_record_starts(data, sizes)
            lengths = _u32_at(data, starts)
            owner = np.searchsorted(np.cumsum(sizes), starts, side="right")
            # each group's records that stay, then those that move, each in their order
            piece = 2 * owner + (_u32_at(data, starts + 4) & low != 0)
            order = np.argsort(piece, kind="stable")
            whole = b"".join(map(buf.__getitem__, map(slice, starts[order].tolist(),
                                                      (starts + lengths)[order].tolist())))
            ends = np.cumsum(np.bincount(piece, lengths, minlength=2 * runs).astype(np.int64)).tolist()
            parts = list(map(whole.__getitem__, map(slice, [0, *ends[:-1]], ends)))
            groups[at : at + runs] = parts[0::2]
            groups.extend(parts[1::2])
            self._split = at + runs
            if self._split == low:
                self._low, self._split = 2 * low, 0
            count -= runs

    def _gids(self, crcs: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """:meth:`_gid` of each id hash."""
        gids = crcs & (self._low - 1)
        return np.where(gids < self._split, crcs & (2 * self._low - 1), gids)

    def _locate(self, key: bytes, ts: int) -> tuple[int, int, int] | None:
        """(group, start, end) of the record of id key ``key`` at event time ``ts``, if remembered.

        An id has at most one record per event time: a second prediction within the horizon is a
        duplicate, so one id's records have distinct (increasing) times."""
        gid = self._gid(zlib.crc32(key))
        group = self._groups[gid]
        if key not in group:  # a C-level substring test first: a new record's id is not there
            return None
        at = _AT + len(key)
        for pos in _find(group, key):
            if _TS.unpack_from(group, pos + at)[0] == ts:
                return gid, pos, pos + _HEAD.unpack_from(group, pos)[0]
        return None

    def _put(self, crc: int, key: bytes, ts: int, record: bytes | None) -> None:
        """Replace, add (``record``) or drop (None) the record of ``key`` at ``ts``."""
        found = self._locate(key, ts)
        if record is not None:
            self._pending += _TS.unpack_from(record, _AT + len(key))[1] == _PENDING
        if found is None:
            if record is not None:
                self._add(self._gid(crc), crc, record, ts)
            return
        gid, pos, end = found
        group = self._groups[gid]
        self._pending -= _TS.unpack_from(group, pos + _AT + len(key))[1] == _PENDING
        if record is None:
            self._records -= 1
        else:
            self._estimate += len(record)
        self._groups[gid] = b"".join((group[:pos], record or b"", group[end:]))

    def _gid(self, crc: int) -> int:
        """The group of an id hash (linear hashing: groups below the split pointer are split)."""
        gid = crc & (self._low - 1)
        if gid < self._split:
            gid = crc & (2 * self._low - 1)
        return gid

    def _add(self, gid: int, crc: int, record: bytes, ts: int) -> None:
        """Append a record (of an id with hash ``crc``, at event time ``ts``) to its group."""
        if self._added is not None:
            self._added.add(_record_keyed_time(record))
        self._groups[gid] += record
        self._records += 1
        self._estimate += len(record)
        second = ts // _BUCKET_MS
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = bucket = array("I")
            bisect.insort(self._bucket_keys, second)
        bucket.append(crc)
        while self._records > _LOAD * len(self._groups):
            self._split_group()

    def _split_group(self) -> None:
        """Split the group at the split pointer between itself and a new last group."""
        low, at = self._low, self._split
        group = self._groups[at]
        stay: list[bytes] = []
        move: list[bytes] = []
        pos, size, unpack = 0, len(group), _HEAD.unpack_from
        while pos < size:
            length, crc = unpack(group, pos)
            (move if crc & low else stay).append(group[pos : pos + length])
            pos += length
        self._groups[at] = b"".join(stay)
        self._groups.append(b"".join(move))
        self._split = at + 1
        if self._split == low:
            self._low, self._split = 2 * low, 0

    def _merge_group(self) -> None:
        """Undo the last split: the last group goes back into the one it was split from."""
        if self._split == 0:
            self._low //= 2
            self._split = self._low
        self._split -= 1
        last = self._groups.pop()
        self._groups[self._split] += last

    def _forget(self, cut: int) -> bool:
        """Drop every record older than ``cut`` (whole buckets only: keeping more changes nothing);
        whether any second of the time index was dropped."""
        keys = self._bucket_keys
        gone = 0
        while gone < len(keys) and (keys[gone] + 1) * _BUCKET_MS <= cut:
            gone += 1
        if not gone:
            return False
        limit = (keys[gone - 1] + 1) * _BUCKET_MS  # every record older is in one of these buckets
        gids: set[int] = set()
        for key in keys[:gone]:
            gids.update(map(self._gid, self._buckets.pop(key)))
        del keys[:gone]
        for gid in gids:
            group = self._groups[gid]
            records = _walk(group)
            kept = [group[pos:end] for pos, end, klen in records
                    if _TS.unpack_from(group, pos + _AT + klen)[0] >= limit]
            self._records -= len(records) - len(kept)
            self._groups[gid] = b"".join(kept)
        while len(self._groups) > _MIN_GROUPS and self._records < len(self._groups):
            self._merge_group()
        return True
