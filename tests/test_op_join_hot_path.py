"""The join's shortcuts against the functions they stand for: the features JSON of an outcome written
from a record's bytes (:meth:`_Shape.json`) against :func:`features_to_json` of the decoded dict, the
pending tails of a batch against :func:`_pending_tail` of each prediction, the id keys of a batch
against :func:`_id_key` of each id (a batch of canonical UUIDs checked at once too)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from driftline.operators.join.features import _Shape, features_to_json
from driftline.operators.join.outputs import _pending_tail, _pending_tails
from driftline.operators.join.records import _id_key, _id_keys
from driftline.schemas.events import Prediction

names = st.text(min_size=1, max_size=8)
texts = st.one_of(st.sampled_from(["", ",", "a,b", '"', '","', "\\", "é", "\u2028", "}", "[1,2]"]),
                  st.text(max_size=6))
float_values = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 1e16, 1e-7, 5e-324, 1.5e300]))
other_values = st.one_of(texts, st.booleans(), st.none(), st.integers(-(2**64), 2**64),
                         st.integers(-(2**80), 2**80))


Layout = tuple[tuple[str, ...], tuple[Any, ...]]


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    """Distinct names and a value each, floats and other values in any order."""
    keys = tuple(draw(st.lists(names, max_size=8, unique=True)))
    return keys, tuple(draw(st.one_of(float_values, other_values)) for _ in keys)


@given(st.lists(layouts(), min_size=1, max_size=20))
def test_features_json_from_the_record_equals_the_dicts(cases: list[Layout]) -> None:
    for keys, values in cases:
        shape = _Shape(keys, tuple(map(type, values)))
        data = b"head" + shape.encode(values) + b"tail"
        end = len(data) - 4
        expected = features_to_json(dict(zip(keys, values, strict=True)))
        assert shape.json(data, 4, end) == features_to_json(shape.decode(data, 4, end)) == expected


labels = st.one_of(st.sampled_from([0, 1, True, False, "yes", "1", 2**70, -3]), st.text(max_size=4))
predictions = st.one_of(
    st.builds(Prediction, label=labels, score=st.floats(-1e300, 1e300)),
    st.builds(Prediction, label=labels, score=st.sampled_from([0.0, -0.0, 0.5, 1.0])),
    st.builds(Prediction, score=st.floats(0, 1)),
    st.builds(Prediction, label=labels),
    st.builds(Prediction, value=st.floats(-10, 10)),
    st.builds(Prediction, label=labels, probabilities=st.just({"a": 0.25, "b": 0.75})),
)


@given(st.lists(predictions, max_size=12), st.booleans())
def test_pending_tails_equal_each_predictions(batch: list[Prediction], common_only: bool) -> None:
    if common_only:  # the shape the batch form takes at once
        batch = [p for p in batch if p.label is not None and p.score is not None and p.value is None
                 and p.probabilities is None]
    assert _pending_tails(batch) == list(map(_pending_tail, batch))


ids = st.one_of(st.text(min_size=1, max_size=40), st.uuids().map(str),
                st.uuids().map(lambda u: str(u).upper()),
                st.sampled_from(["x" * 36, "-" * 36, "\ud800", "é" * 36]))


@given(st.lists(ids, max_size=10))
def test_id_keys_equal_each_ids(batch: list[str]) -> None:
    assert _id_keys(batch) == list(map(_id_key, batch))


near_uuids = st.uuids().flatmap(lambda u: st.sampled_from([
    str(u).upper(), str(u).replace("-", "", 1) + "-", str(u)[:-1] + " ", str(u)[:-1] + "g", str(u)[:-1] + "é",
    str(u)[:8] + str(u)[9] + "-" + str(u)[10:]]))


@given(st.lists(st.uuids().map(str), min_size=16, max_size=40), st.none() | near_uuids, st.integers(0, 39))
def test_id_keys_of_a_batch_of_uuids_equal_each_ids(batch: list[str], other: str | None, at: int) -> None:
    """A batch long enough to be checked at once (``_uuid_keys``), canonical or with one id that is
    not (uppercase, a dash moved, whitespace, a non-hex or non-ASCII character)."""
    if other is not None:
        batch[at % len(batch)] = other
    assert _id_keys(batch) == list(map(_id_key, batch))
