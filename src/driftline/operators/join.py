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
- **Held labels** wait for their prediction until ``pred_watermark > label_ts`` and are then
  ``orphan_labels``. A label matching an evicted prediction is an orphan too.
- **Expiry**: a pending prediction is expired (unlabeled) once ``label_watermark > pred_ts +
  horizon_ms``, with ``expired_at = pred_ts + horizon_ms``; its id is forgotten once both watermarks
  passed that time (it is still needed to recognise duplicate predictions and labels until then).

Not interleaving-independent, by nature: the bounds. When ``max_pending``/``max_held`` is hit the
oldest entry (smallest event time) is evicted and counted; how full the state is depends on how far
one topic runs ahead of the other. ``labels_beyond_horizon`` and ``labels_before_prediction`` are
diagnostics: counted when such a label arrives while its prediction is still remembered; the label
is also counted in ``orphan_labels`` when it is finally given up.

Pending predictions are stored as one packed ``bytes`` record each (features as packed doubles plus
the non-float values as JSON, their names interned per feature layout), so a shard can hold
millions of them; ``bench/bench_join_state.py`` measures the cost.

>>> from driftline.schemas.events import LabelEvent, PredictionEvent
>>> join = LabelJoin(horizon_ms=60_000, max_pending=1000, max_held=1000)
>>> pred = PredictionEvent(prediction_id="p1", model_id="m", timestamp=1_000,
...                        features={"x": 0.5, "c": "a"}, prediction={"label": "yes"})
>>> join.on_prediction(pred, segment="") is None, join.pending_count
(True, 1)
>>> out = join.on_label(LabelEvent(prediction_id="p1", label="yes", timestamp=4_000))
>>> out.label_delay_ms, out.correct, out.features_json
(3000, 1, '{"x":0.5,"c":"a"}')
>>> late = PredictionEvent(prediction_id="p2", model_id="m", timestamp=2_000, prediction=0.3)
>>> join.on_prediction(late, segment="region=eu")
>>> [(e.prediction_id, e.segment, e.expired_at) for e in join.advance(70_000, label_watermark_ms=62_001)]
[('p2', 'region=eu', 62000)]
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from driftline.schemas.events import LabelEvent, PredictionEvent

COUNTER_NAMES = (
    "duplicate_predictions",
    "duplicate_labels",
    "orphan_labels",
    "labels_beyond_horizon",
    "labels_before_prediction",
    "evicted_pending",
    "evicted_held",
)

_BUCKET_MS = 1000
"""Time index granularity: expiry scans at most one partially expired bucket per advance."""
_MAX_SHAPES = 4096
"""Feature layouts interned; beyond this (e.g. free-form feature names) features are kept as JSON."""
_NO_SHAPE = 0xFFFFFFFF
_NO_LABEL = 0xFFFFFFFF
_NEVER = -(2**62)

_PENDING, _JOINED, _CLOSED = 0, 1, 2
# ts, state | ctx id, shape id, score, value (NaN = absent: both are finite when present), label len
_HEAD = struct.Struct("<qB")
_FULL = struct.Struct("<qBIIddI")
_NAN = math.nan
_BIGINT_JSON = b"!"  # marks non-float values that orjson cannot encode (ints beyond 64 bits)


@dataclass(slots=True)
class JoinedOutcome:
    """A prediction with its label: one row of the ``outcomes`` table."""

    prediction_id: str
    model_id: str
    model_version: str
    segment: str
    prediction_time: int
    label_time: int
    label_delay_ms: int
    predicted_label: str
    predicted_score: float | None
    predicted_value: float | None
    label: str
    label_value: float | None
    correct: int | None
    abs_error: float | None
    features_json: str


@dataclass(slots=True)
class ExpiredPrediction:
    """A prediction that got no label within the horizon (bucketed at ``expired_at``)."""

    prediction_id: str
    model_id: str
    model_version: str
    segment: str
    prediction_time: int
    expired_at: int


class _Shape:
    """One feature layout: names in order and which positions hold floats."""

    __slots__ = ("float_pos", "floats", "keys", "kinds", "other_pos")

    def __init__(self, keys: tuple[str, ...], kinds: tuple[type, ...]) -> None:
        self.keys = keys
        self.kinds = kinds
        self.float_pos = tuple(i for i, kind in enumerate(kinds) if kind is float)
        self.other_pos = tuple(i for i, kind in enumerate(kinds) if kind is not float)
        self.floats = struct.Struct(f"<{len(self.float_pos)}d")

    def encode(self, values: tuple[Any, ...]) -> bytes:
        packed = self.floats.pack(*[values[i] for i in self.float_pos])
        if not self.other_pos:
            return packed
        others = [values[i] for i in self.other_pos]
        try:
            return packed + orjson.dumps(others)
        except TypeError:
            text = json.dumps(others, separators=(",", ":"), ensure_ascii=False)
            return packed + _BIGINT_JSON + text.encode()

    def decode(self, data: bytes, offset: int) -> dict[str, Any]:
        values: list[Any] = [None] * len(self.keys)
        for pos, value in zip(self.float_pos, self.floats.unpack_from(data, offset), strict=True):
            values[pos] = value
        if self.other_pos:
            rest = data[offset + self.floats.size :]
            others = json.loads(rest[1:]) if rest[:1] == _BIGINT_JSON else orjson.loads(rest)
            for pos, value in zip(self.other_pos, others, strict=True):
                values[pos] = value
        return dict(zip(self.keys, values, strict=True))


def features_to_json(features: Mapping[str, Any]) -> str:
    """Features as compact JSON; NaN/inf become null (JSON has no such numbers).

    >>> features_to_json({"a": float("nan"), "b": 2**70, "c": True})
    '{"a":null,"b":1180591620717411303424,"c":true}'
    """
    try:
        return orjson.dumps(features).decode()
    except TypeError:  # an int beyond 64 bits: the standard library encodes it exactly
        clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in features.items()}
        return json.dumps(clean, separators=(",", ":"), ensure_ascii=False)


def normalise_label(value: bool | int | float | str) -> str:
    """The text form labels are compared in: ``True`` -> ``"true"``, ``1.0`` -> ``"1"``.

    >>> [normalise_label(v) for v in (True, 1, 1.0, 0.25, "Yes")]
    ['true', '1', '1', '0.25', 'Yes']
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return value


def _label_value(value: bool | int | float | str) -> float | None:
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


# A score-only prediction can be judged against a binary label: its vocabulary gives the classes.
_BINARY = {"1": ("1", "0"), "0": ("1", "0"), "true": ("true", "false"), "false": ("true", "false")}


def _predicted_text(event: PredictionEvent) -> str | None:
    prediction = event.prediction
    if prediction.label is not None:
        return normalise_label(prediction.label)
    if prediction.probabilities:
        probabilities = prediction.probabilities
        return max(probabilities, key=probabilities.__getitem__)  # first of equal maxima
    return None


class LabelJoin:
    """Joins one shard's predictions with their labels in event time (see the module docstring).

    ``advance`` returns the predictions that expired unlabeled, sorted by
    ``(expired_at, prediction_id)``. ``counters`` maps each name of :data:`COUNTER_NAMES` to a count.
    """

    def __init__(self, horizon_ms: int, max_pending: int, max_held: int) -> None:
        if horizon_ms < 0 or max_pending < 1 or max_held < 1:
            raise ValueError("horizon_ms must be >= 0 and the bounds >= 1")
        self.horizon_ms = horizon_ms
        self.max_pending = max_pending
        self.max_held = max_held
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        # prediction id -> packed record(s); a list only when an id is reused after its horizon
        self._records: dict[str, bytes | list[bytes]] = {}
        self._pending = 0
        self._ctx: list[tuple[str, str, str]] = []
        self._ctx_ids: dict[tuple[str, str, str], int] = {}
        self._shapes: list[_Shape] = []
        self._shape_ids: dict[tuple[tuple[str, ...], tuple[type, ...]], int] = {}
        self._held: dict[int, tuple[str, int, bool | int | float | str]] = {}  # seq -> (id, ts, label)
        self._held_seq = 0
        self._pred_wm = _NEVER
        self._label_wm = _NEVER
        self._due: list[str] = []  # predictions that arrived after the labels watermark passed their expiry
        self._rebuild_indexes()

    def _rebuild_indexes(self) -> None:
        """Derived structures: rebuilt from the records rather than checkpointed."""
        self._buckets: dict[int, list[str]] = {}
        for pid, stored in self._records.items():
            for blob in _blobs(stored):
                self._buckets.setdefault(_HEAD.unpack_from(blob)[0] // _BUCKET_MS, []).append(pid)
        self._bucket_keys = sorted(self._buckets)
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

    def on_prediction(self, event: PredictionEvent, segment: str) -> JoinedOutcome | None:
        pid, ts, horizon = event.prediction_id, event.timestamp, self.horizon_ms
        for blob in _blobs(self._records.get(pid)):
            if ts <= _HEAD.unpack_from(blob)[0] + horizon:
                self.counters["duplicate_predictions"] += 1
                return None
        winner = self._claim_held(pid, ts)
        if winner is not None:
            self._store(pid, _HEAD.pack(ts, _JOINED))
            label_ts, label = winner
            ctx = (event.model_id, event.model_version, segment)
            score, value = event.prediction.score, event.prediction.value
            features_json = features_to_json(event.features)
            text = _predicted_text(event)
            return _outcome(pid, ctx, ts, text, score, value, features_json, label_ts, label)
        self._store(pid, self._encode(event, segment))
        self._pending += 1
        if ts + horizon < self._label_wm:  # no label can still come: expire at the next advance
            self._due.append(pid)
        key = ts // _BUCKET_MS
        if self._evict_key is not None and key <= self._evict_key:
            self._evict_key = None
        while self._pending > self.max_pending:
            self._evict_oldest_pending()
        return None

    def on_label(self, event: LabelEvent) -> JoinedOutcome | None:
        pid, ts, horizon = event.prediction_id, event.timestamp, self.horizon_ms
        stored = self._records.get(pid)
        if stored is not None:
            blobs = stored if isinstance(stored, list) else [stored]
            for i, blob in enumerate(blobs):
                pred_ts, state = _HEAD.unpack_from(blob)
                if not pred_ts <= ts <= pred_ts + horizon:
                    continue
                if state == _PENDING:
                    self._pending -= 1
                    blobs[i] = _HEAD.pack(pred_ts, _JOINED)
                    self._records[pid] = blobs if len(blobs) > 1 else blobs[0]
                    return self._outcome_from_blob(pid, blob, ts, event.label)
                self.counters["duplicate_labels" if state == _JOINED else "orphan_labels"] += 1
                return None
            if any(_HEAD.unpack_from(blob)[0] > ts for blob in blobs):
                self.counters["labels_before_prediction"] += 1
            else:
                self.counters["labels_beyond_horizon"] += 1
        if ts < self._pred_wm:  # its prediction could only come late now
            self.counters["orphan_labels"] += 1
            return None
        seq = self._held_seq
        self._held_seq += 1
        self._held[seq] = (pid, ts, event.label)
        self._held_ids.setdefault(pid, []).append(seq)
        heapq.heappush(self._held_heap, (ts, seq))
        while len(self._held) > self.max_held:
            _, oldest = heapq.heappop(self._held_heap)
            if oldest in self._held:
                self._drop_held(oldest)
                self.counters["evicted_held"] += 1
        return None

    def advance(self, pred_watermark_ms: int, label_watermark_ms: int) -> list[ExpiredPrediction]:
        """Apply both watermarks (they never move back): orphan, expire and forget state."""
        self._pred_wm = pred_wm = max(self._pred_wm, pred_watermark_ms)
        old_label_wm = self._label_wm
        self._label_wm = label_wm = max(old_label_wm, label_watermark_ms)
        heap = self._held_heap
        while heap and heap[0][0] < pred_wm:
            _, seq = heapq.heappop(heap)
            if seq in self._held:
                self._drop_held(seq)
                self.counters["orphan_labels"] += 1
        if len(heap) > 2 * len(self._held) + 64:  # joined labels left stale entries behind
            self._held_heap = [(ts, seq) for ts, seq in heap if seq in self._held]
            heapq.heapify(self._held_heap)

        expired: list[ExpiredPrediction] = []
        cut, old_cut = label_wm - self.horizon_ms, old_label_wm - self.horizon_ms
        if cut > old_cut:
            keys = self._bucket_keys
            # buckets wholly below the old cut were expired by earlier calls
            for key in keys[bisect.bisect_left(keys, old_cut // _BUCKET_MS) :]:
                if key * _BUCKET_MS >= cut:
                    break
                for pid in self._buckets[key]:
                    self._expire(pid, cut, expired)
        for pid in self._due:
            self._expire(pid, cut, expired)
        self._due = []
        self._forget(min(pred_wm, label_wm) - self.horizon_ms)
        expired.sort(key=lambda e: (e.expired_at, e.prediction_id))
        return expired

    # -- checkpointing ------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {
            "horizon_ms": self.horizon_ms,
            "max_pending": self.max_pending,
            "max_held": self.max_held,
            "counters": self.counters,
            "records": self._records,
            "pending": self._pending,
            "ctx": self._ctx,
            "shapes": [(s.keys, s.kinds) for s in self._shapes],
            "held": self._held,
            "held_seq": self._held_seq,
            "pred_wm": self._pred_wm,
            "label_wm": self._label_wm,
            "due": self._due,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.horizon_ms = state["horizon_ms"]
        self.max_pending = state["max_pending"]
        self.max_held = state["max_held"]
        self.counters = state["counters"]
        self._records = state["records"]
        self._pending = state["pending"]
        self._ctx = state["ctx"]
        self._shapes = [_Shape(keys, kinds) for keys, kinds in state["shapes"]]
        self._held = state["held"]
        self._held_seq = state["held_seq"]
        self._pred_wm = state["pred_wm"]
        self._label_wm = state["label_wm"]
        self._due = state["due"]
        self._rebuild_indexes()

    # -- internals ----------------------------------------------------------------------------

    def _store(self, pid: str, blob: bytes) -> None:
        stored = self._records.get(pid)
        if stored is None:
            self._records[pid] = blob
        elif isinstance(stored, list):
            stored.append(blob)
        else:
            self._records[pid] = [stored, blob]
        key = _HEAD.unpack_from(blob)[0] // _BUCKET_MS
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = bucket = []
            bisect.insort(self._bucket_keys, key)
        bucket.append(pid)

    def _encode(self, event: PredictionEvent, segment: str) -> bytes:
        ctx = (event.model_id, event.model_version, segment)
        ctx_id = self._ctx_ids.get(ctx)
        if ctx_id is None:
            ctx_id = self._ctx_ids[ctx] = len(self._ctx)
            self._ctx.append(ctx)
        features = event.features
        values = tuple(features.values())
        layout = (tuple(features), tuple(map(type, values)))
        shape_id = self._shape_ids.get(layout)
        if shape_id is None and len(self._shapes) < _MAX_SHAPES:
            shape_id = self._shape_ids[layout] = len(self._shapes)
            self._shapes.append(_Shape(*layout))
        if shape_id is None:
            shape_id, packed = _NO_SHAPE, features_to_json(features).encode()
        else:
            packed = self._shapes[shape_id].encode(values)
        prediction = event.prediction
        text = _predicted_text(event)
        label = b"" if text is None else text.encode()
        score = _NAN if prediction.score is None else prediction.score
        value = _NAN if prediction.value is None else prediction.value
        label_len = _NO_LABEL if text is None else len(label)
        head = _FULL.pack(event.timestamp, _PENDING, ctx_id, shape_id, score, value, label_len)
        return head + label + packed

    def _outcome_from_blob(
        self, pid: str, blob: bytes, label_ts: int, label: bool | int | float | str
    ) -> JoinedOutcome:
        pred_ts, _, ctx_id, shape_id, score, value, label_len = _FULL.unpack_from(blob)
        offset = _FULL.size
        text = None
        if label_len != _NO_LABEL:
            text = blob[offset : offset + label_len].decode()
            offset += label_len
        if shape_id == _NO_SHAPE:
            features_json = blob[offset:].decode()
        else:
            features_json = features_to_json(self._shapes[shape_id].decode(blob, offset))
        return _outcome(
            pid, self._ctx[ctx_id], pred_ts, text, None if math.isnan(score) else score,
            None if math.isnan(value) else value, features_json, label_ts, label,
        )

    def _claim_held(self, pid: str, pred_ts: int) -> tuple[int, bool | int | float | str] | None:
        """The first held label (in label-log order) inside the interval; later ones are duplicates."""
        seqs = self._held_ids.get(pid)
        if not seqs:
            return None
        winner = None
        for seq in list(seqs):
            _, ts, label = self._held[seq]
            if pred_ts <= ts <= pred_ts + self.horizon_ms:
                if winner is None:
                    winner = (ts, label)
                else:
                    self.counters["duplicate_labels"] += 1
                self._drop_held(seq)
        return winner

    def _drop_held(self, seq: int) -> None:
        pid = self._held.pop(seq)[0]
        seqs = self._held_ids[pid]
        seqs.remove(seq)
        if not seqs:
            del self._held_ids[pid]

    def _close(self, pid: str, pred_ts: int) -> bytes | None:
        """Turn the pending record of ``pid`` at ``pred_ts`` into a closed one; its old blob."""
        stored = self._records[pid]
        blobs = stored if isinstance(stored, list) else [stored]
        for i, blob in enumerate(blobs):
            ts, state = _HEAD.unpack_from(blob)
            if ts == pred_ts and state == _PENDING:
                blobs[i] = _HEAD.pack(ts, _CLOSED)
                self._records[pid] = blobs if len(blobs) > 1 else blobs[0]
                self._pending -= 1
                return blob
        return None

    def _expire(self, pid: str, cut: int, out: list[ExpiredPrediction]) -> None:
        for blob in _blobs(self._records.get(pid)):
            pred_ts, state = _HEAD.unpack_from(blob)
            if state == _PENDING and pred_ts < cut:
                self._close(pid, pred_ts)
                model_id, model_version, segment = self._ctx[_FULL.unpack_from(blob)[2]]
                expired_at = pred_ts + self.horizon_ms
                out.append(ExpiredPrediction(pid, model_id, model_version, segment, pred_ts, expired_at))

    def _forget(self, cut: int) -> None:
        """Drop every record older than ``cut`` (whole buckets only: keeping more changes nothing)."""
        keys = self._bucket_keys
        gone = 0
        while gone < len(keys) and (keys[gone] + 1) * _BUCKET_MS <= cut:
            key = keys[gone]
            for pid in self._buckets.pop(key):
                # only this bucket's records: a reused id may have a newer one elsewhere
                blobs = _blobs(self._records.get(pid))
                kept = [b for b in blobs if _HEAD.unpack_from(b)[0] // _BUCKET_MS != key]
                if len(kept) > 1:
                    self._records[pid] = kept
                elif kept:
                    self._records[pid] = kept[0]
                else:
                    self._records.pop(pid, None)
            gone += 1
        if gone:
            del keys[:gone]
            self._evict_key, self._evict_queue = None, []

    def _evict_oldest_pending(self) -> None:
        while True:
            if self._evict_key is None or not self._evict_queue:
                self._fill_evict_queue()
            ts, pid = self._evict_queue.pop()
            if self._close(pid, ts) is not None:
                self.counters["evicted_pending"] += 1
                return

    def _fill_evict_queue(self) -> None:
        """Pending entries of the oldest bucket holding any, newest first (popped from the end)."""
        start = 0 if self._evict_key is None else bisect.bisect_right(self._bucket_keys, self._evict_key)
        for key in self._bucket_keys[start:]:
            queue = []
            for pid in self._buckets[key]:
                for blob in _blobs(self._records[pid]):
                    ts, state = _HEAD.unpack_from(blob)
                    if state == _PENDING and ts // _BUCKET_MS == key:
                        queue.append((ts, pid))
            if queue:
                queue.sort(reverse=True)
                self._evict_key, self._evict_queue = key, queue
                return
        raise AssertionError("pending count is positive but no pending record was found")


def _blobs(stored: bytes | list[bytes] | None) -> list[bytes] | tuple[bytes, ...]:
    if stored is None:
        return ()
    return stored if isinstance(stored, list) else (stored,)


def _outcome(
    pid: str,
    ctx: tuple[str, str, str],
    pred_ts: int,
    predicted: str | None,
    score: float | None,
    value: float | None,
    features_json: str,
    label_ts: int,
    label: bool | int | float | str,
) -> JoinedOutcome:
    label_text = normalise_label(label)
    label_value = _label_value(label)
    correct = None
    if predicted is not None:
        correct = int(predicted == label_text)
    elif score is not None and label_text in _BINARY:
        positive, negative = _BINARY[label_text]
        predicted = positive if score >= 0.5 else negative
        correct = int(predicted == label_text)
    abs_error = abs(value - label_value) if value is not None and label_value is not None else None
    model_id, model_version, segment = ctx
    return JoinedOutcome(
        prediction_id=pid,
        model_id=model_id,
        model_version=model_version,
        segment=segment,
        prediction_time=pred_ts,
        label_time=label_ts,
        label_delay_ms=label_ts - pred_ts,
        predicted_label=predicted or "",
        predicted_score=score,
        predicted_value=value,
        label=label_text,
        label_value=label_value,
        correct=correct,
        abs_error=abs_error,
        features_json=features_json,
    )
