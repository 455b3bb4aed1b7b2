"""ClickHouseRowWriter.write converts rows a column at a time: the buffered columns, their grouping
by key set and the errors for bad rows are those of converting row by row (no ClickHouse needed:
the table schema is given, nothing is flushed)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from driftline.store.writer import ClickHouseRowWriter, _Column, _converter

SCHEMA = [
    ("prediction_id", "String"),
    ("model_id", "LowCardinality(String)"),
    ("prediction_time", "DateTime64(3, 'UTC')"),
    ("label_time", "Nullable(DateTime64(6, 'UTC'))"),
    ("predicted_score", "Nullable(Float64)"),
    ("correct", "UInt8"),
    ("features", "String"),
    ("segment", "String"),
]
T0 = 1_760_000_000_123


def _writer() -> ClickHouseRowWriter:
    writer = ClickHouseRowWriter(None, "db", close_client=False)  # type: ignore[arg-type]
    writer._schemas["t"] = {name: _Column(name, type_name, "Nullable(" in type_name, _converter(type_name))
                            for name, type_name in SCHEMA}
    return writer


def _row_by_row(writer: ClickHouseRowWriter, rows: Sequence[Mapping[str, Any]]) -> dict[Any, list[list[Any]]]:
    """What the writer buffered before: each row's keys in table order, converted cell by cell."""
    schema = writer._schemas["t"]
    out: dict[Any, list[list[Any]]] = {}
    for row in rows:
        keys = tuple(name for name in schema if name in row)
        values = writer._convert("t", schema, keys, row)
        columns = out.setdefault(("t", keys), [[] for _ in keys])
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return out


def _random_row(rnd: random.Random, i: int) -> dict[str, Any]:
    when = T0 + rnd.randrange(10**6)
    row: dict[str, Any] = {
        "prediction_id": f"p{i}",
        "model_id": rnd.choice(["m1", "m2"]),
        "prediction_time": rnd.choice([when, datetime.fromtimestamp(when / 1000, UTC),
                                       datetime.fromtimestamp(when / 1000, UTC).isoformat()]),
        "label_time": rnd.choice([None, when + 5,
                                  datetime.fromtimestamp(when / 1000, UTC) + timedelta(seconds=1)]),
        "predicted_score": rnd.choice([None, rnd.random()]),
        "correct": rnd.randrange(2),
        "features": rnd.choice([{"a": i, "b": [1, 2]}, [i, "x"], "plain"]),
        "segment": "",
    }
    for name in rnd.sample(["label_time", "predicted_score", "features", "segment"], rnd.randrange(3)):
        del row[name]  # a column left to its default
    if rnd.random() < 0.3:  # the same keys in another order
        row = dict(reversed(list(row.items())))
    return row


@pytest.mark.parametrize("seed", range(5))
def test_columns_are_those_of_converting_row_by_row(seed: int) -> None:
    rnd = random.Random(seed)
    writer = _writer()
    written: list[dict[str, Any]] = []
    for call in range(6):
        rows = [_random_row(rnd, call * 100 + i) for i in range(rnd.randrange(1, 60))]
        writer.write("t", rows)
        written += rows
    expected = _row_by_row(writer, written)
    assert list(writer._batches) == list(expected)  # same groups, in order of first appearance
    assert {key: batch.data for key, batch in writer._batches.items()} == expected
    assert sum(batch.rows for batch in writer._batches.values()) == writer._buffered == len(written)


@pytest.mark.parametrize("bad, message", [
    ({"prediction_id": "p", "correct": None}, r"db\.t\.correct is not Nullable"),
    ({"prediction_id": "p", "nope": 1}, r"db\.t has no column\(s\) nope"),
])
def test_a_bad_row_raises_as_before_and_buffers_nothing(bad: dict[str, Any], message: str) -> None:
    writer = _writer()
    good = [{"prediction_id": "a", "correct": 1}, {"prediction_id": "b", "correct": 0}]
    with pytest.raises(ValueError, match=message):
        writer.write("t", [*good, bad, *good])
    assert writer._batches == {} and writer._buffered == 0
    writer.write("t", good)
    assert writer._buffered == 2
