"""LabelJoin: interleaving independence (against a brute-force oracle), bounds, pickling, derivations."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import pickle
import random
import tracemalloc
import types
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.operators import join as join_module
from driftline.operators.join import ExpiredPrediction, JoinedOutcome, LabelJoin
from driftline.operators.join import table as join_table
from driftline.schemas.events import LabelEvent, PredictionEvent

HORIZON = 20
DETERMINISTIC_COUNTERS = (
    "duplicate_predictions",
    "duplicate_labels",
    "orphan_labels",
    "evicted_pending",
    "evicted_held",
)
END = 10**12  # a watermark beyond every test event: flushes all state


def pred(pid: str, ts: int, **kw: Any) -> PredictionEvent:
    kw.setdefault("prediction", {"label": "a"})
    kw.setdefault("features", {"x": float(ts), "c": "k"})
    return PredictionEvent(prediction_id=pid, model_id="m", timestamp=ts, **kw)


def label(pid: str, ts: int, value: Any = "a") -> LabelEvent:
    return LabelEvent(prediction_id=pid, timestamp=ts, label=value)


@dataclasses.dataclass
class Run:
    outcomes: list[JoinedOutcome]
    expired: list[ExpiredPrediction]
    counters: dict[str, int]

    def canonical(self) -> tuple[Any, ...]:
        return (
            sorted(dataclasses.astuple(o) for o in self.outcomes),
            sorted(dataclasses.astuple(e) for e in self.expired),
            {k: self.counters[k] for k in DETERMINISTIC_COUNTERS},
        )


class Driver:
    """What the shard does: per-topic watermarks from each topic's own prefix, late events dropped."""

    def __init__(self, lateness: int, join: LabelJoin | None = None) -> None:
        self.join = join or LabelJoin(HORIZON, max_pending=10_000, max_held=10_000)
        self.lateness = lateness
        self.pred_wm = self.label_wm = -(10**9)
        self.outcomes: list[JoinedOutcome] = []
        self.expired: list[ExpiredPrediction] = []

    def feed(self, event: PredictionEvent | LabelEvent, advance: bool) -> None:
        if isinstance(event, PredictionEvent):
            if event.timestamp >= self.pred_wm:
                out = self.join.on_prediction(event, segment="s")
                self.pred_wm = max(self.pred_wm, event.timestamp - self.lateness)
                self.outcomes += [out] if out else []
        elif event.timestamp >= self.label_wm:
            out = self.join.on_label(event)
            self.label_wm = max(self.label_wm, event.timestamp - self.lateness)
            self.outcomes += [out] if out else []
        if advance:
            self.expired += self.join.advance(self.pred_wm, self.label_wm)

    def finish(self) -> Run:
        self.expired += self.join.advance(END, END)
        return Run(self.outcomes, self.expired, dict(self.join.counters))


def interleave(
    preds: Sequence[PredictionEvent], labels: Sequence[LabelEvent], order: Sequence[bool]
) -> list[PredictionEvent | LabelEvent]:
    p, q = list(preds), list(labels)
    merged: list[PredictionEvent | LabelEvent] = []
    for take_pred in order:
        if take_pred and p:
            merged.append(p.pop(0))
        elif q:
            merged.append(q.pop(0))
    return merged + p + q


def run(
    preds: Sequence[PredictionEvent],
    labels: Sequence[LabelEvent],
    order: Sequence[bool],
    advances: Sequence[bool],
    lateness: int,
) -> Run:
    driver = Driver(lateness)
    for i, event in enumerate(interleave(preds, labels, order)):
        driver.feed(event, advance=advances[i % len(advances)] if advances else True)
    return driver.finish()


def oracle(preds: Sequence[PredictionEvent], labels: Sequence[LabelEvent], lateness: int) -> tuple[Any, ...]:
    """The documented semantics, computed from the two complete logs by brute force."""

    def non_late(events: Sequence[Any]) -> list[Any]:
        kept, wm = [], -(10**9)
        for e in events:
            if e.timestamp >= wm:
                kept.append(e)
                wm = max(wm, e.timestamp - lateness)
        return kept

    accepted: list[PredictionEvent] = []
    duplicates = 0
    for p in non_late(preds):
        if any(a.prediction_id == p.prediction_id and p.timestamp <= a.timestamp + HORIZON for a in accepted):
            duplicates += 1
        else:
            accepted.append(p)
    winners: dict[int, LabelEvent] = {}
    duplicate_labels = orphans = 0
    for lab in non_late(labels):
        match = [
            i
            for i, a in enumerate(accepted)
            if a.prediction_id == lab.prediction_id and a.timestamp <= lab.timestamp <= a.timestamp + HORIZON
        ]
        if not match:
            orphans += 1
        elif match[0] in winners:
            duplicate_labels += 1
        else:
            winners[match[0]] = lab
    joined = sorted(
        (a.prediction_id, a.timestamp, winners[i].timestamp) for i, a in enumerate(accepted) if i in winners
    )
    expired = sorted(
        (a.prediction_id, a.timestamp, a.timestamp + HORIZON)
        for i, a in enumerate(accepted)
        if i not in winners
    )
    return joined, expired, duplicates, duplicate_labels, orphans


ids = st.sampled_from("abcde")
predictions = st.lists(
    st.builds(
        pred, ids, st.integers(0, 120), prediction=st.sampled_from([{"label": "a"}, {"score": 0.7}, 1.5])
    ),
    max_size=25,
)
label_events = st.lists(
    st.builds(label, ids, st.integers(0, 150), st.sampled_from(["a", 1, True, 2.5])), max_size=25
)


@settings(max_examples=300, deadline=None)
@given(
    preds=predictions,
    labels=label_events,
    orders=st.lists(st.lists(st.booleans(), max_size=50), min_size=2, max_size=4),
    advances=st.lists(st.booleans(), max_size=8),
    lateness=st.integers(0, 15),
)
def test_results_do_not_depend_on_interleaving_or_advance_timing(
    preds: list[PredictionEvent],
    labels: list[LabelEvent],
    orders: list[list[bool]],
    advances: list[bool],
    lateness: int,
) -> None:
    reference = run(preds, labels, [True] * len(preds), [True], lateness)
    for order in orders:
        assert run(preds, labels, order, advances, lateness).canonical() == reference.canonical()
    joined, expired, duplicates, duplicate_labels, orphans = oracle(preds, labels, lateness)
    assert sorted((o.prediction_id, o.prediction_time, o.label_time) for o in reference.outcomes) == joined
    assert sorted((e.prediction_id, e.prediction_time, e.expired_at) for e in reference.expired) == expired
    assert reference.counters["duplicate_predictions"] == duplicates
    assert reference.counters["duplicate_labels"] == duplicate_labels
    assert reference.counters["orphan_labels"] == orphans


@settings(max_examples=100, deadline=None)
@given(
    preds=predictions, labels=label_events, order=st.lists(st.booleans(), max_size=50), cut=st.integers(0, 50)
)
def test_pickle_round_trip_mid_stream_gives_identical_results(
    preds: list[PredictionEvent], labels: list[LabelEvent], order: list[bool], cut: int
) -> None:
    events = interleave(preds, labels, order)
    straight = Driver(lateness=5)
    for event in events:
        straight.feed(event, advance=True)
    resumed = Driver(lateness=5)
    for event in events[:cut]:
        resumed.feed(event, advance=True)
    resumed.join = pickle.loads(pickle.dumps(resumed.join))
    for event in events[cut:]:
        resumed.feed(event, advance=True)
    a, b = straight.finish(), resumed.finish()
    assert (a.outcomes, a.expired, a.counters) == (b.outcomes, b.expired, b.counters)


def test_first_label_wins_and_later_ones_are_duplicates() -> None:
    for events in (
        [pred("p", 10), label("p", 12, "b"), label("p", 15, "a")],
        [label("p", 12, "b"), label("p", 15, "a"), pred("p", 10)],
    ):
        driver = Driver(lateness=100)
        for event in events:
            driver.feed(event, advance=True)
        result = driver.finish()
        assert [(o.label, o.label_time, o.correct) for o in result.outcomes] == [("b", 12, 0)]
        assert result.counters["duplicate_labels"] == 1


def test_duplicate_prediction_is_counted_and_ignored() -> None:
    join = LabelJoin(HORIZON, 10, 10)
    assert join.on_prediction(pred("p", 10), "s") is None
    assert join.on_prediction(pred("p", 30, prediction={"label": "z"}), "s") is None  # 30 <= 10 + 20
    assert join.counters["duplicate_predictions"] == 1 and join.pending_count == 1
    out = join.on_label(label("p", 25, "a"))
    assert out is not None and out.correct == 1 and out.prediction_time == 10
    # beyond the first one's horizon the id may be used again
    join.on_prediction(pred("p", 31), "s")
    assert join.pending_count == 1 and join.counters["duplicate_predictions"] == 1


def test_label_before_its_prediction_does_not_join_and_becomes_an_orphan() -> None:
    join = LabelJoin(HORIZON, 10, 10)
    assert join.on_label(label("p", 5)) is None
    assert join.on_prediction(pred("p", 6), "s") is None
    assert join.held_count == 1 and join.earliest_held_label_ts() == 5
    join.advance(pred_watermark_ms=6, label_watermark_ms=5)
    assert join.held_count == 0 and join.counters["orphan_labels"] == 1
    assert join.earliest_held_label_ts() is None
    join.on_label(label("p", 3))  # arrives after its prediction: diagnosed, then an orphan at once
    assert join.counters["labels_before_prediction"] == 1 and join.counters["orphan_labels"] == 2


def test_label_beyond_horizon_is_counted() -> None:
    join = LabelJoin(HORIZON, 10, 10)
    join.on_prediction(pred("p", 0), "s")
    assert join.on_label(label("p", HORIZON + 1)) is None
    assert join.counters["labels_beyond_horizon"] == 1 and join.held_count == 1
    assert [e.expired_at for e in join.advance(END, END)] == [HORIZON]
    assert join.counters["orphan_labels"] == 1


def test_expiry_waits_for_the_labels_watermark_exactly() -> None:
    join = LabelJoin(HORIZON, 10, 10)
    join.on_prediction(pred("p", 100), "seg")
    assert join.advance(END, 100 + HORIZON) == []  # a label at exactly pred_ts + horizon may still come
    assert join.on_label(label("p", 100 + HORIZON)) is not None
    join.on_prediction(pred("q", 200), "seg")
    assert join.advance(END, 200 + HORIZON + 1) == [
        ExpiredPrediction("q", "m", "1", "seg", 200, 200 + HORIZON)
    ]
    assert join.pending_count == 0


def test_prediction_arriving_after_its_expiry_is_expired_at_the_next_advance() -> None:
    join = LabelJoin(HORIZON, 10, 10)
    join.advance(0, 1000)
    join.on_prediction(pred("p", 10), "s")
    assert [e.prediction_id for e in join.advance(0, 1000)] == ["p"]


def test_earliest_held_label_ts_follows_joins_and_orphans() -> None:
    join = LabelJoin(HORIZON, 10, 10)
    for pid, ts in (("a", 50), ("b", 40), ("c", 60)):
        join.on_label(label(pid, ts))
    assert join.earliest_held_label_ts() == 40
    join.on_prediction(pred("b", 30), "s")
    assert join.earliest_held_label_ts() == 50
    join.advance(pred_watermark_ms=51, label_watermark_ms=0)
    assert join.earliest_held_label_ts() == 60 and join.counters["orphan_labels"] == 1


def test_bounds_evict_oldest_first_and_count() -> None:
    join = LabelJoin(HORIZON * 1000, max_pending=3, max_held=2)
    for i, ts in enumerate((5000, 1000, 3000, 2000, 4000)):
        join.on_prediction(pred(f"p{i}", ts), "s")
    assert join.pending_count == 3 and join.counters["evicted_pending"] == 2
    assert join.on_label(label("p1", 1500)) is None  # evicted: no longer joinable
    assert join.counters["orphan_labels"] == 1
    assert join.on_label(label("p2", 3500)) is not None  # 3000 survived (1000 and 2000 went)
    for pid, ts in (("x", 30), ("y", 10), ("z", 20)):
        join.on_label(label(pid, ts))
    assert join.held_count == 2 and join.counters["evicted_held"] == 1
    assert join.earliest_held_label_ts() == 20
    expired = join.advance(END, END)
    assert sorted(e.prediction_id for e in expired if e.reason == "horizon") == ["p0", "p4"]


def test_evicted_predictions_are_reported_by_the_next_advance_with_their_reason() -> None:
    """Nothing is silently dropped: an evicted prediction comes out of advance() like an expired
    one, at the time it would have expired, with reason 'evicted' -- once."""
    horizon = HORIZON * 1000
    join = LabelJoin(horizon, max_pending=3, max_held=10)
    for i, ts in enumerate((5000, 1000, 3000, 2000, 4000)):
        join.on_prediction(pred(f"p{i}", ts, model_version="2"), "region=eu")
    assert join.counters["evicted_pending"] == 2 and len(join.evicted) == 2
    evicted = join.advance(0, 0)  # no watermark has moved: only the evictions
    assert [dataclasses.astuple(e) for e in evicted] == [
        ("p1", "m", "2", "region=eu", 1000, 1000 + horizon, "evicted"),
        ("p3", "m", "2", "region=eu", 2000, 2000 + horizon, "evicted"),
    ]
    assert join.advance(0, 0) == [] and join.evicted == []
    expired = join.advance(END, END)  # the survivors expire; the evicted ones do not come again
    assert [(e.prediction_id, e.reason) for e in expired] == [("p2", "horizon"), ("p4", "horizon"),
                                                              ("p0", "horizon")]


def test_a_label_of_an_evicted_prediction_is_given_up_as_such() -> None:
    """A label inside an evicted prediction's interval is an orphan with reason
    'prediction_evicted' (its prediction came, the bound dropped it), not 'no_prediction': known
    from the closed record the join keeps anyway, for as long as the prediction would not have
    expired; after that such a label is late (under the labels watermark), never fed."""
    horizon = HORIZON * 1000
    join = LabelJoin(horizon, max_pending=2, max_held=10)
    for i, ts in enumerate((1000, 2000, 3000, 4000)):  # p0 and p1 are evicted
        join.on_prediction(pred(f"p{i}", ts), "s")
    assert join.counters["evicted_pending"] == 2
    join.on_labels(["p0", "ghost", "p1"], [1500, 1600, 2000 + horizon], ["a"] * 3, ["m"] * 3,
                   [b"\0" * 8] * 3, [None] * 3)
    assert join.on_label(label("p1", 2500)) is None
    join.advance(pred_watermark_ms=2000, label_watermark_ms=0)  # the ghost's prediction can no longer come
    orphans = [(o.prediction_id, o.label_time, o.model_id, o.reason) for o in join.take_orphans()]
    assert orphans == [("p0", 1500, "m", "prediction_evicted"),
                       ("p1", 2000 + horizon, "m", "prediction_evicted"),
                       ("p1", 2500, "", "prediction_evicted"), ("ghost", 1600, "m", "no_prediction")]
    assert join.counters["orphan_labels"] == 4 and join.held_count == 0
    # p2 expires; were a label of it fed all the same (late), it would not be taken for an eviction
    join.advance(pred_watermark_ms=2000, label_watermark_ms=3001 + horizon)
    join.on_label(label("p2", 3000 + horizon))
    assert [o.reason for o in join.take_orphans()] == ["no_prediction"]


def test_evictions_not_yet_reported_survive_a_checkpoint() -> None:
    join = LabelJoin(HORIZON * 1000, max_pending=1, max_held=10)
    join.on_prediction(pred("a", 1000), "s")
    join.on_prediction(pred("b", 2000), "s")
    restored = pickle.loads(pickle.dumps(join))
    assert [(e.prediction_id, e.reason) for e in restored.advance(0, 0)] == [("a", "evicted")]
    old = join.__getstate__()
    del old["evicted"]  # a checkpoint from before evictions were reported
    older = LabelJoin.__new__(LabelJoin)
    older.__setstate__(old)
    assert older.advance(0, 0) == [] and older.pending_count == 1


def test_eviction_under_sustained_overload_stays_exact() -> None:
    join = LabelJoin(10**9, max_pending=100, max_held=10)
    for i in range(2000):
        join.on_prediction(pred(f"p{i}", (i * 7919) % 5000), "s")  # out of order
    assert join.pending_count == 100 and join.counters["evicted_pending"] == 1900
    out = join.advance(END, END)
    survivors = sorted(e.prediction_time for e in out if e.reason == "horizon")
    assert survivors == sorted((i * 7919) % 5000 for i in range(2000))[-100:]
    assert sorted(e.prediction_time for e in out if e.reason == "evicted") == sorted(
        (i * 7919) % 5000 for i in range(2000))[:-100]


def test_outcome_derivations() -> None:
    def outcome(prediction: Any, value: Any, features: dict[str, Any] | None = None) -> JoinedOutcome:
        join = LabelJoin(HORIZON, 10, 10)
        join.on_prediction(pred("p", 0, prediction=prediction, features=features or {}), "s")
        out = join.on_label(label("p", 7, value))
        assert out is not None and out.label_delay_ms == 7
        return out

    o = outcome({"label": True}, "true")
    assert (o.predicted_label, o.label, o.correct, o.label_value) == ("true", "true", 1, None)
    o = outcome({"label": 1}, 1.0)  # a class, even when it is a number: label only (table docs)
    assert (o.predicted_label, o.label, o.correct, o.label_value) == ("1", "1", 1, None)
    o = outcome({"label": False}, False)
    assert (o.label, o.label_value) == ("false", None)
    o = outcome({"score": 0.7}, 0)
    assert (o.predicted_label, o.predicted_score, o.correct) == ("1", 0.7, 0)
    o = outcome({"score": 0.2}, False)
    assert (o.predicted_label, o.correct) == ("false", 1)
    o = outcome({"score": 0.9}, "cat")  # not binary: a score alone cannot be judged
    assert (o.predicted_label, o.correct) == ("", None)
    o = outcome({"probabilities": {"cat": 0.3, "dog": 0.6, "eel": 0.1}}, "dog")
    assert (o.predicted_label, o.correct) == ("dog", 1)
    o = outcome(2.5, 4)
    assert (o.predicted_value, o.label_value, o.abs_error, o.correct, o.predicted_label) == (
        2.5,
        4.0,
        1.5,
        None,
        "",
    )
    assert o.label == ""  # regression truth: label_value only
    o = outcome(2.5, "not a number")
    assert o.abs_error is None


def test_features_json_round_trips_including_nan_and_big_ints() -> None:
    features = {
        "f": 0.1,
        "nan": math.nan,
        "inf": -math.inf,
        "i": 3,
        "big": 2**70,
        "b": False,
        "n": None,
        "s": "é",
    }
    for held_first in (False, True):
        join = LabelJoin(HORIZON, 10, 10)
        events: list[Any] = [pred("p", 0, features=features), label("p", 1)]
        for event in reversed(events) if held_first else events:
            out = (
                join.on_prediction(event, "s") if isinstance(event, PredictionEvent) else join.on_label(event)
            )
        assert out is not None
        decoded = orjson.loads(out.features_json)
        assert list(decoded) == list(features)
        assert decoded["nan"] is None and decoded["inf"] is None and decoded["s"] == "é"
        assert '"big":1180591620717411303424' in out.features_json


def set_in_join_modules(monkeypatch: pytest.MonkeyPatch, **values: int) -> None:
    """Set module constants of the join wherever one of its modules binds them (imported by name)."""
    modules = [module for module in vars(join_module).values() if isinstance(module, types.ModuleType)]
    for name, value in values.items():
        bound = [module for module in modules if name in vars(module)]
        assert bound, name
        for module in bound:
            monkeypatch.setattr(module, name, value)


def test_many_feature_layouts_fall_back_to_json(monkeypatch: pytest.MonkeyPatch) -> None:
    set_in_join_modules(monkeypatch, _MAX_SHAPES=3)
    join = LabelJoin(HORIZON, 100, 10)
    for i in range(6):
        join.on_prediction(pred(f"p{i}", 0, features={f"k{i}": float(i)}), "s")
    for i in range(6):
        out = join.on_label(label(f"p{i}", 1))
        assert out is not None and orjson.loads(out.features_json) == {f"k{i}": float(i)}
    restored = pickle.loads(pickle.dumps(join))
    assert restored.counters == join.counters and restored.pending_count == 0


def test_pickle_is_compact() -> None:
    join = LabelJoin(10**9, 100_000, 10)
    features = {f"x{i:02d}": i * 0.1 for i in range(25)}
    for i in range(1000):
        join.on_prediction(pred(f"pred-{i:06d}", i, features=features), "s")
    assert len(pickle.dumps(join)) / 1000 < 300


# -- the compact state: id keys, groups that split and merge, bytes per pending prediction ----------


@contextlib.contextmanager
def tiny_groups() -> Iterator[None]:
    """One record per group and a single group to start (every insert splits, every forget merges),
    and a time index of 7 ms buckets (the test's event times span many)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        set_in_join_modules(monkeypatch, _MIN_GROUPS=1, _LOAD=1, _BUCKET_MS=7)
        yield


UUIDS = [str(uuid.UUID(int=i * 0x9E3779B97F4A7C15 + 1)) for i in range(6)]
many_ids = st.sampled_from(["a", "b", "é", "A" * 40, UUIDS[0].upper(), *UUIDS])
# Event times sorted with small disorder over many 7 ms buckets: state is forgotten mid-stream.
many_predictions = st.lists(
    st.builds(pred, many_ids, st.integers(0, 60),
              prediction=st.sampled_from([{"label": "a"}, {"score": 0.7}])),
    max_size=50,
).map(lambda ps: [p.model_copy(update={"timestamp": p.timestamp + 8 * i}) for i, p in enumerate(ps)])
many_labels = st.lists(
    st.builds(label, many_ids, st.integers(0, 60), st.sampled_from(["a", 1, 2.5])), max_size=50
).map(lambda ls: [lab.model_copy(update={"timestamp": lab.timestamp + 8 * i}) for i, lab in enumerate(ls)])


@settings(max_examples=200, deadline=None)
@given(
    preds=many_predictions,
    labels=many_labels,
    order=st.lists(st.booleans(), max_size=100),
    advances=st.lists(st.booleans(), max_size=8),
    lateness=st.integers(0, 15),
    cut=st.integers(0, 100),
)
def test_tiny_groups_give_the_oracle_results_through_splits_merges_and_pickling(
    preds: list[PredictionEvent],
    labels: list[LabelEvent],
    order: list[bool],
    advances: list[bool],
    lateness: int,
    cut: int,
) -> None:
    with tiny_groups():
        events = interleave(preds, labels, order)
        driver = Driver(lateness)
        for i, event in enumerate(events):
            if i == cut:
                driver.join = pickle.loads(pickle.dumps(driver.join))
            driver.feed(event, advance=advances[i % len(advances)] if advances else True)
        result = driver.finish()
    joined, expired, duplicates, duplicate_labels, orphans = oracle(preds, labels, lateness)
    assert sorted((o.prediction_id, o.prediction_time, o.label_time) for o in result.outcomes) == joined
    assert sorted((e.prediction_id, e.prediction_time, e.expired_at) for e in result.expired) == expired
    assert result.counters["duplicate_predictions"] == duplicates
    assert result.counters["duplicate_labels"] == duplicate_labels
    assert result.counters["orphan_labels"] == orphans


@pytest.mark.parametrize("seed", range(12))
def test_tiny_groups_random_streams_match_the_oracle(seed: int) -> None:
    rng = random.Random(seed)
    ids = [*UUIDS, "a", "b", "é", "A" * 40][: rng.randrange(2, 11)]
    preds = [pred(rng.choice(ids), 3 * i + rng.randrange(0, 40)) for i in range(150)]
    labels = [label(rng.choice(ids), 3 * i + rng.randrange(0, 60)) for i in range(150)]
    lateness = rng.choice([0, 5, 30])
    with tiny_groups():
        driver = Driver(lateness)
        for i, event in enumerate(interleave(preds, labels, [rng.random() < 0.5 for _ in range(300)])):
            driver.feed(event, advance=rng.random() < 0.5)
            if i % 97 == 0:
                driver.join = pickle.loads(pickle.dumps(driver.join))
        result = driver.finish()
    joined, expired, duplicates, duplicate_labels, orphans = oracle(preds, labels, lateness)
    assert sorted((o.prediction_id, o.prediction_time, o.label_time) for o in result.outcomes) == joined
    assert sorted((e.prediction_id, e.prediction_time, e.expired_at) for e in result.expired) == expired
    assert (result.counters["duplicate_predictions"], result.counters["duplicate_labels"],
            result.counters["orphan_labels"]) == (duplicates, duplicate_labels, orphans)


def test_many_ids_grow_and_shrink_the_table_with_oracle_results() -> None:
    rng = random.Random(5)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(600)] + [f"id-{i}" for i in range(200)]
    preds = [pred(rng.choice(ids), rng.randrange(0, 3000)) for _ in range(1200)]
    labels = [label(p.prediction_id, p.timestamp + rng.randrange(-3, 25)) for p in rng.sample(preds, 900)]
    preds.sort(key=lambda p: p.timestamp)
    labels.sort(key=lambda lab: lab.timestamp)
    driver = Driver(lateness=10)
    most = 0
    for i, event in enumerate(interleave(preds, labels, [rng.random() < 0.5 for _ in range(2100)])):
        driver.feed(event, advance=i % 7 == 0)
        most = max(most, len(driver.join._groups))
        if i == 1000:
            driver.join = pickle.loads(pickle.dumps(driver.join))
    result = driver.finish()
    assert most > join_table._MIN_GROUPS  # the table grew ...
    assert len(driver.join._groups) == join_table._MIN_GROUPS  # ... and shrank once all was forgotten
    joined, expired, duplicates, duplicate_labels, orphans = oracle(preds, labels, 10)
    assert sorted((o.prediction_id, o.prediction_time, o.label_time) for o in result.outcomes) == joined
    assert sorted((e.prediction_id, e.prediction_time, e.expired_at) for e in result.expired) == expired
    assert (result.counters["duplicate_predictions"], result.counters["duplicate_labels"],
            result.counters["orphan_labels"]) == (duplicates, duplicate_labels, orphans)


@pytest.mark.parametrize("pid", [
    UUIDS[1],  # canonical: stored as 16 bytes
    UUIDS[1].upper(),  # not canonical: stored as text, and comes back upper case
    "0b9f6c2e4-a51-4c0e-9d3a-8f1e2b7c6d5a",  # dashes elsewhere
    "0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d5g",  # not hex
    "ünïcödé-ïd",
])
def test_prediction_ids_come_back_exactly(pid: str) -> None:
    join = LabelJoin(HORIZON, 10, 10)
    join.on_prediction(pred(pid, 0), "s")
    join.on_prediction(pred(pid + "-2", 0), "s")
    out = join.on_label(label(pid, 5))
    assert out is not None and out.prediction_id == pid
    assert [e.prediction_id for e in pickle.loads(pickle.dumps(join)).advance(END, END)] == [pid + "-2"]


def test_pending_state_is_compact() -> None:
    """bench/bench_join_state.py's measure, smaller: 25 mixed features, UUID ids (target <= 300 B)."""
    rng = random.Random(7)
    events = [
        PredictionEvent(
            prediction_id=str(uuid.UUID(int=rng.getrandbits(128))), model_id="fraud", model_version="3",
            timestamp=1_767_225_600_000 + i * 5,
            features={**{f"num_{j:02d}": rng.gauss(0.0, 1.0) for j in range(20)},
                      **{f"count_{j}": rng.randrange(1000) for j in range(3)},
                      **{f"colour_{j}": rng.choice(("red", "green", "blue")) for j in range(2)}},
            prediction={"label": "ok", "score": rng.random()},
        )
        for i in range(10_000)
    ]
    join = LabelJoin(86_400_000, 10**6, 1000)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for event in events:
            join.on_prediction(event, segment="region=eu")
        gc.collect()
        per_pending = (tracemalloc.get_traced_memory()[0] - before) / len(events)
    finally:
        tracemalloc.stop()
    assert join.pending_count == len(events) and per_pending <= 300
