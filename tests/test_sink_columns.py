"""Sink messages of columns (``records.sink_rows``'s ``blocks`` form): the rows a message is built
from are the rows the sink reads back, in order, and a stream mixing it with the older ``rows``
form buffers in the ClickHouse writer exactly what writing each message's rows did (no ClickHouse
needed: the table schema is given, nothing is flushed)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import orjson
import pytest

from driftline.config import TopicSettings
from driftline.pipeline import records
from driftline.pipeline.records import ColumnBlock, row_blocks
from driftline.pipeline.to_rows import RowMapper
from driftline.store.writer import ClickHouseRowWriter, _Column, _converter

SINK = TopicSettings().sink
SCHEMA = [
    ("run_id", "String"),
    ("model_id", "LowCardinality(String)"),
    ("window_start", "DateTime64(3, 'UTC')"),
    ("feature", "String"),
    ("count", "UInt64"),
    ("mean", "Nullable(Float64)"),
    ("bin_edges", "Array(Float64)"),
    ("drifted_by", "Array(LowCardinality(String))"),
    ("evidence", "String"),
]


def _writer() -> ClickHouseRowWriter:
    writer = ClickHouseRowWriter(None, "db", close_client=False)  # type: ignore[arg-type]
    writer._schemas["t"] = {name: _Column(name, type_name, "Nullable(" in type_name, _converter(type_name))
                            for name, type_name in SCHEMA}
    return writer


def _random_row(rnd: random.Random, i: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model_id": rnd.choice(["m1", "m2", "é"]),
        "window_start": 1_760_000_000_000 + rnd.randrange(10**6),
        "feature": rnd.choice(["x", "y", ""]),
        "count": rnd.randrange(100),
        "mean": rnd.choice([None, -0.0, 1e308, rnd.random(), 2**-1074]),
        "bin_edges": rnd.choice([[], [0.1, 0.2], [-0.0]]),
        "drifted_by": rnd.choice([[], ["psi"], ["psi", "ks"]]),
        "evidence": rnd.choice([{"a": i, "b": [1, None]}, [i, "x"], "plain"]),
    }
    for name in rnd.sample(["mean", "bin_edges", "evidence", "feature"], rnd.randrange(3)):
        del row[name]  # a column left to its default
    if rnd.random() < 0.2:  # the same keys in another order
        row = dict(reversed(list(row.items())))
    return row


def _runs(rnd: random.Random, n: int) -> list[dict[str, Any]]:
    """Rows in runs of like rows (as a builder makes them), some runs of one row."""
    rows: list[dict[str, Any]] = []
    while len(rows) < n:
        first = _random_row(rnd, len(rows))
        for _ in range(rnd.choice([1, 1, 3, 30])):
            row = _random_row(rnd, len(rows))
            rows.append({name: row.get(name, first[name]) for name in first})
    return rows


@pytest.mark.parametrize("seed", range(4))
def test_a_columns_message_reads_back_as_its_rows(seed: int) -> None:
    rows = _runs(random.Random(seed), 200)
    messages = records.sink_rows(SINK, "t", rows, chunk=37)
    assert all(b'"blocks"' in m.value and b'"rows"' not in m.value for m in messages)
    read = [r for m in messages for r in RowMapper(TopicSettings()).rows(SINK, m.value)[1]]
    # the same rows, keys in the same order, values of the same types (-0.0 stays -0.0)
    assert orjson.dumps(read) == orjson.dumps(rows)
    assert [list(r.items()) for r in read] == [list(r.items()) for r in rows]
    blocks = [b for m in messages for b in RowMapper(TopicSettings()).blocks(SINK, m.value)[1]]
    assert [r for b in blocks for r in b.rows()] == rows


@pytest.mark.parametrize("run_id", [None, "replay-1"])
def test_a_mixed_stream_buffers_what_writing_rows_did(run_id: str | None) -> None:
    rnd = random.Random(7)
    mapper = RowMapper(TopicSettings(), run_id=run_id)
    before, now = _writer(), _writer()
    for i in range(12):
        rows = _runs(rnd, rnd.randrange(1, 80))
        if i % 3 == 0:
            for row in rows[::5]:
                row["run_id"] = "live"  # a run_id already a column: the replay's replaces it in place
        old_form = orjson.dumps({"table": "t", "rows": rows})
        new_form = records.sink_rows(SINK, "t", rows)[0].value
        before.write(*mapper.rows(SINK, old_form))  # the sink until now
        now.write_blocks(*mapper.blocks(SINK, new_form if i % 2 else old_form))
    assert list(now._batches) == list(before._batches)
    assert {k: b.data for k, b in now._batches.items()} == {k: b.data for k, b in before._batches.items()}
    assert now._buffered == before._buffered == sum(b.rows for b in before._batches.values())


@pytest.mark.parametrize("bad, message", [
    ({"model_id": "m", "count": None}, r"db\.t\.count is not Nullable"),
    ({"model_id": "m", "nope": 1}, r"db\.t has no column\(s\) nope"),
])
def test_a_bad_row_in_a_block_raises_as_before_and_buffers_nothing(bad: dict[str, Any], message: str) -> None:
    writer = _writer()
    good = [{"model_id": "a", "count": 1}, {"model_id": "b", "count": 0}]
    with pytest.raises(ValueError, match=message):
        writer.write("t", [*good, bad, *good])
    with pytest.raises(ValueError, match=message):
        writer.write_blocks("t", row_blocks([*good, *good, bad, *good]))
    assert writer._batches == {} and writer._buffered == 0
    writer.write_blocks("t", row_blocks(good))
    assert writer._buffered == 2


@pytest.mark.parametrize("block", [
    {"names": ["a", "b"], "n": 2, "columns": [[1, 2], [3]]},  # a short column
    {"names": ["a", "a"], "n": 1, "columns": [[1], [2]]},  # a name twice
    {"names": ["a"], "n": -1, "columns": [[]]},
    {"names": ["a"], "n": 1.0, "columns": [[1]]},
    {"names": [1], "n": 1, "columns": [[1]]},
    {"names": ["a", "b"], "n": 1, "columns": [[1]]},  # a name without a column
    [["a"], 1, [[1]]],
])
def test_a_malformed_block_is_refused(block: Any) -> None:
    value = orjson.dumps({"table": "t", "blocks": [block]})
    with pytest.raises(ValueError, match="a sink message is"):
        RowMapper(TopicSettings()).blocks(SINK, value)
    with pytest.raises(ValueError, match="a sink message is"):
        RowMapper(TopicSettings()).rows(SINK, value)


def test_rows_without_keys_keep_their_count() -> None:
    (message,) = records.sink_rows(SINK, "t", [{"a": 1}, {}, {}, {"a": 2}])
    assert RowMapper(TopicSettings()).rows(SINK, message.value) == ("t", [{"a": 1}, {}, {}, {"a": 2}])
    assert [b.n for b in row_blocks([{}, {}])] == [2] and ColumnBlock((), [], 2).rows() == [{}, {}]


@pytest.mark.parametrize("seed", range(3))
def test_one_row_messages_joined_into_runs_buffer_what_writing_each_row_did(seed: int) -> None:
    # (as the outcomes topic's messages: the sink joins a batch's runs of one layout into a block)
    rows = _runs(random.Random(seed), 150)
    mapper = RowMapper(TopicSettings())
    messages = [orjson.dumps({"table": "t", "rows": [row]}) for row in rows]
    per_message = [b for message in messages for b in mapper.blocks(SINK, message)[1]]
    copies = [(b.names, [list(c) for c in b.columns], b.n) for b in per_message]
    joined = records.joined_blocks(per_message)
    runs = 1 + sum(tuple(a) != tuple(b) for a, b in itertools.pairwise(rows))
    assert len(per_message) == len(rows) and len(joined) == runs
    assert [r for b in joined for r in b.rows()] == rows
    assert [(b.names, b.columns, b.n) for b in per_message] == copies  # (the messages' blocks unchanged)
    before, now = _writer(), _writer()
    for row in rows:
        before.write("t", [row])
    now.write_blocks("t", joined)
    assert {k: b.data for k, b in now._batches.items()} == {k: b.data for k, b in before._batches.items()}
    assert now._buffered == before._buffered == len(rows)
