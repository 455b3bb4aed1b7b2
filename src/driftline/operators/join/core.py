"""Event-time interval join of predictions and labels for one shard.

A label joins its prediction iff ``0 <= label_ts - pred_ts <= horizon_ms``. Results are a function
of the two input logs only, never of how they interleave or of when :meth:`LabelJoin.advance` is
called, provided the caller keeps the contract of the architecture:

- only non-late events are fed (``ts >= watermark`` of their own topic before the event), and
- ``advance`` gets watermarks (``max ts seen - allowed lateness``) of events already fed.

Rules, each chosen so that it cannot depend on the interleaving:

- **First label wins**, in label-log order; later labels inside the same prediction's interval are
  counted as ``duplicate_labels``.
- **A label earlier than its prediction does not join** (no clamping to a zero delay): such a label
  is held like any unmatched label and becomes an orphan when the predictions watermark passes its
  timestamp. Clamping would make the result depend on whether the prediction arrived before that
  watermark did, i.e. on the interleaving.
- **Duplicate predictions**: a prediction whose id was accepted before at ``ts0`` is ignored and
  counted iff ``ts <= ts0 + horizon_ms``. A later reuse of the id starts a new prediction; the two
  intervals are then disjoint, so a label matches at most one of them.
- **Exact or conflicting**: every duplicate (prediction or label) is also reported in
  :meth:`LabelJoin.take_duplicates` as a :class:`Duplicate`, ``exact`` iff its payload digest
  equals the digest of the record that won (an at-least-once re-send), else a conflict (same id,
  other content). Each record keeps the 8-byte digest of its payload; a joined one also the
  digest of its label. Digests kept before :func:`payload_digest` was CRC-32 and length are
  BLAKE2b-64: a caller that holds the duplicate's payload checks :func:`legacy_resend` before
  taking a conflict for one (as :meth:`LabelJoin.on_prediction` does for its default digest).
  Ids are remembered as long as expiry needs them (below); a re-send after
  that is late by construction (its time is under both watermarks) and lands in ``late_events``.
- **Held labels** wait for their prediction until ``pred_watermark > label_ts`` and are then
  ``orphan_labels``. A label matching an evicted prediction is an orphan too, with reason
  ``'prediction_evicted'``.
- **Expiry**: a pending prediction is expired (unlabeled) once ``label_watermark > pred_ts +
  horizon_ms``, with ``expired_at = pred_ts + horizon_ms``; its id is forgotten once both watermarks
  passed that time (it is still needed to recognise duplicate predictions and labels until then).

Not interleaving-independent, by nature: the bounds. When ``max_pending``/``max_held`` is hit the
oldest entry (smallest event time) is evicted and counted; how full the state is depends on how far
one topic runs ahead of the other. An evicted prediction is reported by the next
:meth:`LabelJoin.advance` like an expired one, with reason ``'evicted'`` and
``expired_at = pred_ts + horizon_ms`` (the interval it would have expired in), and a label of it
becomes an orphan with reason ``'prediction_evicted'`` (told by its closed record, kept anyway until
forgotten: no state of its own; a label that comes after the prediction would have expired is late);
an evicted label becomes an orphan with reason ``'evicted'``. ``labels_beyond_horizon`` and
``labels_before_prediction`` are diagnostics: counted when such a label arrives while its
prediction is still remembered; the label is also counted in ``orphan_labels`` when it is finally
given up.

State is compact, so a shard can hold millions of pending predictions (``bench/bench_join_state.py``
measures the bytes per pending prediction): each prediction is one packed record -- its id (16 raw
bytes for a canonical UUID, else UTF-8), event time, state and payload digest, once joined its
context and the label's digest, and while pending its context, prediction and features (floats
as packed doubles, the other values as JSON, names interned per feature layout). Records live in
a linear-hashing table of ``bytes`` groups (a few records each, chosen by the CRC-32 of the id),
so there is no Python object per prediction; a time index of id hashes per second of event time
drives expiry, eviction and forgetting.

>>> from driftline.schemas.events import LabelEvent, PredictionEvent
>>> join = LabelJoin(horizon_ms=60_000, max_pending=1000, max_held=1000)
>>> pred = PredictionEvent(prediction_id="p1", model_id="m", timestamp=1_000,
...                        features={"x": 0.5, "c": "a"}, prediction={"label": "yes"})
>>> join.on_prediction(pred, segment="") is None, join.pending_count
(True, 1)
>>> out = join.on_label(LabelEvent(prediction_id="p1", label="yes", timestamp=4_000))
>>> out.label_delay_ms, out.correct, out.features_json
(3000, 1, '{"x":0.5,"c":"a"}')
>>> join.on_label(LabelEvent(prediction_id="p1", label="yes", timestamp=4_000))
>>> join.on_label(LabelEvent(prediction_id="p1", label="no", timestamp=4_000))
>>> [(d.kind, d.exact, d.model_id) for d in join.take_duplicates()]
[('label', True, 'm'), ('label', False, 'm')]
>>> late = PredictionEvent(prediction_id="p2", model_id="m", timestamp=2_000, prediction=0.3)
>>> join.on_prediction(late, segment="region=eu")
>>> [(e.prediction_id, e.segment, e.expired_at) for e in join.advance(70_000, label_watermark_ms=62_001)]
[('p2', 'region=eu', 62000)]
"""

from __future__ import annotations

import bisect
import heapq
import pickle
import zlib
from array import array
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from driftline.operators.join import native
from driftline.operators.join.changes import JoinChanges, TrackedTable, _closing
from driftline.operators.join.features import (
    _MAX_SHAPES,
    FloatArray,
    _Layout,
    _packed_features,
    _Shape,
    features_to_json,
    shape_of,
)
from driftline.operators.join.outcomes import (
    REROUTED_LABEL,
    REROUTED_PREDICTION,
    JoinedOutcome,
    _Joined,
    _outcome,
    _outcomes,
)
from driftline.operators.join.outputs import _label_value, _pending_tails, _predicted_text, normalise_label
from driftline.operators.join.records import (
    _AT,
    _BODY,
    _CLOSED,
    _DIGEST_AT,
    _HEAD,
    _JOINED,
    _JOINED_HEADS,
    _JOINED_TAIL,
    _NO_CTX,
    _NO_SHAPE,
    _PENDING,
    _PENDING_HEADS,
    _PRED,
    _RECORD_FORMAT,
    _REROUTED,
    _SPILLED,
    _TS,
    DIGEST_SIZE,
    UNKNOWN_DIGEST,
    _closed,
    _find,
    _id_key,
    _joined_head,
    _keyed_crcs,
    _pending_head,
    _pid,
    _record_pieces,
    _record_starts,
    _upgrade_v1_group,
    _walk,
    legacy_resend,
    payload_digest,
)
from driftline.operators.join.reports import (
    COUNTER_NAMES,
    Duplicate,
    ExpiredPrediction,
    OrphanLabel,
    _record_position,
)
from driftline.operators.join.restore import _RESTORE_BUDGET, _RestoredGroups, _WholeGroups
from driftline.operators.join.spill import _stub_records
from driftline.operators.join.table import _BUCKET_MS, _LOAD, _MIN_GROUPS
from driftline.schemas.events import LabelEvent, Prediction, PredictionEvent

_NEVER = -(2**62)
_OUTCOMES_AT_ONCE = 64
"""Joined labels whose outcomes :meth:`LabelJoin.on_labels` makes at once, while the records they read
and the intermediates of their features' JSON are in the CPU's cache: a batch's 625 at once took ~10 %
more CPU in on_labels (bench_stages' join calls replayed, 50,000 predictions; 32 and 128 no better)."""
APPLY_PIECE_BYTES = 4 * 2**20
"""A delta's added records are applied this many bytes at a time (:meth:`LabelJoin.apply_changes`).
Issue 19: applied whole, a delta of 200,000 records took ~270 MB more at its peak than the join
kept after it (its stubs' numpy arrays, a boolean a byte, the lists of slices); in pieces ~100
(the delta's own bytes), ``bench/bench_shard_restore.py --first-delta``, docs/state.md."""


class LabelJoin(TrackedTable):
    """Joins one shard's predictions with their labels in event time (see the module docstring).

    ``advance`` returns the predictions that expired unlabeled or were evicted since the last call,
    sorted by ``(expired_at, prediction_id)``. ``counters`` maps each name of :data:`COUNTER_NAMES`
    to a count.
    """

    def __init__(self, horizon_ms: int, max_pending: int, max_held: int) -> None:
        if horizon_ms < 0 or max_pending < 1 or max_held < 1:
            raise ValueError("horizon_ms must be >= 0 and the bounds >= 1")
        self.horizon_ms = horizon_ms
        self.max_pending = max_pending
        self.max_held = max_held
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        # Records of every remembered prediction, in groups chosen by linear hashing of the id's
        # CRC-32: ``len(_groups) == _low + _split``; the records of one id keep their arrival order.
        self._groups: list[bytes] = [b""] * _MIN_GROUPS
        self._low = _MIN_GROUPS
        self._split = 0
        self._records = 0
        self._pending = 0
        self._ctx: list[tuple[str, str, str]] = []
        self._ctx_ids: dict[tuple[str, str, str], int] = {}
        self._shapes: list[_Shape] = []
        self._shape_ids: dict[tuple[tuple[str, ...], tuple[type, ...]], int] = {}
        self._held: dict[int, tuple[str, int, bool | int | float | str]] = {}  # seq -> (id, ts, label)
        self._held_seq = 0
        self._held_meta: dict[int, tuple[str, bool]] = {}  # seq -> (model_id, rerouted), if either is set
        self.orphans: list[OrphanLabel] = []  # given up since the last take_orphans()
        self._held_digests: dict[int, tuple[bytes, Any]] = {}  # seq -> (payload digest, source)
        self.duplicates: list[Duplicate] = []  # met since the last take_duplicates()
        self.evicted: list[ExpiredPrediction] = []  # pending predictions evicted since the last advance()
        self._pred_wm = _NEVER
        self._label_wm = _NEVER
        self._due: list[str] = []  # predictions that arrived after the labels watermark passed their expiry
        # While a caller checkpoints incrementally (None: nobody asked, so nothing is kept): the
        # id key and event time (:func:`_keyed_time`) of every record added since the last
        # take_changes() (a delta carries its current bytes), and a closing (:func:`_closing`) of
        # every record the chain held already that was closed since (its key, time, new state and
        # label digest).
        self._added: set[bytes] | None = None
        self._closings: list[bytes] = []
        self._no_store()
        self._rebuild_indexes()
        self._rebuild_small_indexes()

    def _rebuild_small_indexes(self) -> None:
        """Derived structures of the state outside the record table."""
        self._held_ids: dict[str, list[int]] = {}
        for seq, (pid, _, _) in self._held.items():
            self._held_ids.setdefault(pid, []).append(seq)
        self._held_heap = [(ts, seq) for seq, (_, ts, _) in self._held.items()]
        heapq.heapify(self._held_heap)
        self._ctx_ids = {ctx: i for i, ctx in enumerate(self._ctx)}
        self._shape_ids = {(s.keys, s.kinds): i for i, s in enumerate(self._shapes)}
        self._evict_key: int | None = None  # bucket whose pending entries _evict_queue holds
        self._evict_queue: list[tuple[int, str]] = []

    # -- public surface ---------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        return self._pending

    @property
    def held_count(self) -> int:
        return len(self._held)

    def earliest_held_label_ts(self) -> int | None:
        """Event time of the oldest label still waiting for its prediction (amortised O(log n))."""
        heap = self._held_heap
        while heap and heap[0][1] not in self._held:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def on_prediction(
        self,
        event: PredictionEvent,
        segment: str,
        rerouted: bool = False,
        digest: bytes | None = None,
        source: Any = None,
    ) -> JoinedOutcome | None:
        """``rerouted``: it reached this join through re-routing (reported in the outcome).

        ``digest``: :func:`payload_digest` of the record's payload (default: of the event's JSON);
        ``source`` is handed back in the :class:`Duplicate` if this prediction is one.
        """
        payload = None
        if digest is None:
            payload = event.model_dump_json().encode()
            digest = payload_digest(payload)
        reported = len(self.duplicates)
        ctx = (event.model_id, event.model_version, segment)
        outcomes, _ = self.on_predictions([event.prediction_id], [event.timestamp], [ctx], [event.prediction],
                                          [event.features], [digest], [source], rerouted)
        if payload is not None:
            self._legacy_resends(reported, "prediction", payload)
        return outcomes[0] if outcomes else None

    def on_predictions(
        self,
        prediction_ids: Sequence[str],
        timestamps: Sequence[int],
        contexts: Sequence[tuple[str, str, str]],
        predictions: Sequence[Prediction],
        features: Sequence[Mapping[str, Any]],
        digests: Sequence[bytes],
        sources: Sequence[Any],
        rerouted: bool = False,
        columns: tuple[Sequence[str], Sequence[Sequence[Any]], Sequence[FloatArray | None]] | None = None,
    ) -> tuple[list[JoinedOutcome], list[int]]:
        """:meth:`on_prediction` for each event of decoded columns, in order (a value per event;
        ``contexts``: (model id, model version, segment tags)): the outcomes, in order, and the
        positions of the events that were duplicate predictions. ``columns``: ``features`` as
        (names, a column per name, each all-float column as float64 or None), every event carrying
        every name: the features of a batch of one layout are then packed at once.

        >>> from driftline.operators.join import payload_digest
        >>> join = LabelJoin(horizon_ms=60_000, max_pending=10, max_held=10)
        >>> _ = join.on_label(LabelEvent(prediction_id="b", label=1, timestamp=2_000))
        >>> outcomes, duplicates = join.on_predictions(
        ...     ["a", "b", "a"], [1_000, 1_500, 1_200], [("m", "1", "")] * 3, [Prediction(value=1.0)] * 3,
        ...     [{"x": 0.5}] * 3, [payload_digest(p) for p in (b"a", b"b", b"a")], [None] * 3)
        >>> [(o.prediction_id, o.abs_error) for o in outcomes], duplicates, join.pending_count
        ([('b', 0.0)], [2], 1)
        """
        duplicates: list[int] = []
        outcomes: list[JoinedOutcome] = []
        encoded = None if columns is None else _packed_features(*columns)
        tails = _pending_tails(predictions)
        layout: _Layout | None = None
        known: int | None = None  # the layout's shape id
        packs: list[bytes] | list[None]
        if encoded is None:
            packs = [None] * len(tails)
        else:  # one layout: its shape id is looked up once (interned with its first pending record)
            layout, packs = encoded
            known = self._shape_ids.get(layout)
        keys, crcs = _keyed_crcs(prediction_ids)
        count = len(tails)
        if len(features) != count:
            raise ValueError("features: a map per prediction")
        if not len(prediction_ids) == len(timestamps) == len(contexts) == len(digests) == len(sources) \
                == count:
            raise ValueError("on_predictions: a value per prediction in every column")
        fast = native.NATIVE
        claimed: list[tuple[JoinedOutcome, bytes]] = []  # held labels' outcomes, features JSON to make
        if fast is None or encoded is None:
            self._add_predictions(0, count, prediction_ids, keys, crcs, timestamps, contexts, predictions,
                                  features, digests, sources, tails, packs, layout, known, rerouted, outcomes,
                                  duplicates, claimed)
            _features_json_of(claimed, layout)
            return outcomes, duplicates
        # New ids of the batch's known layout in C (_native.c) until a prediction of another case,
        # which the Python loop handles alone; the same steps, byte for byte, in the same order.
        pids, stamps, ctxs = list(prediction_ids), list(timestamps), list(contexts)
        digest_list = list(digests)
        i = 0
        while i < count:
            if self._through:  # every payload to the store as it comes: the Python loop, as before
                self._add_predictions(i, count, pids, keys, crcs, stamps, ctxs, predictions, features,
                                      digest_list, sources, tails, packs, layout, known, rerouted, outcomes,
                                      duplicates, claimed)
                break
            if known is not None and known != _NO_SHAPE:
                i = fast.add_pending(self, keys, crcs, pids, stamps, ctxs, digest_list, tails, packs, i,
                                        count, known, rerouted, _LOAD)
                if i == count:
                    break
            known = self._add_predictions(i, i + 1, pids, keys, crcs, stamps, ctxs, predictions, features,
                                          digest_list, sources, tails, packs, layout, known, rerouted,
                                          outcomes, duplicates, claimed)
            i += 1
        _features_json_of(claimed, layout)
        return outcomes, duplicates

    def _add_predictions(
        self,
        start: int,
        stop: int,
        prediction_ids: Sequence[str],
        keys: list[bytes],
        crcs: list[int],
        timestamps: Sequence[int],
        contexts: Sequence[tuple[str, str, str]],
        predictions: Sequence[Prediction],
        features: Sequence[Mapping[str, Any]],
        digests: Sequence[bytes],
        sources: Sequence[Any],
        tails: list[tuple[int, int, bytes]],
        packs: Sequence[bytes | None],
        layout: _Layout | None,
        known: int | None,
        rerouted: bool,
        outcomes: list[JoinedOutcome],
        duplicates: list[int],
        claimed: list[tuple[JoinedOutcome, bytes]],
    ) -> int | None:
        """:meth:`on_predictions` of the predictions ``start`` to ``stop`` in Python (``layout`` and
        ``packs``: the batch's features packed in one layout, if they are; ``known``: its shape id,
        if interned): outcomes and the positions of duplicates added to ``outcomes`` and
        ``duplicates`` (a held label's outcome of packed features also to ``claimed``, its features
        JSON still to make); the layout's shape id then."""
        horizon, encode = self.horizon_ms, self._encode
        groups, buckets, added, ctx_ids = self._groups, self._buckets, self._added, self._ctx_ids
        # (predictions and features read by index, where a held label claims one or a record is
        # encoded alone: the decoder's columns make an object per output or feature map only when read)
        for i in range(start, stop):
            pid, key, crc, ts, ctx = prediction_ids[i], keys[i], crcs[i], timestamps[i], contexts[i]
            digest, source, tail, packed = digests[i], sources[i], tails[i], packs[i]
            gid = crc & (self._low - 1)  # self._gid(crc), inline
            if gid < self._split:
                gid = crc & (2 * self._low - 1)
            group = self._groups[gid]
            # a C-level substring test first: most ids are new
            if key in group and self._duplicate_prediction(group, key, pid, ts, ctx, digest, source):
                duplicates.append(i)
                continue
            if self._held_ids:
                outcome = self._claimed(gid, key, crc, pid, ts, ctx, predictions, features, i, rerouted,
                                        digest, packed, claimed)
                if outcome is not None:
                    outcomes.append(outcome)
                    continue
            if packed is not None and known is None:
                # the batch's layout is new: interned with its first pending record (as _encode
                # does), so that every later one of the batch takes the inline path below
                known = self._shape_id(cast(_Layout, layout))
            if packed is None or known == _NO_SHAPE:
                record = encode(ts, ctx, features[i], key, crc, rerouted, digest, tail,
                                None if packed is None else (cast(_Layout, layout), packed, known))
            else:  # _encode of a batch's known layout, inline (a call per prediction)
                shape_id = known
                flags, label_len, output = tail
                ctx_id = ctx_ids.get(ctx)
                if ctx_id is None:
                    ctx_id = self._ctx_id(ctx)
                head = _PENDING_HEADS.get(len(key)) or _pending_head(len(key))
                features_bytes = packed
                record = head.pack(head.size + len(output) + len(features_bytes), crc, key, ts, _PENDING,
                                   digest, flags | _REROUTED if rerouted else flags, ctx_id, shape_id,
                                   label_len) + output + features_bytes
            bucket = ts // _BUCKET_MS
            if self._through:
                record = self._spill_record(record, ts)
            elif self._unspilled is not None and bucket not in self._unspilled:
                self._unspilled.add(bucket)
                heapq.heappush(self._unspilled_heap, bucket)
            # _add, inline
            if added is not None:  # _keyed_time(key, ts): how the record starts after its head
                added.add(record[_AT : _AT + len(key) + 8])
            groups[gid] += record
            self._records += 1
            self._estimate += len(record)
            crcs_at = buckets.get(bucket)
            if crcs_at is None:
                buckets[bucket] = crcs_at = array("I")
                bisect.insort(self._bucket_keys, bucket)
            crcs_at.append(crc)
            while self._records > _LOAD * len(groups):
                self._split_group()
            self._pending += 1
            if self._estimate > self._check_at:
                self._check_budget()
            if ts + horizon < self._label_wm:  # no label can still come: expire at the next advance
                self._due.append(pid)
            if self._evict_key is not None and bucket <= self._evict_key:
                self._evict_key = None
            while self._pending > self.max_pending:
                self._evict_oldest_pending()
        return known

    def _duplicate_prediction(
        self, group: bytes, key: bytes, pid: str, ts: int, ctx: tuple[str, str, str], digest: bytes,
        source: Any,
    ) -> bool:
        """Whether a prediction (id key ``key``, at ``ts``) is a duplicate of a record of ``group``;
        if so it is counted and reported."""
        at = _AT + len(key)
        for pos in _find(group, key):
            if ts <= _TS.unpack_from(group, pos + at)[0] + self.horizon_ms:
                self.counters["duplicate_predictions"] += 1
                first = group[pos + at + _DIGEST_AT : pos + at + _BODY]
                self.duplicates.append(Duplicate(
                    "prediction", pid, ts, first in (digest, UNKNOWN_DIGEST), first, digest, *ctx, source,
                ))
                return True
        return False

    def _claimed(
        self,
        gid: int,
        key: bytes,
        crc: int,
        pid: str,
        ts: int,
        ctx: tuple[str, str, str],
        predictions: Sequence[Prediction],
        features: Sequence[Mapping[str, Any]],
        i: int,
        rerouted: bool,
        digest: bytes,
        packed: bytes | None,
        claimed: list[tuple[JoinedOutcome, bytes]],
    ) -> JoinedOutcome | None:
        """The outcome of the new prediction ``i`` that a held label joins (its record added,
        joined), or None if none does. Its prediction and features are read only then (the
        decoder's columns make an object for an index read); with ``packed`` (its features encoded
        in the batch's layout) the outcome goes to ``claimed`` instead, its features' JSON left for
        :meth:`on_predictions` to make for the whole batch at once."""
        winner = self._claim_held(pid, ts, ctx)
        if winner is None:
            return None
        tail = _JOINED_TAIL.pack(self._ctx_id(ctx), winner[3])
        self._add(gid, crc, _closed(key, crc, ts, _JOINED, digest, tail), ts)
        label_ts, label, label_rerouted, _ = winner
        prediction = predictions[i]
        features_json = "" if packed is not None else features_to_json(features[i])
        outcome = _outcome(pid, ctx, ts, _predicted_text(prediction), prediction.score, prediction.value,
                           features_json, label_ts, normalise_label(label), _label_value(label))
        if packed is not None:
            claimed.append((outcome, packed))
        outcome.rerouted = (REROUTED_PREDICTION if rerouted else 0) | (
            REROUTED_LABEL if label_rerouted else 0)
        return outcome

    def on_label(
        self, event: LabelEvent, rerouted: bool = False, digest: bytes | None = None, source: Any = None
    ) -> JoinedOutcome | None:
        """``rerouted``: it reached this join through re-routing (reported in the outcome).

        ``digest`` and ``source`` as for :meth:`on_prediction`.
        """
        payload = None
        if digest is None:
            payload = event.model_dump_json().encode()
            digest = payload_digest(payload)
        reported = len(self.duplicates)
        joined: list[_Joined] = []
        key = _id_key(event.prediction_id)
        self._label(event.prediction_id, key, zlib.crc32(key), event.timestamp, event.label, event.model_id,
                    rerouted, digest, source, joined)
        if payload is not None:
            self._legacy_resends(reported, "label", payload)
        return _outcomes(joined, self._ctx, self._shapes, native.NATIVE)[0] if joined else None

    def on_labels(
        self,
        prediction_ids: Sequence[str],
        timestamps: Sequence[int],
        labels: Sequence[bool | int | float | str],
        model_ids: Sequence[str | None],
        digests: Sequence[bytes],
        sources: Sequence[Any],
        rerouted: bool = False,
    ) -> list[JoinedOutcome]:
        """:meth:`on_label` for each event of decoded columns, in order (a value per event): the
        outcomes, in order.

        >>> from driftline.operators.join import payload_digest
        >>> join = LabelJoin(horizon_ms=60_000, max_pending=10, max_held=10)
        >>> _ = join.on_prediction(PredictionEvent(prediction_id="a", model_id="m", timestamp=1_000,
        ...                                        prediction={"label": "yes"}), segment="")
        >>> outcomes = join.on_labels(["a", "a", "b"], [1_500, 1_600, 1_700], ["yes", "no", "no"], [None] * 3,
        ...                           [payload_digest(p) for p in (b"1", b"2", b"3")], [None] * 3)
        >>> [(o.prediction_id, o.correct) for o in outcomes], join.counters["duplicate_labels"]
        ([('a', 1)], 1)
        >>> join.held_count
        1
        """
        joined: list[_Joined] = []
        outcomes: list[JoinedOutcome] = []
        keys, crcs = _keyed_crcs(prediction_ids)
        count = len(keys)
        if not len(timestamps) == len(labels) == len(model_ids) == len(digests) == len(sources) == count:
            raise ValueError("on_labels: a value per label in every column")
        fast = native.NATIVE
        if fast is None:
            self._close_labels(0, count, prediction_ids, keys, crcs, timestamps, labels, model_ids, digests,
                               sources, rerouted, joined, outcomes)
            return outcomes + _outcomes(joined, self._ctx, self._shapes)
        # The common case in C (_native.c) until a label of another case, which the Python loop
        # handles alone; the same steps, byte for byte, in the same order.
        pids, stamps, values = list(prediction_ids), list(timestamps), list(labels)
        digest_list = list(digests)
        i = 0
        while i < count:
            if len(joined) == _OUTCOMES_AT_ONCE:
                outcomes += _outcomes(joined, self._ctx, self._shapes, fast)
                joined = []
            i, closed = fast.close_pending(
                self._groups, keys, crcs, stamps, digest_list, pids, values, i, count,
                _OUTCOMES_AT_ONCE - len(joined), self._low - 1, self._split, self.horizon_ms, self._added,
                self._store, rerouted, joined, self._closings)
            self._pending -= closed
            if i < count and len(joined) < _OUTCOMES_AT_ONCE:
                self._close_labels(i, i + 1, pids, keys, crcs, stamps, values, model_ids, digest_list,
                                   sources, rerouted, joined, outcomes)
                i += 1
        return outcomes + _outcomes(joined, self._ctx, self._shapes, fast)

    def _close_labels(
        self,
        start: int,
        stop: int,
        prediction_ids: Sequence[str],
        keys: list[bytes],
        crcs: list[int],
        timestamps: Sequence[int],
        labels: Sequence[bool | int | float | str],
        model_ids: Sequence[str | None],
        digests: Sequence[bytes],
        sources: Sequence[Any],
        rerouted: bool,
        joined: list[_Joined],
        outcomes: list[JoinedOutcome],
    ) -> None:
        """:meth:`on_labels` of the labels ``start`` to ``stop`` in Python: joined records added to
        ``joined``, whose outcomes are made into ``outcomes`` each :data:`_OUTCOMES_AT_ONCE`."""
        label = self._label
        # A label that joins a pending record, the common case, is handled here (as _label does,
        # inline, with the closed record spliced from the pending one's bytes); any other goes
        # through _label, which walks its group again.
        groups, store, added, horizon = self._groups, self._store, self._added, self.horizon_ms
        low, split = self._low - 1, self._split
        high = 2 * low + 1
        unpack_head, unpack_ts, joined_heads = _HEAD.unpack_from, _TS.unpack_from, _JOINED_HEADS
        for i in range(start, stop):
            pid, key, crc, ts = prediction_ids[i], keys[i], crcs[i], timestamps[i]
            value, model_id, digest, source = labels[i], model_ids[i], digests[i], sources[i]
            if len(joined) == _OUTCOMES_AT_ONCE:  # made while the records read are in the CPU's cache
                outcomes += _outcomes(joined, self._ctx, self._shapes, native.NATIVE)
                joined.clear()
            gid = crc & low  # self._gid(crc), inline
            if gid < split:
                gid = crc & high
            group = groups[gid]
            # The common case: the id's first record is pending and its interval holds the label.
            # The key's first bytes in the group are that record's if a record starts there (an
            # earlier record of the id would hold them earlier; a record's payload may hold them
            # too): found by a C-level search, checked by a walk over the records' lengths alone.
            at = _AT + len(key)
            found = group.find(key, _AT) - _AT
            pos = 0
            while pos < found:
                pos += unpack_head(group, pos)[0]
            if pos == found:
                length = unpack_head(group, pos)[0]
                pred_ts, state = unpack_ts(group, pos + at)
            if pos != found or state != _PENDING or not pred_ts <= ts <= pred_ts + horizon:
                # another case (none of the id, or the first record of the id closed or not holding
                # the label, or a payload holding the key first): _label walks the group's records
                label(pid, key, crc, ts, value, model_id, rerouted, digest, source, joined)
                continue
            self._pending -= 1
            end = pos + length
            body = pos + at + _BODY
            # the closed record: head, id key, time, state, payload digest, ctx id (as in the
            # pending record's _PRED), the label's digest (_closed with a _JOINED_TAIL)
            head = joined_heads.get(len(key)) or _joined_head(len(key))
            groups[gid] = b"".join((group[:pos], head.pack(head.size, crc, key, pred_ts, _JOINED,
                                                           group[body - DIGEST_SIZE : body],
                                                           group[body + 1 : body + 5], digest),
                                    group[end:]))
            if added is not None and group[pos + _AT : pos + at + 8] not in added:  # _note_closing, inline
                self._closings.append(_closing(key, pred_ts, _JOINED, digest))
            if group[body] & _SPILLED and store is not None:
                # the stub to the flags..label length, then the payload: all the outcome reads
                payload_at = body + _PRED.size
                record = group[pos:payload_at] + store.get(group[payload_at:end])
                joined.append((pid, record, at, len(record), ts, value, rerouted))
            else:
                joined.append((pid, group, pos + at, end, ts, value, rerouted))

    def _label(
        self,
        pid: str,
        key: bytes,
        crc: int,
        ts: int,
        label: bool | int | float | str,
        model_id: str | None,
        rerouted: bool,
        digest: bytes,
        source: Any,
        joined: list[_Joined],
    ) -> None:
        """:meth:`on_label` of an event's values (``key``: :func:`_id_key` of its id, ``crc`` that
        key's CRC-32); a label that joins adds its pending record to ``joined`` (:func:`_outcomes`
        makes the outcomes of a batch at once)."""
        horizon = self.horizon_ms
        gid = crc & (self._low - 1)  # self._gid(crc), inline
        if gid < self._split:
            gid = crc & (2 * self._low - 1)
        group = self._groups[gid]
        # The records of this id in arrival order (as _find, inline): the first whose interval
        # holds the label decides.
        pos, size, at = 0, len(group), _AT + len(key)
        seen: list[int] = []
        while pos < size:
            length = _HEAD.unpack_from(group, pos)[0]
            if group.startswith(key, pos + _AT):
                pred_ts, state = _TS.unpack_from(group, pos + at)
                if pred_ts <= ts <= pred_ts + horizon:
                    if state != _PENDING:
                        if state == _JOINED:
                            self.counters["duplicate_labels"] += 1
                            body = pos + at + _BODY
                            ctx_id, first = _JOINED_TAIL.unpack_from(group, body)
                            self._add_duplicate("label", pid, ts, first, digest, ctx_id, source)
                        else:  # closed: evicted, unless it expired (then the label is late: not fed)
                            evicted = pred_ts >= self._label_wm - horizon  # expiry closes older ones only
                            reason = "prediction_evicted" if evicted else "no_prediction"
                            self._orphan(pid, model_id or "", ts, reason, source)
                        return
                    self._pending -= 1
                    end = pos + length
                    body = pos + at + _BODY
                    tail = _JOINED_TAIL.pack(_PRED.unpack_from(group, body)[1], digest)
                    closed = _closed(key, crc, pred_ts, _JOINED, group[body - DIGEST_SIZE : body], tail)
                    self._groups[gid] = b"".join((group[:pos], closed, group[end:]))
                    self._note_closing(key, pred_ts, _JOINED, digest)
                    store = self._store
                    if group[body] & _SPILLED and store is not None:
                        # the stub to the flags..label length, then the payload: all the outcome reads
                        payload_at = body + _PRED.size
                        record = group[pos:payload_at] + store.get(group[payload_at:end])
                        joined.append((pid, record, at, len(record), ts, label, rerouted))
                    else:
                        joined.append((pid, group, pos + at, end, ts, label, rerouted))
                    return
                seen.append(pred_ts)
            pos += length
        if seen:
            if any(pred_ts > ts for pred_ts in seen):
                self.counters["labels_before_prediction"] += 1
            else:
                self.counters["labels_beyond_horizon"] += 1
        if ts < self._pred_wm:  # its prediction could only come late now
            self._orphan(pid, model_id or "", ts, "no_prediction", source)
            return
        seq = self._held_seq
        self._held_seq += 1
        self._held[seq] = (pid, ts, label)
        if model_id or rerouted:
            self._held_meta[seq] = (model_id or "", rerouted)
        self._held_digests[seq] = (digest, source)
        self._held_ids.setdefault(pid, []).append(seq)
        heapq.heappush(self._held_heap, (ts, seq))
        while len(self._held) > self.max_held:
            oldest_ts, oldest = heapq.heappop(self._held_heap)
            if oldest in self._held:
                self.orphans.append(self._held_orphan(oldest, oldest_ts, "evicted"))
                self._drop_held(oldest)
                self.counters["evicted_held"] += 1

    def take_duplicates(self) -> list[Duplicate]:
        """The duplicates met since the last call, in the order they were met."""
        duplicates, self.duplicates = self.duplicates, []
        return duplicates

    def _add_duplicate(
        self, kind: str, pid: str, ts: int, first: bytes, digest: bytes, ctx_id: int, source: Any
    ) -> None:
        model_id, model_version, segment = ("", "", "") if ctx_id == _NO_CTX else self._ctx[ctx_id]
        exact = first in (digest, UNKNOWN_DIGEST)
        self.duplicates.append(
            Duplicate(kind, pid, ts, exact, first, digest, model_id, model_version, segment, source)
        )

    def _legacy_resends(self, reported: int, kind: str, payload: bytes) -> None:
        """The event whose payload is ``payload`` digested by :meth:`on_prediction` or :meth:`on_label`:
        its duplicate (of ``kind``, among those reported after the first ``reported``) is exact after
        all where the first record's digest is :func:`legacy_resend`'s of that payload."""
        for duplicate in self.duplicates[reported:]:
            if duplicate.kind == kind and not duplicate.exact:
                duplicate.exact = legacy_resend(duplicate.first_digest, payload)

    def take_orphans(self) -> list[OrphanLabel]:
        """The labels given up since the last call, in the order they were given up."""
        orphans, self.orphans = self.orphans, []
        return orphans

    def _orphan(self, pid: str, model_id: str, ts: int, reason: str, source: Any) -> None:
        self.counters["orphan_labels"] += 1
        self.orphans.append(OrphanLabel(pid, model_id, ts, reason, *_record_position(source)))

    def _held_orphan(self, seq: int, ts: int, reason: str) -> OrphanLabel:
        source = self._held_digests.get(seq, (UNKNOWN_DIGEST, None))[1]
        return OrphanLabel(self._held[seq][0], self._held_meta.get(seq, ("", False))[0], ts, reason,
                           *_record_position(source))

    def advance(self, pred_watermark_ms: int, label_watermark_ms: int) -> list[ExpiredPrediction]:
        """Apply both watermarks (they never move back): orphan, expire and forget state."""
        self._pred_wm = pred_wm = max(self._pred_wm, pred_watermark_ms)
        old_label_wm = self._label_wm
        self._label_wm = label_wm = max(old_label_wm, label_watermark_ms)
        heap = self._held_heap
        while heap and heap[0][0] < pred_wm:
            ts, seq = heapq.heappop(heap)
            if seq in self._held:
                self.orphans.append(self._held_orphan(seq, ts, "no_prediction"))
                self.counters["orphan_labels"] += 1
                self._drop_held(seq)
        if len(heap) > 2 * len(self._held) + 64:  # joined labels left stale entries behind
            self._held_heap = [(ts, seq) for ts, seq in heap if seq in self._held]
            heapq.heapify(self._held_heap)

        # Every pending prediction with ts < cut expires now. They are in the buckets from the old
        # cut on (older ones expired before) or, if they came after their expiry, in _due; closing
        # every pending record under the cut in the groups those hold is the same thing.
        expired: list[ExpiredPrediction] = []
        cut, old_cut = label_wm - self.horizon_ms, old_label_wm - self.horizon_ms
        gids: set[int] = {self._gid(zlib.crc32(_id_key(pid))) for pid in self._due}
        self._due = []
        if cut > old_cut:
            keys = self._bucket_keys
            for key in keys[bisect.bisect_left(keys, old_cut // _BUCKET_MS) :]:
                if key * _BUCKET_MS >= cut:
                    break
                gids.update(map(self._gid, self._buckets[key]))
        for gid in gids:
            self._expire(gid, cut, expired)
        if self._store is not None:  # every prediction older than the cut has expired or joined
            self._store.drop_before(cut)
            self._store.flush()
        self._forget(min(pred_wm, label_wm) - self.horizon_ms)
        expired += self.evicted
        self.evicted = []
        expired.sort(key=lambda e: (e.expired_at, e.prediction_id))
        return expired

    # -- checkpointing ------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        store = self._store if self._pinned is None else self._pinned
        groups = _WholeGroups(self._groups, None if store is None else store.get, one_by_one=self._copy)
        # The time index too: rebuilding it walks every record in Python (~2 us each), longer
        # than reading it (4 bytes a record).
        return {**self._outside_table(), "groups": groups, "low": self._low, "split": self._split,
                "buckets": self._buckets}

    def base_copy(self) -> LabelJoin:
        """A copy of this join as it is now, to pickle a base from (in another thread too) while
        this join goes on: it pickles as this join would now. Its record table is a copy of the
        list of groups (each an immutable ``bytes``: pointers, not records) and of the time
        index's arrays; the state outside the table (small) is copied by pickling it. A spilling
        join's store is pinned (:meth:`PendingStore.pin`): the copy reads its payloads back from
        the segments as they are now, which the store keeps until :meth:`release_copy`. The copy's
        groups are pickled one by one through Python (:class:`_WholeGroups`), so the pickling
        thread lets this join's thread run. The changes tracked so far are forgotten: the next
        delta follows the base.

        >>> from driftline.schemas.events import PredictionEvent
        >>> join = LabelJoin(horizon_ms=60_000, max_pending=10, max_held=10)
        >>> def predict(pid: str, ts: int) -> None:
        ...     _ = join.on_prediction(PredictionEvent(prediction_id=pid, model_id="m", timestamp=ts,
        ...                                            prediction=0.5), segment="")
        >>> predict("p1", 1_000)
        >>> before = pickle.loads(pickle.dumps(join))
        >>> copy = join.base_copy()
        >>> predict("p2", 2_000)
        >>> restored = pickle.loads(pickle.dumps(copy))
        >>> restored._groups == before._groups, restored.pending_count, join.pending_count
        (True, 1, 2)
        >>> copy.release_copy()
        """
        pinned = None if self._store is None else self._store.pin()
        state = pickle.loads(pickle.dumps(self._outside_table(), pickle.HIGHEST_PROTOCOL))
        copy = LabelJoin.__new__(LabelJoin)
        copy.__setstate__({**state, "groups": list(self._groups), "low": self._low, "split": self._split,
                           "buckets": {second: crcs[:] for second, crcs in self._buckets.items()}})
        copy._pinned, copy._copy = pinned, True
        self.reset_changes()
        return copy

    def release_copy(self) -> None:
        """This copy (:meth:`base_copy`) was pickled: its store may delete what it kept since."""
        if self._pinned is not None:
            self._pinned.release()
            self._pinned = None

    def _outside_table(self) -> dict[str, Any]:
        """The state but the record table (small: counters, held labels, interned names, watermarks)."""
        return {
            "horizon_ms": self.horizon_ms,
            "max_pending": self.max_pending,
            "max_held": self.max_held,
            "counters": self.counters,
            "record_count": self._records,
            "pending": self._pending,
            "ctx": self._ctx,
            "shapes": [(s.keys, s.kinds) for s in self._shapes],
            "held": self._held,
            "held_seq": self._held_seq,
            "held_meta": self._held_meta,
            "held_digests": self._held_digests,
            "duplicates": self.duplicates,
            "record_format": _RECORD_FORMAT,
            "orphans": self.orphans,
            "evicted": self.evicted,
            "pred_wm": self._pred_wm,
            "label_wm": self._label_wm,
            "due": self._due,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.horizon_ms = state["horizon_ms"]
        self.max_pending = state["max_pending"]
        self.max_held = state["max_held"]
        self.counters = state["counters"]
        groups = state["groups"]
        restored = groups if isinstance(groups, _RestoredGroups) else None  # absent before format 4
        if isinstance(groups, _WholeGroups):  # a state from __getstate__, not unpickled
            groups = list(groups)
        self._groups = groups if restored is None else restored.groups
        if state.get("record_format", 1) == 1:  # a checkpoint from before payload digests
            self._groups = [_upgrade_v1_group(group) for group in self._groups]
        self._held_digests = state.get("held_digests", {})
        self.duplicates = state.get("duplicates", [])
        self._low = state["low"]
        self._split = state["split"]
        self._records = state["record_count"]
        self._pending = state["pending"]
        self._ctx = state["ctx"]
        self._shapes = [_Shape(keys, kinds) for keys, kinds in state["shapes"]]
        self._held = state["held"]
        self._held_seq = state["held_seq"]
        self._held_meta = state.get("held_meta", {})  # absent in checkpoints before re-routing
        self.orphans = state.get("orphans", [])
        self.evicted = state.get("evicted", [])  # absent in checkpoints before evictions were reported
        self._pred_wm = state["pred_wm"]
        self._label_wm = state["label_wm"]
        self._due = state["due"]
        self._added, self._closings = None, []
        self._no_store()
        if restored is not None and restored.store is not None:
            budget = _RESTORE_BUDGET.get()
            assert budget is not None
            self._adopt_store(restored.store, budget.budget)
        buckets = state.get("buckets")  # absent in checkpoints before it was kept
        if buckets is None or state.get("record_format", 1) == 1:
            self._rebuild_indexes()
            self._rebuild_small_indexes()
        else:
            self._estimate = sum(map(len, self._groups))
            self._buckets = buckets
            self._bucket_keys = sorted(buckets)
            self._rebuild_small_indexes()

    # -- incremental checkpoints --------------------------------------------------------------

    def take_changes(self) -> JoinChanges:
        """What changed since tracking started or the last call (see :class:`JoinChanges`).

        >>> import pickle
        >>> from driftline.schemas.events import LabelEvent, PredictionEvent
        >>> join = LabelJoin(horizon_ms=60_000, max_pending=10, max_held=10)
        >>> join.track_changes()
        >>> _ = join.on_prediction(PredictionEvent(prediction_id="p1", model_id="m", timestamp=1_000,
        ...                                        prediction=0.5), segment="")
        >>> base = pickle.dumps(join)
        >>> label = LabelEvent(prediction_id="p1", label="1", timestamp=2_000)
        >>> _ = join.reset_changes(), join.on_label(label)
        >>> changes = join.take_changes()
        >>> changes.records, len(changes.closings)  # p1 was in the base: its closing alone
        (b'', 21)
        >>> restored = pickle.loads(base)
        >>> restored.apply_changes(changes)
        >>> restored.pending_count, restored.on_label(label)
        (0, None)
        >>> [d.exact for d in restored.take_duplicates()]
        [True]
        """
        closings, fast = self._closings, native.NATIVE
        # one id's records in event-time order (their arrival order), each located in its group: in
        # C where built (take_changes ~1.0 against ~6.7 CPU-us a record added: most of a delta's cost)
        made = None if fast is None else fast.current_records(self._groups, self._low - 1, self._split,
                                                               self._added or ())
        if made is None:
            records, gone = self.current_records(self.added_keys())
        else:
            records, gone = made
            if self._store is not None:  # spilled payloads read back, as current_records does
                records = list(map(self._whole, records))
        if self._added is not None:
            self._added, self._closings = set(), []
        return JoinChanges(b"".join(records), gone, self._outside_table(), b"".join(closings))

    def apply_changes(self, changes: JoinChanges) -> None:
        """Bring this join (restored from the checkpoint ``changes`` follows) to the state
        ``changes`` was taken in; ValueError if the result disagrees with the counts it recorded."""
        # first: a record closed, forgotten and added again in one interval comes whole after it
        self._apply_closings(getattr(changes, "closings", b""))  # absent before delta format 5
        stub = self._store is not None and self._unspilled is not None  # restored under a budget
        for records in _record_pieces(changes.records, APPLY_PIECE_BYTES):  # as whole, in bounded memory
            starts = _record_starts(records)
            if stub:  # pending records as stubs, so no second needs walking for whole ones after
                assert self._store is not None
                ends = np.array([len(records)])
                records = _stub_records(records, np.array(starts, np.int64), ends, self._store)[0]
                starts = _record_starts(records)
            self._put_records(records, starts)
        for key, ts in changes.gone:
            self._put(zlib.crc32(key), key, ts, None)
        state = changes.state
        for name in ("horizon_ms", "max_pending", "max_held", "counters", "duplicates", "orphans"):
            setattr(self, name, state[name])
        self.evicted = state.get("evicted", [])
        self._ctx = state["ctx"]
        self._shapes = [_Shape(keys, kinds) for keys, kinds in state["shapes"]]
        self._held, self._held_seq = state["held"], state["held_seq"]
        self._held_meta, self._held_digests = state["held_meta"], state["held_digests"]
        self._pred_wm, self._label_wm, self._due = state["pred_wm"], state["label_wm"], state["due"]
        self._rebuild_small_indexes()
        # Records forgotten since the previous checkpoint: forgetting depends on the cut alone.
        self._forget(min(self._pred_wm, self._label_wm) - self.horizon_ms)
        if not stub:
            self._unspilled = self._spilled_key = None  # the records put back are whole, in any second
        if self._estimate > self._check_at:
            self._check_budget()
        expected = (state["record_count"], state["pending"])
        if (self._records, self._pending) != expected:
            raise ValueError(f"join changes do not apply: {self._records} records, {self._pending} pending "
                             f"after applying them, the checkpoint recorded {expected[0]} and {expected[1]}")

    def _forget(self, cut: int) -> bool:
        """:meth:`RecordTable._forget`; the eviction queue is found again after (its second may be gone)."""
        forgot = super()._forget(cut)
        if forgot:
            self._evict_key, self._evict_queue = None, []
        return forgot

    # -- internals ----------------------------------------------------------------------------

    def _ctx_id(self, ctx: tuple[str, str, str]) -> int:
        """The interned id of a (model, version, segment) context."""
        ctx_id = self._ctx_ids.get(ctx)
        if ctx_id is None:
            ctx_id = self._ctx_ids[ctx] = len(self._ctx)
            self._ctx.append(ctx)
        return ctx_id

    def _encode(
        self,
        ts: int,
        ctx: tuple[str, str, str],
        features: Mapping[str, Any],
        key: bytes,
        crc: int,
        rerouted: bool,
        digest: bytes,
        tail: tuple[int, int, bytes],
        encoded: tuple[_Layout, bytes, int | None] | None = None,
    ) -> bytes:
        """The record of a pending prediction whose id key is ``key`` (hash ``crc``); ``tail``:
        :func:`_pending_tail` of its prediction; ``encoded``: its features' layout, their encoding in
        that layout and the layout's shape id if known, when the caller has them."""
        if encoded is None:
            values = tuple(features.values())
            shape_id = self._shape_id((tuple(features), tuple(map(type, values))))
        else:
            layout, packed, known = encoded
            shape_id = self._shape_id(layout) if known is None else known
        if shape_id == _NO_SHAPE:
            packed = features_to_json(features).encode()
        elif encoded is None:
            packed = self._shapes[shape_id].encode(values)
        flags, label_len, prediction = tail
        body = b"".join((key, _TS.pack(ts, _PENDING), digest,
                         _PRED.pack(flags | _REROUTED if rerouted else flags, self._ctx_id(ctx), shape_id,
                                    label_len),
                         prediction, packed))
        return _HEAD.pack(_AT + len(body), crc) + body

    def _shape_id(self, layout: _Layout) -> int:
        """The interned id of a feature layout (:data:`_NO_SHAPE` once :data:`_MAX_SHAPES` are)."""
        shape_id = self._shape_ids.get(layout)
        if shape_id is None:
            if len(self._shapes) >= _MAX_SHAPES:
                return _NO_SHAPE
            shape_id = self._shape_ids[layout] = len(self._shapes)
            self._shapes.append(_Shape(*layout))
        return shape_id

    def _claim_held(
        self, pid: str, pred_ts: int, ctx: tuple[str, str, str]
    ) -> tuple[int, bool | int | float | str, bool, bytes] | None:
        """The first held label (in label-log order) inside the interval, with its digest; later
        ones are duplicates (of the prediction whose context is ``ctx``)."""
        seqs = self._held_ids.get(pid)
        if not seqs:
            return None
        winner = None
        for seq in list(seqs):
            _, ts, label = self._held[seq]
            if pred_ts <= ts <= pred_ts + self.horizon_ms:
                digest, source = self._held_digests.get(seq, (UNKNOWN_DIGEST, None))
                if winner is None:
                    winner = (ts, label, self._held_meta.get(seq, ("", False))[1], digest)
                else:
                    self.counters["duplicate_labels"] += 1
                    self._add_duplicate("label", pid, ts, winner[3], digest, self._ctx_id(ctx), source)
                self._drop_held(seq)
        return winner

    def _drop_held(self, seq: int) -> None:
        pid = self._held.pop(seq)[0]
        self._held_meta.pop(seq, None)
        self._held_digests.pop(seq, None)
        seqs = self._held_ids[pid]
        seqs.remove(seq)
        if not seqs:
            del self._held_ids[pid]

    def _close(self, pid: str, pred_ts: int) -> tuple[str, str, str] | None:
        """Close the pending record of ``pid`` at ``pred_ts``; its (model, version, segment) if
        there was one."""
        key = _id_key(pid)
        crc = zlib.crc32(key)
        gid = self._gid(crc)
        group = self._groups[gid]
        at = _AT + len(key)
        for pos in _find(group, key):
            ts, state = _TS.unpack_from(group, pos + at)
            if ts == pred_ts and state == _PENDING:
                end = pos + _HEAD.unpack_from(group, pos)[0]
                digest = group[pos + at + _DIGEST_AT : pos + at + _BODY]
                closed = _closed(key, crc, ts, _CLOSED, digest)
                self._groups[gid] = b"".join((group[:pos], closed, group[end:]))
                self._note_closing(key, ts, _CLOSED)
                self._pending -= 1
                ctx: tuple[str, str, str] = self._ctx[_PRED.unpack_from(group, pos + at + _BODY)[1]]
                return ctx
        return None

    def _expire(self, gid: int, cut: int, out: list[ExpiredPrediction]) -> None:
        """Close every pending record of group ``gid`` older than ``cut``, as expired."""
        group = self._groups[gid]
        parts: list[bytes] = []
        kept = 0
        for pos, end, klen in _walk(group):
            at = pos + _AT + klen
            pred_ts, state = _TS.unpack_from(group, at)
            if state != _PENDING or pred_ts >= cut:
                continue
            key = group[pos + _AT : at]
            digest = group[at + _DIGEST_AT : at + _BODY]
            crc = _HEAD.unpack_from(group, pos)[1]
            parts += (group[kept:pos], _closed(key, crc, pred_ts, _CLOSED, digest))
            self._note_closing(key, pred_ts, _CLOSED)
            kept = end
            self._pending -= 1
            model_id, model_version, segment = self._ctx[_PRED.unpack_from(group, at + _BODY)[1]]
            expired_at = pred_ts + self.horizon_ms
            out.append(ExpiredPrediction(_pid(key), model_id, model_version, segment, pred_ts, expired_at))
        if parts:
            parts.append(group[kept:])
            self._groups[gid] = b"".join(parts)

    def _evict_oldest_pending(self) -> None:
        while True:
            if self._evict_key is None or not self._evict_queue:
                self._fill_evict_queue()
            ts, pid = self._evict_queue.pop()
            ctx = self._close(pid, ts)
            if ctx is not None:
                self.counters["evicted_pending"] += 1
                self.evicted.append(ExpiredPrediction(pid, *ctx, ts, ts + self.horizon_ms, "evicted"))
                return

    def _fill_evict_queue(self) -> None:
        """Pending entries of the oldest bucket holding any, newest first (popped from the end)."""
        start = 0 if self._evict_key is None else bisect.bisect_right(self._bucket_keys, self._evict_key)
        for key in self._bucket_keys[start:]:
            queue = []
            for gid in set(map(self._gid, self._buckets[key])):
                group = self._groups[gid]
                for pos, _, klen in _walk(group):
                    at = pos + _AT + klen
                    ts, state = _TS.unpack_from(group, at)
                    if state == _PENDING and ts // _BUCKET_MS == key:
                        queue.append((ts, _pid(group[pos + _AT : at])))
            if queue:
                queue.sort(reverse=True)
                self._evict_key, self._evict_queue = key, queue
                return
        raise AssertionError("pending count is positive but no pending record was found")


__test__ = {"LabelJoin": LabelJoin}  # its methods' doctests: the class names the package as its module


def _features_json_of(claimed: list[tuple[JoinedOutcome, bytes]], layout: _Layout | None) -> None:
    """Fill in the features JSON of held labels' outcomes from their features packed in ``layout``,
    all at once (:meth:`_Shape.jsons`: the text :func:`features_to_json` makes of each one's map)."""
    if claimed:
        texts = shape_of(cast(_Layout, layout)).jsons([packed for _, packed in claimed])
        for (outcome, _), text in zip(claimed, texts, strict=True):
            outcome.features_json = text
