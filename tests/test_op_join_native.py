"""The join's C fast paths (``driftline.operators.join._native``: labels that close pending records,
new predictions of a batch's layout) against the Python loops they stand in for: the same outcomes,
records, closings, counters and reports, byte for byte, on random logs
(UUID and text ids, ids reused, labels before, inside and beyond their interval, duplicates and
held labels), with and without change tracking, with pending payloads spilled to disk, and in
batches longer than one chunk of outcomes."""

from __future__ import annotations

import collections
import dataclasses
import gc
import pickle
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from driftline.operators.compiled_paths import reference_paths
from driftline.operators.join import (
    JoinChanges,
    JoinedOutcome,
    LabelJoin,
    native,
    payload_digest,
    payload_digests,
)
from driftline.operators.join.changes import TrackedTable
from driftline.operators.join.records import _id_key, _keyed_crcs
from driftline.pipeline.records import attribute_columns
from driftline.schemas.events import Prediction

HORIZON = 5_000
IDS = [f"p{i}" for i in range(6)] + [str(uuid.UUID(int=i * 7919 + 1)) for i in range(6)]


def test_the_fast_path_is_built_where_a_compiler_is() -> None:
    """`make install` builds the extension (pyproject's ext-modules); CI has gcc, so a build that
    silently failed would leave the join on its slow path (or on a stale build): this catches it."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the join runs in Python alone")
    assert native.NATIVE is not None
    # an editable install builds it in place; a failed rebuild (the extension is optional) would
    # leave the previous build there, older than its source: `make install` rebuilds it
    built = Path(native.NATIVE.__file__)
    source = built.with_name("_native.c")
    if source.exists():
        assert built.stat().st_mtime >= source.stat().st_mtime, f"{built.name} is older than {source}"


OUTPUTS = [Prediction(label="a"), Prediction(label="b", score=0.25), Prediction(value=1.5),
           Prediction(score=0.75), Prediction(score=0.5), Prediction(label="é", value=-2.0),
           Prediction(value=1e200), Prediction(score=0.125, value=3.0)]
CONTEXTS = [("m", "1", ""), ("m", "2", "region=eu"), ("n", "1", "")]
# (kind, id, time, output or label, feature or rerouted, context)
predictions = st.tuples(st.just("prediction"), st.sampled_from(IDS), st.integers(-3_000, 20_000),
                        st.sampled_from(OUTPUTS), st.floats(-5, 5), st.sampled_from(CONTEXTS))
LABELS: list[Any] = ["a", "b", "é", 1, 0, 2.5, 1e200, True, "false", "x1"]
labels = st.tuples(st.just("label"), st.sampled_from([*IDS, "q"]), st.integers(-3_000, 20_000),
                   st.sampled_from(LABELS), st.booleans(), st.none())


def _run(log: list[tuple[Any, ...]], cut: int, track: bool, spill_dir: Path | None,
         bound: int = 1_000) -> tuple[Any, ...]:
    """Everything a join tells of feeding ``log`` in runs of one kind (at most ``cut`` events), with
    at most ``bound`` pending predictions and held labels: per run, what the call returned, what the
    next advance returned and the table's layout (so a first run of predictions, then one of labels:
    the labels' outcomes at [3]); then the reports, counters and state at the end."""
    join = LabelJoin(HORIZON, bound, bound)
    if spill_dir is not None:
        join.set_memory_budget(1, spill_dir)  # every new payload goes to the store
    if track:
        join.track_changes()
    told: list[Any] = []
    runs: list[list[tuple[Any, ...]]] = []
    for item in log:
        if not runs or runs[-1][0][0] != item[0] or len(runs[-1]) >= cut:
            runs.append([])
        runs[-1].append(item)
    marks = {"prediction": -(2**40), "label": -(2**40)}
    for n, run in enumerate(runs):
        ids, times = [e[1] for e in run], [e[2] for e in run]
        digests = [payload_digest(b"%d/%d" % (n, i)) for i in range(len(run))]
        sources = [(n, i) for i in range(len(run))]
        if run[0][0] == "prediction":
            xs = [e[4] for e in run]
            cs = ["u" if x > 0 else "v" for x in xs]
            told.append(join.on_predictions(
                ids, times, [e[5] for e in run], [e[3] for e in run],
                [{"x": x, "c": c} for x, c in zip(xs, cs, strict=True)], digests, sources,
                rerouted=n % 2 == 1, columns=(("x", "c"), [xs, cs], [np.array(xs), None])))
        else:
            told.append(join.on_labels(ids, times, [e[3] for e in run], [None] * len(run), digests,
                                       sources, rerouted=run[0][4]))
        # watermarks as a shard's (a second behind each topic's newest time): expiries, predictions
        # already past the labels' watermark, and ids forgotten while the log goes on
        marks[run[0][0]] = max(marks[run[0][0]], max(times) - 1_000)
        told.append(join.advance(marks["prediction"], marks["label"]))
        # the table as it is laid out and its time index (a pickle holds the records, not how they
        # are grouped); spilled records' stubs hold the same references either way
        told.append((tuple(join._groups), join._low, join._split, list(join._bucket_keys),
                     [(second, list(hashes)) for second, hashes in join._buckets.items()]))
        if n % 3 == 2 and track:
            told.append(join.take_changes())
    if spill_dir is not None:
        told.append(join.spilled_count)
    told += [join.advance(25_000, 25_000), join.take_duplicates(), join.take_orphans(), dict(join.counters),
             join.pending_count, join.held_count]
    if spill_dir is None:
        told.append(pickle.dumps(join))
    return tuple(told)


@settings(max_examples=150, deadline=None)
@given(log=st.lists(st.one_of(predictions, labels), max_size=120), cut=st.sampled_from([3, 70, 200]),
       track=st.booleans(), bound=st.sampled_from([4, 1_000]))
def test_the_fast_path_leaves_what_the_python_loop_leaves(log: list[tuple[Any, ...]], cut: int,
                                                           track: bool, bound: int) -> None:
    """Times from before the epoch (seconds of the time index floored) up; ``bound`` 4: evictions."""
    fast = _run(log, cut, track, None, bound)
    with reference_paths():
        slow = _run(log, cut, track, None, bound)
    assert fast == slow


@settings(max_examples=25, deadline=None)
@given(log=st.lists(st.one_of(predictions, labels), min_size=20, max_size=80), track=st.booleans())
def test_spilled_records_join_as_in_the_python_loop(log: list[tuple[Any, ...]], track: bool,
                                                     tmp_path_factory: Any) -> None:
    """A spilled record's payload is read back from the store: C leaves that label to Python (and a
    delta's spilled records, found in C, are read back whole)."""
    fast = _run(log, 70, track, tmp_path_factory.mktemp("fast"))
    with reference_paths():
        slow = _run(log, 70, track, tmp_path_factory.mktemp("slow"))
    assert fast == slow


def test_a_delta_s_records_are_found_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """take_changes locates the records added since the last delta in one C call (the Python walk,
    a lookup a record, was most of a checkpoint's CPU on a busy join); the delta is the same."""
    if native.NATIVE is None:
        pytest.skip("the join's C extension is not built")
    log: list[tuple[Any, ...]] = [("prediction", f"p{i}", 1_000 + i, OUTPUTS[i % 3], float(i % 7) - 3.0,
                                   CONTEXTS[i % 2]) for i in range(300)]
    log += [("label", f"p{i}", 1_200 + i, "a", False, None) for i in range(0, 300, 3)]
    with reference_paths():
        slow = _run(log, 70, True, None)
    monkeypatch.setattr(TrackedTable, "current_records", lambda *_: pytest.fail("the Python walk ran"))
    fast = _run(log, 70, True, None)
    assert fast == slow
    deltas = [told for told in fast if isinstance(told, JoinChanges)]
    assert deltas and all(delta.records for delta in deltas[:2])


def test_a_batch_of_many_joins_in_chunks_gives_every_outcome_in_order() -> None:
    """More joining labels than one chunk of outcomes (``_OUTCOMES_AT_ONCE``), every 5th held, the
    last 300 duplicates: the C path stops at each chunk's end and at each other case, and resumes
    after. 1,200 predictions: the table splits past its first doubling (64 groups to 128 and on)."""
    ids = [str(uuid.UUID(int=i + 1)) for i in range(1_200)]
    log: list[tuple[Any, ...]] = [
        ("prediction", pid, 1_000 + i, OUTPUTS[i % len(OUTPUTS)], float(i), CONTEXTS[i % 3])
        for i, pid in enumerate(ids)]
    log += [("label", ids[i % 1_200] if i % 5 else f"q{i}", 2_300 + i, "a", False, None)
            for i in range(1_500)]
    fast = _run(log, 2_000, True, None, bound=2_000)
    with reference_paths():
        slow = _run(log, 2_000, True, None, bound=2_000)
    assert fast == slow
    # every prediction with a label joined once (by its first), in label order; the later ones duplicates
    assert [o.prediction_id for o in fast[3]] == [ids[i] for i in range(1_200) if i % 5]
    counters = next(told for told in fast if isinstance(told, dict))
    assert counters["duplicate_labels"] == 240


def test_the_fast_path_takes_lists_only() -> None:
    if native.NATIVE is None:
        pytest.skip("no C fast path in this install")
    with pytest.raises(TypeError, match="keys must be a list"):
        native.NATIVE.close_pending([b""], (b"k",), [0], [0], [bytes(8)], ["p"], ["a"], 0, 1, 64, 0, 0,
                                   HORIZON, None, None, False, [], [])


def test_labels_at_the_edges_of_the_interval_join_as_in_the_python_loop() -> None:
    """A label at its prediction's time and one at exactly the horizon join; one a millisecond
    before or past it does not (held, then counted)."""
    log: list[tuple[Any, ...]] = [("prediction", pid, 1_000, OUTPUTS[0], 0.5, CONTEXTS[0]) for pid in IDS[:4]]
    log += [("label", IDS[0], 1_000, "a", False, None), ("label", IDS[1], 1_000 + HORIZON, "a", False, None),
            ("label", IDS[2], 999, "a", False, None), ("label", IDS[3], 1_001 + HORIZON, "a", False, None)]
    fast = _run(log, 100, False, None)
    with reference_paths():
        slow = _run(log, 100, False, None)
    assert fast == slow
    assert [o.prediction_id for o in fast[3]] == IDS[:2]


def _python_calls(monkeypatch: pytest.MonkeyPatch, loop: str) -> list[int]:
    """Where each call of the join's Python loop ``loop`` (``_close_labels``, ``_add_predictions``)
    starts, from now on in the test (skipped where there is no C path to fall back from)."""
    if native.NATIVE is None:
        pytest.skip("no C fast path in this install")
    starts: list[int] = []
    python_loop = getattr(LabelJoin, loop)
    monkeypatch.setattr(LabelJoin, loop, lambda self, start, stop, *rest: starts.append(start) or python_loop(
        self, start, stop, *rest))
    return starts


def test_the_common_case_never_falls_back_to_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Labels that close pending records, at their prediction's time up to the horizon: C handles
    every one (a fallback would give the same results, only slower, so results alone cannot tell)."""
    fallbacks = _python_calls(monkeypatch, "_close_labels")
    join = LabelJoin(HORIZON, 1_000, 1_000)
    join.track_changes()
    ids = [str(uuid.UUID(int=i + 1)) if i % 2 else f"text-{i}" for i in range(300)]
    join.on_predictions(ids, [1_000] * 300, [CONTEXTS[i % 3] for i in range(300)],
                        [OUTPUTS[i % len(OUTPUTS)] for i in range(300)],
                        [{"x": float(i)} for i in range(300)],
                        [payload_digest(b"%d" % i) for i in range(300)], [None] * 300)
    join.reset_changes()  # so that each closing is noted for the next delta
    times = [1_000 + HORIZON * i // 299 for i in range(300)]
    outcomes = join.on_labels(ids, times, ["a"] * 300, [None] * 300,
                              [payload_digest(b"l%d" % i) for i in range(300)], [None] * 300)
    assert len(outcomes) == 300 and fallbacks == []
    assert len(join.take_changes().closings) > 0


def test_outcomes_made_in_c_are_the_classes_objects_untracked_by_the_collector(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """C fills a JoinedOutcome's slots without its __init__ (which cost most of making one) and
    leaves it to reference counting: equal to the Python path's, of the class, pickled alike; an
    outcome class that is not plain slots (a __post_init__) is called instead."""
    if native.NATIVE is None:
        pytest.skip("no C fast path in this install")
    def outcomes() -> list[Any]:
        join = LabelJoin(HORIZON, 1_000, 1_000)
        ids = [f"p{i}" for i in range(40)]
        join.on_predictions(ids, [1_000] * 40, [CONTEXTS[i % 3] for i in range(40)],
                            [OUTPUTS[i % len(OUTPUTS)] for i in range(40)],
                            [{"x": float(i)} for i in range(40)],
                            [payload_digest(b"%d" % i) for i in range(40)], [None] * 40)
        return join.on_labels(ids, [2_000] * 40, ["a", 1, 2.5, True] * 10, [None] * 40,
                              [payload_digest(b"l%d" % i) for i in range(40)], [None] * 40)

    fast = outcomes()
    with reference_paths():
        slow = outcomes()
    assert fast == slow and {type(o) for o in fast} == {JoinedOutcome}
    assert not any(map(gc.is_tracked, fast)) and all(map(gc.is_tracked, slow))
    assert pickle.loads(pickle.dumps(fast)) == slow

    calls: list[int] = []

    @dataclasses.dataclass(slots=True)
    class Noted(JoinedOutcome):
        def __post_init__(self) -> None:
            calls.append(1)

    seen: list[tuple[Any, ...]] = []
    built = native.NATIVE

    class Recorded:  # the extension, each outcome_rows call's arguments kept
        def __getattr__(self, name: str) -> Any:
            return getattr(built, name)

        def outcome_rows(self, *args: Any) -> Any:
            seen.append(args)
            return built.outcome_rows(*args)

    monkeypatch.setattr(native, "NATIVE", Recorded())
    outcomes()
    joined, ctxs, _, label_info, binary, max_abs, _ = seen[0]
    made, _, _ = built.outcome_rows(joined, ctxs, {}, label_info, binary, max_abs, Noted)
    assert [type(o) for o in made] == [Noted] * len(joined) and len(calls) == len(joined) > 0


def test_slot_columns_are_attrgetter_s_and_leave_other_objects_to_it() -> None:
    """records.attribute_columns reads a batch of one slotted class in C (stage 1's records of
    outcomes and reports): the same lists as attrgetter; None for anything else (a namedtuple's
    fields, two classes, an unknown name, an unset slot), which attrgetter then reads or refuses."""
    if native.NATIVE is None:
        pytest.skip("no C fast path in this install")
    outcomes = [JoinedOutcome(f"p{i}", "m", "1", "", i, i + 1, 1, "a", 0.5 * i, None, "a", None, i % 2, None,
                              "{}") for i in range(5)]
    names = ("prediction_id", "label_time", "predicted_score", "correct", "rerouted")
    made = native.NATIVE.slot_columns(outcomes, JoinedOutcome, names)
    assert made == [[getattr(o, name) for o in outcomes] for name in names]
    assert attribute_columns(outcomes, names) == made and attribute_columns([], names) == [[]] * len(names)
    Pair = collections.namedtuple("Pair", ["prediction_id", "label_time"])
    pairs = [Pair("p", 1), Pair("q", 2)]

    @dataclasses.dataclass(slots=True)
    class Other:
        prediction_id: str

    unset = JoinedOutcome.__new__(JoinedOutcome)
    for objects, cls, fields in ((pairs, Pair, ("prediction_id",)), ([outcomes[0], Other("p")], JoinedOutcome,
                                 ("prediction_id",)), (outcomes, JoinedOutcome, ("nothing",)),
                                 ([unset], JoinedOutcome, ("prediction_id",))):
        assert native.NATIVE.slot_columns(objects, cls, fields) is None
    assert attribute_columns(pairs, ("label_time",)) == [[1, 2]]
    with pytest.raises(AttributeError):
        attribute_columns([unset], ("prediction_id",))


def test_new_predictions_of_a_known_layout_never_fall_back_to_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of new ids in one feature layout over 30 seconds of event time: after the first of
    each context (which interns the layout and the context in Python), C adds every one, splitting
    the table as it grows and starting each new second of the time index."""
    fallbacks = _python_calls(monkeypatch, "_add_predictions")
    join = LabelJoin(HORIZON, 1_000, 1_000)
    ids = [str(uuid.UUID(int=i + 1)) if i % 2 else f"text-{i}" for i in range(300)]
    xs = [float(i) for i in range(300)]
    groups_before = len(join._groups)
    join.on_predictions(ids, [1_000 + 100 * i for i in range(300)], [CONTEXTS[i % 3] for i in range(300)],
                        [OUTPUTS[i % len(OUTPUTS)] for i in range(300)], [{"x": x} for x in xs],
                        [payload_digest(b"%d" % i) for i in range(300)], [None] * 300,
                        columns=(("x",), [xs], [np.array(xs)]))
    assert fallbacks == [0, 1, 2] and join.pending_count == 300 and len(join._groups) > groups_before
    assert join._bucket_keys == list(range(1, 31)) and sum(map(len, join._buckets.values())) == 300


feature_names = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=8, unique=True)
float_values = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 1e16, 1e-5, 1e-7, 5e-324, 1.5e300]))
other_values = st.one_of(
    st.sampled_from(["", ",", "a,b", '"', '","', "\\", "é", "\u2028", "}", "[1,2]", "\n"]),
    st.text(max_size=5),
    st.booleans(), st.none(), st.integers(-(2**63), 2**63), st.integers(-(2**80), 2**80))


@st.composite
def batches_of_one_layout(draw: st.DrawFn) -> tuple[Any, list[bytes], list[dict[str, Any]]]:
    """A layout (names, which are floats) and rows of values of it, encoded as records keep them."""
    from driftline.operators.join.features import _Shape

    keys = tuple(draw(feature_names))
    floats = [draw(st.booleans()) for _ in keys]
    rows = [tuple(draw(float_values if f else other_values) for f in floats)
            for _ in range(draw(st.integers(1, 12)))]
    kinds = tuple(float if f else type(rows[0][i]) for i, f in enumerate(floats))
    rows = [row for row in rows if tuple(float if f else type(v) for f, v in zip(floats, row, strict=True))
            == kinds]
    shape = _Shape(keys, kinds)
    return shape, [shape.encode(row) for row in rows], [dict(zip(keys, row, strict=True)) for row in rows]


@settings(max_examples=300, deadline=None)
@given(batch=batches_of_one_layout())
def test_the_features_json_of_a_batch_is_the_python_path_s(
        batch: tuple[Any, list[bytes], list[dict[str, Any]]]) -> None:
    """The outcomes' features JSON put together in C equals the Python path's and each row's own
    (commas and quotes in strings, ints beyond 64 bits, NaN, non-ASCII, floats first or not)."""
    from driftline.operators.join.features import features_to_json

    shape, encoded, dicts = batch
    fast = shape.jsons(encoded)
    with reference_paths():
        slow = shape.jsons(encoded)
    assert fast == slow == [features_to_json(d) for d in dicts]


def test_the_features_json_of_a_common_batch_is_made_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """Floats and strings without commas: C puts every row together (its None would send the batch
    through Python's path, with the same rows, only slower)."""
    from driftline.operators.join.features import _Shape

    if native.NATIVE is None:
        pytest.skip("no C fast path in this install")
    shape = _Shape(("c", "x", "d", "y"), (str, float, str, float))
    rows = [("u", 0.5, "é", float(i)) for i in range(100)]
    made = native.NATIVE.rows_json([shape.encode(row) for row in rows], 16, orjson.dumps(
        [v for row in rows for v in (row[1], row[3])]), 2, 2, [b'{"c":', b',"x":', b',"d":', b',"y":'],
        [2, 0, 3, 1])
    assert made == [f'{{"c":"u","x":0.5,"d":"é","y":{float(i)}}}' for i in range(100)]


_OTHER_VALUES = {
    str: st.one_of(st.sampled_from(["a", "é", "", "x y", "a,b", "q\"uote", "back\\slash", "tab\t", "\x7f"]),
                   st.text(max_size=6)),
    int: st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([2**63, -(2**63) - 1, 2**64, 0])),
    bool: st.booleans(),
    type(None): st.none(),
}


@st.composite
def feature_columns(draw: st.DrawFn) -> tuple[list[str], list[list[Any]], list[Any]]:
    """A batch's features as columns of one type each (floats with their float64 column)."""
    kinds = draw(st.lists(st.sampled_from([float, str, int, bool, type(None)]), min_size=1, max_size=5))
    n = draw(st.integers(0, 6))
    columns: list[list[Any]] = []
    numbers: list[Any] = []
    for kind in kinds:
        if kind is float:
            column = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n, max_size=n))
            numbers.append(np.asarray(column, dtype=np.float64))
        else:
            column = draw(st.lists(_OTHER_VALUES[kind], min_size=n, max_size=n))
            numbers.append(None)
        columns.append(column)
    return [f"f{j}" for j in range(len(kinds))], columns, numbers


@settings(max_examples=400, deadline=None)
@given(batch=feature_columns())
def test_features_packed_in_c_are_the_python_path_s(
        batch: tuple[list[str], list[list[Any]], list[Any]]) -> None:
    """A batch's pending-record encodings of its features made in one C pass (``packed_rows``)
    equal the Python path's, byte for byte; C leaves a batch to Python where a string needs an
    escape or an int is beyond 64 bits (orjson's own text for them), and takes every other."""
    from driftline.operators.join.features import _packed_features

    names, columns, numbers = batch
    if native.NATIVE is None:
        pytest.skip("no C fast path in this install")
    others = [c for c, kind in zip(columns, numbers, strict=True) if kind is None]
    floats = [c for c, kind in zip(columns, numbers, strict=True) if kind is not None]
    n = len(columns[0])
    block = np.column_stack(floats).astype("<f8") if floats else None
    made = native.NATIVE.packed_rows(block, 8 * len(floats), others, n)
    def plain(v: Any) -> bool:  # what C writes as orjson does: no escape, no int beyond 64 bits
        if isinstance(v, str):
            return not any(ch in '"\\' or ord(ch) < 0x20 or 0xD800 <= ord(ch) < 0xE000 for ch in v)
        return type(v) is not int or -(2**63) <= v < 2**63

    assert (made is not None) == all(plain(v) for c in others for v in c)
    fast = _packed_features(names, columns, numbers)
    with reference_paths():
        slow = _packed_features(names, columns, numbers)
    assert fast == slow


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(
    st.one_of(st.sampled_from(["a", "é", "", "1", "true"]), st.integers(-3, 3), st.booleans(), st.none(),
              st.floats(-2.0, 2.0)),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none()),
    st.one_of(st.none(), st.floats(-5.0, 5.0))), max_size=12))
@example(rows=[(1, 0.5, None), (True, 0.25, None), ("1", -0.0, None), (False, 1.0, None), (0, 0.75, None)])
def test_pending_tails_in_c_are_the_python_path_s(rows: list[tuple[Any, Any, Any]]) -> None:
    """What pending records keep of a batch's outputs, made in C (``pending_tails``), equals the
    Python path's (True apart from 1 and "true", -0.0 and NaN scores); C takes exactly the batches of
    scored class predictions (every score a float, every label a str, int or bool, no value)."""
    from driftline.operators.columns import OutputColumns
    from driftline.operators.join.outputs import _label_text, _pending_tails

    if native.NATIVE is None:
        pytest.skip("no C fast path in this install")
    labels, scores, values = ([row[i] for row in rows] for i in range(3))
    columns = OutputColumns(labels, scores, values, frozenset({"label", "score", "value"}))
    made = native.NATIVE.pending_tails(scores, labels, _label_text, 1)
    taken = all(type(s) is float for s in scores) and all(type(v) in (str, int, bool) for v in labels)
    assert (made is not None) == taken
    fast = _pending_tails(columns)
    with reference_paths():
        slow = _pending_tails(columns)
    assert fast == slow


def test_labels_of_spilled_predictions_are_joined_in_c(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """Past the memory budget a pending record's payload is in the store: C reads it back for the
    outcome (the pending store's ``get``) instead of leaving the label to Python."""
    fallbacks = _python_calls(monkeypatch, "_close_labels")

    def joined(directory: Path) -> tuple[int, list[Any], bytes]:
        join = LabelJoin(HORIZON, 1_000, 1_000)
        join.set_memory_budget(1, directory)
        ids, xs = [f"s{i}" for i in range(200)], [float(i) for i in range(200)]
        join.on_predictions(ids, [1_000 + i for i in range(200)], [CONTEXTS[i % 3] for i in range(200)],
                            [OUTPUTS[i % len(OUTPUTS)] for i in range(200)], [{"x": x} for x in xs],
                            [payload_digest(b"%d" % i) for i in range(200)], [None] * 200,
                            columns=(("x",), [xs], [np.array(xs)]))
        spilled = join.spilled_count
        outcomes = join.on_labels(ids, [2_000 + i for i in range(200)],
                                  [LABELS[i % len(LABELS)] for i in range(200)], [None] * 200,
                                  [payload_digest(b"l%d" % i) for i in range(200)], [None] * 200)
        return spilled, outcomes, pickle.dumps(join)

    spilled, outcomes, state = joined(tmp_path / "fast")
    assert spilled > 150 and len(outcomes) == 200 and fallbacks == []  # every label in C
    with reference_paths():
        assert joined(tmp_path / "slow") == (spilled, outcomes, state)


@settings(max_examples=300, deadline=None)
@given(payloads=st.lists(st.one_of(st.binary(max_size=80), st.binary(min_size=80, max_size=2_000)),
                         max_size=12))
def test_payload_digests_in_c_are_the_python_ones(payloads: list[bytes]) -> None:
    # lengths across the fold's 16-byte blocks, the byte tables' 8-byte steps and their tails
    if native.NATIVE is None:
        pytest.skip("the join's C extension is not built here")
    assert native.NATIVE.payload_digests(payloads) == [payload_digest(p) for p in payloads]
    with reference_paths():
        assert payload_digests(payloads) == [payload_digest(p) for p in payloads]
    assert payload_digests(tuple(payloads)) == [payload_digest(p) for p in payloads]


def test_payload_digests_in_c_of_every_length_and_bytes_like() -> None:
    if native.NATIVE is None:
        pytest.skip("the join's C extension is not built here")
    data = bytes(range(256)) * 5
    every = [data[i : i + n] for n in range(300) for i in (0, 3)]  # unaligned starts too
    assert native.NATIVE.payload_digests(every) == [payload_digest(p) for p in every]
    assert native.NATIVE.payload_digests([bytearray(b"abc"), memoryview(data)]) == \
        [payload_digest(b"abc"), payload_digest(data)]
    with pytest.raises(TypeError):
        native.NATIVE.payload_digests([b"a", None])
    with pytest.raises(TypeError):
        native.NATIVE.payload_digests((b"a",))


uuid_like = st.builds(lambda u, upper, at, c: _edited(str(u).upper() if upper else str(u), at, c),
                      st.uuids(), st.booleans(), st.integers(-1, 35), st.sampled_from("-0aAg é"))


def _edited(text: str, at: int, char: str) -> str:
    return text if at < 0 else text[:at] + char + text[at + 1 :]


@settings(max_examples=300, deadline=None)
@given(pids=st.lists(st.one_of(uuid_like, st.text(max_size=40), st.text("ab", min_size=300, max_size=400)),
                     max_size=10))
def test_id_keys_in_c_are_the_python_ones(pids: list[str]) -> None:
    # canonical UUIDs, near misses (a dash moved, uppercase, a non-hex digit), other text of any length
    if native.NATIVE is None:
        pytest.skip("the join's C extension is not built here")
    reference = [_id_key(p) for p in pids]
    both = native.NATIVE.id_keys(pids)
    if all(p.isascii() for p in pids):
        assert both == (reference, [zlib.crc32(key) for key in reference])
    else:  # the rest are records.py's alone
        assert both is None
    assert _keyed_crcs(pids) == (reference, [zlib.crc32(key) for key in reference])
    with reference_paths():
        assert _keyed_crcs(tuple(pids)) == (reference, [zlib.crc32(key) for key in reference])
