"""Change tracking for incremental checkpoints: a delta (:class:`JoinChanges`) carries the
records added since the last checkpoint whole and the records the chain held pending that were
closed since as closings; a restore applies closings in bulk."""

from __future__ import annotations

import operator
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from driftline.operators.join.records import (
    _AT,
    _BODY,
    _CLOSED,
    _DIGEST_AT,
    _HEAD,
    _JOINED,
    _JOINED_TAIL,
    _PENDING,
    _TS,
    _UUID_CODE,
    DIGEST_SIZE,
    _closed,
    _key_and_time,
    _keyed_time,
    _pid,
)
from driftline.operators.join.scan import _EIGHT, _FOUR, _group_record_starts, _i64_at, _u32_at
from driftline.operators.join.spill import SpillingTable


@dataclass(frozen=True, slots=True)
class JoinChanges:
    """A join's changes since a checkpoint: the current bytes of every record added
    (``records``, concatenated), the (id key, event time) of those forgotten again (``gone``),
    the state outside the record table (``state``), and a closing (:func:`_closing`: id key, time,
    state, label digest; 21-35 bytes where the closed record takes 43-63) of every record the
    chain held pending that was closed since (``closings``, concatenated; delta format 5: before,
    such a record came whole in ``records``). Records forgotten that were not added need no
    entry: forgetting is a function of the watermarks in ``state``."""

    records: bytes
    gone: list[tuple[bytes, int]]
    state: dict[str, Any]
    closings: bytes = b""


class TrackedTable(SpillingTable):
    """A spilling record table that remembers its changes since the last checkpoint."""

    # A closing (:func:`_closing`) of every record the chain held already that was closed since
    # the last take_changes() (its key, time, new state and label digest).
    _closings: list[bytes]

    def track_changes(self) -> None:
        """Remember from now on which records change, for :meth:`LabelJoin.take_changes` (idempotent)."""
        if self._added is None:
            self._added = set()

    def added_keys(self) -> list[tuple[bytes, int]]:
        """The (id key, event time) of each record added since the last checkpoint, sorted: one id's
        records in event-time order, their arrival order (none while changes are not tracked)."""
        return sorted(map(_key_and_time, self._added or ()))

    @property
    def changed_count(self) -> int:
        """Records changed since the last checkpoint: what the next delta carries (and a restore
        applies, one lookup and splice each): those added, whole, and those closed, as closings."""
        return len(self._added) + len(self._closings) if self._added is not None else 0

    def reset_changes(self) -> None:
        """Forget the changes so far: a full snapshot was just taken."""
        if self._added is not None:
            self._added, self._closings = set(), []

    def _note_closing(self, key: bytes, ts: int, state: int, label_digest: bytes = b"") -> None:
        """The record of ``key`` at ``ts`` was just closed (pending to ``state``): a closing for the
        next delta, unless the record was added since the last checkpoint (then the delta carries
        it whole, as it is then)."""
        added = self._added
        if added is not None and _keyed_time(key, ts) not in added:
            self._closings.append(_closing(key, ts, state, label_digest))

    def current_records(self, keys: Iterable[tuple[bytes, int]]
                        ) -> tuple[list[bytes], list[tuple[bytes, int]]]:
        """The current whole bytes of the records named by (id key, event time), in ``keys``' order,
        and the keys of those the table no longer holds."""
        records: list[bytes] = []
        gone: list[tuple[bytes, int]] = []
        for key, ts in keys:
            found = self._locate(key, ts)
            if found is None:
                gone.append((key, ts))
            else:
                gid, pos, end = found
                records.append(self._whole(self._groups[gid][pos:end]))
        return records, gone

    def _apply_closings(self, closings: bytes) -> None:
        """Close the pending records ``closings`` name (:func:`_closing`) as the live join closed
        them: the closed record keeps the pending one's head CRC, payload digest and context id.
        The closings of distinct groups are applied together (:meth:`_close_records`); a group
        named twice takes its second closing in a second round, and so on."""
        if not closings:
            return
        starts, klens = _closing_starts(closings)
        data = np.frombuffer(closings, np.uint8)
        pos = np.array(starts, np.int64)
        klen = np.array(klens, np.int64)
        stamps = _i64_at(data, pos + klen)
        states = data[pos + klen + 8]
        ends = (pos + klen).tolist()
        keys = list(map(closings.__getitem__, map(slice, starts, ends)))
        digest_at = (pos + klen + _TS.size).tolist()
        digest_to = [at + DIGEST_SIZE for at in digest_at]
        digests = list(map(closings.__getitem__, map(slice, digest_at, digest_to)))
        crcs = np.fromiter(map(zlib.crc32, keys), np.int64, len(keys))
        gids = self._gids(crcs)
        order = np.argsort(gids, kind="stable")
        sorted_gids = gids[order]
        first = np.concatenate(([True], sorted_gids[1:] != sorted_gids[:-1]))
        run_start = np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))
        rank = np.empty(len(keys), np.int64)
        rank[order] = np.arange(len(keys)) - run_start
        for turn in range(int(rank.max()) + 1):
            chosen = np.flatnonzero(rank == turn)
            self._close_records(gids[chosen], [keys[i] for i in chosen.tolist()], stamps[chosen],
                                states[chosen], [digests[i] for i in chosen.tolist()])

    def _close_records(self, gids: npt.NDArray[np.int64], keys: list[bytes], stamps: npt.NDArray[np.int64],
                       states: npt.NDArray[np.uint8], label_digests: list[bytes]) -> None:
        """Close the pending record of each (``keys``, ``stamps``) in its group ``gids`` (distinct)
        as :meth:`_close_one` does, the groups parsed and rebuilt together: the record is found
        as the first occurrence of its id key in its group that starts a record of that event
        time; any other case (an id with an earlier record there, or none) goes through
        :meth:`_close_one`."""
        groups = self._groups
        gid_list = gids.tolist()
        olds = list(map(groups.__getitem__, gid_list))
        found = np.fromiter(map(bytes.find, olds, keys), np.int64, len(keys))
        sizes = np.fromiter(map(len, olds), np.int64, len(olds))
        buf = bytearray().join(olds)
        data = np.frombuffer(buf, np.uint8)  # patched in place below
        group_ends = np.cumsum(sizes)
        cand = group_ends - sizes + found - _AT  # where the record would start
        klen = np.fromiter(map(len, keys), np.int64, len(keys))
        ok = (found >= _AT) & np.isin(states, (_JOINED, _CLOSED))
        records = _group_record_starts(data, sizes)
        if records.size:  # the key where a record of the group starts, then its time and state
            at = np.searchsorted(records, cand)
            ok &= (at < records.size) & (records[np.minimum(at, records.size - 1)] == cand)
            maybe = np.flatnonzero(ok)
            ts_at = cand[maybe] + _AT + klen[maybe]
            ok[maybe] = (_i64_at(data, ts_at) == stamps[maybe]) & (data[ts_at + 8] == _PENDING)
        else:
            ok[:] = False
        slow = np.flatnonzero(~ok).tolist()
        fast = np.flatnonzero(ok)
        if fast.size:
            cand, klen, new_states = cand[fast], klen[fast], states[fast]
            ts_at = cand + _AT + klen
            joined = new_states == _JOINED
            body = ts_at + _BODY  # where the pending record's _PRED starts: the closed one ends there
            rec_end = cand + _u32_at(data, cand)
            # a closed record: the pending one's head (its length changed), id key, time (its
            # state changed) and payload digest, then a joined one's context id and label digest
            tail_size = np.where(joined, _JOINED_TAIL.size, 0)
            # A joined record's tail is written where its pending _PRED began (the context id moved
            # one byte back, the label's digest after it) and the rest of the pending record cut.
            room = ~joined | (rec_end - body >= _JOINED_TAIL.size)
            if not room.all():  # a pending record without payload: shorter than the joined tail
                slow += fast[~room].tolist()
                keep = np.flatnonzero(room)
                fast, cand, klen, new_states = fast[keep], cand[keep], klen[keep], new_states[keep]
                ts_at, joined, body, rec_end, tail_size = (ts_at[keep], joined[keep], body[keep],
                                                           rec_end[keep], tail_size[keep])
            new_length = body - cand + tail_size
            for byte in range(4):
                data[cand + byte] = new_length >> 8 * byte & 0xFF
            data[ts_at + 8] = new_states
            tail_at = body[joined]
            data[tail_at[:, None] + _FOUR] = data[tail_at[:, None] + 1 + _FOUR]
            label = b"".join([label_digests[i] for i in fast[joined].tolist()])
            data[tail_at[:, None] + 4 + _EIGHT] = np.frombuffer(label, np.uint8).reshape(-1, DIGEST_SIZE)
            patched = bytes(buf)
            group_starts = (group_ends - sizes)[fast].tolist()
            heads = map(patched.__getitem__, map(slice, group_starts, (body + tail_size).tolist()))
            rests = map(patched.__getitem__, map(slice, rec_end.tolist(), group_ends[fast].tolist()))
            # any(): setitem returns None, so every group is put (a loop in C)
            any(map(groups.__setitem__, gids[fast].tolist(), map(operator.add, heads, rests)))
            self._pending -= fast.size
        for i in slow:
            self._close_one(keys[i], int(stamps[i]), int(states[i]), label_digests[i])

    def _close_one(self, key: bytes, ts: int, state: int, label_digest: bytes) -> None:
        """Close the pending record of ``key`` at ``ts`` (``state``: joined or closed) as the live
        join closed it; ValueError if there is none."""
        found = self._locate(key, ts)
        at = -1 if found is None else found[1] + _AT + len(key)
        group = b"" if found is None else self._groups[found[0]]
        if found is None or group[at + 8] != _PENDING or state not in (_JOINED, _CLOSED):
            raise ValueError(f"join changes do not apply: no pending record of {_pid(key)!r} at {ts} "
                             "to close")
        gid, start, end = found
        tail = b""
        if state == _JOINED:  # the context id as in the pending record's _PRED, the label's digest
            tail = group[at + _BODY + 1 : at + _BODY + 5] + label_digest
        crc = _HEAD.unpack_from(group, start)[1]
        closed = _closed(key, crc, ts, state, group[at + _DIGEST_AT : at + _BODY], tail)
        self._groups[gid] = b"".join((group[:start], closed, group[end:]))
        self._pending -= 1


def _closing_starts(closings: bytes) -> tuple[list[int], list[int]]:
    """Where each of concatenated closings (:func:`_closing`) starts, and its id key's length."""
    starts, key_lengths = [], []
    pos, size = 0, len(closings)
    while pos < size:
        code = closings[pos] | closings[pos + 1] << 8
        klen = 18 if code == _UUID_CODE else 2 + code
        starts.append(pos)
        key_lengths.append(klen)
        pos += klen + _TS.size + (DIGEST_SIZE if closings[pos + klen + 8] == _JOINED else 0)
    return starts, key_lengths


def _closing(key: bytes, ts: int, state: int, label_digest: bytes = b"") -> bytes:
    """What a delta says of a record its chain holds pending and that was closed since: the id key,
    event time and new state (:data:`_TS`), and a joined one's label digest; the rest of the closed
    record (head CRC, payload digest, context id) a restore takes from the pending one."""
    return b"".join((key, _TS.pack(ts, state), label_digest))


def _closing_keys(closings: bytes) -> list[tuple[bytes, int]]:
    """(id key, event time) of each of concatenated closings (:func:`_closing`).

    >>> from driftline.operators.join.records import _id_key
    >>> _closing_keys(_closing(_id_key("a"), 5, _JOINED, bytes(8)) + _closing(_id_key("b"), 7, _CLOSED))
    [(b'\\x01\\x00a', 5), (b'\\x01\\x00b', 7)]
    """
    starts, key_lengths = _closing_starts(closings)
    return [(closings[pos : pos + klen], _TS.unpack_from(closings, pos + klen)[0])
            for pos, klen in zip(starts, key_lengths, strict=True)]
