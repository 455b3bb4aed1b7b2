"""The features' JSON of a batch of joined records, made at once (``_Shape.jsons``), against the
per-record text (``_Shape.json``, itself checked against ``features_to_json`` of the decoded
features): the same strings for every layout (floats and other values interleaved, floats only,
others only, no features), with values that break the batch path's splitting (commas, newlines in
strings, ints beyond 64 bits) and floats of every bit pattern (orjson writes a float64 array's items
as it writes Python floats: the batch path relies on it)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.operators.join import LabelJoin, features_to_json, payload_digest
from driftline.operators.join.features import _Shape, floats_json
from driftline.schemas.events import Prediction

floats = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def batches(draw: st.DrawFn) -> tuple[_Shape, list[tuple[Any, ...]]]:
    kinds = draw(st.lists(st.sampled_from([float, str, int, bool]), max_size=6))
    keys = tuple(f"k{i}" for i in range(len(kinds)))
    rows = []
    for _ in range(draw(st.integers(0, 8))):
        row = []
        for kind in kinds:
            if kind is float:
                row.append(draw(floats))
            elif kind is str:
                row.append(draw(st.one_of(st.text(max_size=4), st.sampled_from(["a,b", "\n", "]["]))))
            elif kind is int:
                row.append(draw(st.integers(-(2**70), 2**70)))
            else:
                row.append(draw(st.booleans()))
        rows.append(tuple(row))
    return _Shape(keys, tuple(kinds)), rows


@settings(max_examples=300, deadline=None)
@given(batches())
def test_a_batch_of_features_has_each_records_json(batch: tuple[_Shape, list[tuple[Any, ...]]]) -> None:
    shape, rows = batch
    encoded = [shape.encode(row) for row in rows]
    one_by_one = [shape.json(data, 0, len(data)) for data in encoded]
    assert shape.jsons(encoded) == one_by_one
    assert one_by_one == [features_to_json(dict(zip(shape.keys, row, strict=True))) for row in rows]


def test_a_batch_path_breaking_value_makes_the_batch_go_row_by_row() -> None:
    shape = _Shape(("x", "c", "y"), (float, str, float))
    rows = [(0.5, "a", 1.0), (float("nan"), "a,b", 2.0), (1e16, "\n", -0.0)]
    encoded = [shape.encode(row) for row in rows]
    assert shape.jsons(encoded) == [
        '{"x":0.5,"c":"a","y":1.0}', '{"x":null,"c":"a,b","y":2.0}', '{"x":1e+16,"c":"\\n","y":-0.0}']
    big = _Shape(("c",), (int,))
    assert big.jsons([big.encode((2**70,)), big.encode((1,))]) == ['{"c":1180591620717411303424}', '{"c":1}']


def test_orjson_writes_float64_items_as_python_floats() -> None:
    rng = np.random.default_rng(15)
    values = np.concatenate([
        rng.integers(0, 2**64, 200_000, dtype=np.uint64).view("<f8"),  # every bit pattern: subnormals, NaNs
        np.round(rng.uniform(-1e6, 1e6, 100_000), 4),  # what features look like
        [0.0, -0.0, np.inf, -np.inf, 5e-324, 1.7976931348623157e308, 1e16, 1e-7, 0.1],
    ])
    packed = values.astype("<f8").tobytes()
    assert floats_json(packed) == orjson.dumps(struct.unpack(f"<{values.size}d", packed))


def test_outcomes_of_a_batch_of_mixed_layouts_keep_their_order() -> None:
    join = LabelJoin(horizon_ms=10_000, max_pending=100, max_held=100)
    layouts: list[dict[str, Any]] = [{"x": 0.5, "c": "u"}, {"c": "v", "x": 1.5}, {}, {"x": 2**70}]
    pids = [f"p{i}" for i in range(12)]
    features = [layouts[i % len(layouts)] for i in range(12)]
    join.on_predictions(pids, [1_000 + i for i in range(12)], [("m", "1", "")] * 12,
                        [Prediction(score=0.5)] * 12, features, [payload_digest(p.encode()) for p in pids],
                        [None] * 12)
    order = pids[::-1]
    outcomes = join.on_labels(order, [5_000] * 12, [1] * 12, [None] * 12,
                              [payload_digest(b"l" + p.encode()) for p in order], [None] * 12)
    assert [o.prediction_id for o in outcomes] == order
    assert [o.features_json for o in outcomes] == [features_to_json(features[int(p[1:])]) for p in order]


predictions = st.builds(
    Prediction,
    label=st.one_of(st.none(), st.sampled_from(["1", "yes", 0, True])),
    score=st.one_of(st.none(), st.sampled_from([0.0, 0.25, 0.5, 0.9])),
    probabilities=st.one_of(st.none(), st.just({"yes": 0.2, "no": 0.8})),
    value=st.one_of(st.none(), st.sampled_from([-2.5, 0.0, 1.0, 1e300])),
)
label_values = st.sampled_from(
    ["1", "0", "true", "false", "yes", 1, 0, 0.5, True, False, "2.5", "1e300", "nan"])


def _predict(join: LabelJoin, prediction: Prediction, rerouted: bool) -> list[Any]:
    return join.on_predictions(["p"], [1_000], [("m", "1", "s")], [prediction], [{"x": 0.5, "c": "u"}],
                               [payload_digest(b"p")], [None], rerouted)[0]


def _label(join: LabelJoin, label: Any, rerouted: bool) -> list[Any]:
    return join.on_labels(["p"], [3_000], [label], [None], [payload_digest(b"l")], [None], rerouted)


@settings(max_examples=300, deadline=None)
@given(predictions, label_values, st.booleans(), st.booleans())
def test_an_outcome_is_the_same_whichever_side_came_first(
    prediction: Prediction, label: Any, pred_rerouted: bool, label_rerouted: bool
) -> None:
    """A label that meets its pending prediction (the batch path, its outcome made inline) and a held
    label that a prediction claims (``_outcome``) give the same outcome, for every kind of output."""
    outcomes = []
    for label_first in (False, True):
        join = LabelJoin(horizon_ms=10_000, max_pending=10, max_held=10)
        if label_first:
            made = _label(join, label, label_rerouted) + _predict(join, prediction, pred_rerouted)
        else:
            made = _predict(join, prediction, pred_rerouted) + _label(join, label, label_rerouted)
        assert len(made) == 1
        outcomes.append(made[0])
    assert outcomes[0] == outcomes[1]
    assert outcomes[0].rerouted == (1 if pred_rerouted else 0) | (2 if label_rerouted else 0)
