"""ClickHouseRowWriter.write_json_objects: JSON objects read in C into a Native block insert the same
rows as the row-by-row way (orjson, then ``write``), value for value, on the real engine; a batch
the C pass does not take as it stands is refused whole, nothing buffered, for the caller to write
row by row; an insert ClickHouse refuses turns the pass off and its rows go in the other way."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from driftline.config import Settings, TopicSettings
from driftline.operators.compiled_paths import reference_paths
from driftline.pipeline import records
from driftline.pipeline.records import joined_blocks
from driftline.pipeline.to_rows import RowMapper, _blocks_form
from driftline.store.client import connect, database_name
from driftline.store.native_rows import NativeLayout, native_block, native_layout, native_sink_message
from driftline.store.writer import ClickHouseRowWriter, RowRefused

pytestmark = pytest.mark.integration

COLUMNS = [
    ("i", "Int64"), ("s", "String"), ("lc", "LowCardinality(String)"), ("ns", "Nullable(String)"),
    ("lns", "LowCardinality(Nullable(String))"), ("u", "UInt8"), ("nu", "Nullable(UInt8)"), ("f", "Float64"),
    ("nf", "Nullable(Float64)"), ("t0", "DateTime64(0, 'UTC')"), ("t2", "DateTime64(2, 'UTC')"),
    ("t3", "DateTime64(3, 'UTC')"), ("t6", "DateTime64(6)"), ("i32", "Int32"), ("ni32", "Nullable(Int32)"),
    ("u64", "UInt64"), ("u32", "UInt32"), ("u16", "UInt16"), ("nt3", "Nullable(DateTime64(3, 'UTC'))"),
    ("as", "Array(String)"), ("af", "Array(Float64)"), ("au", "Array(UInt16)"),
]
TEXTS = ["", "a", 'say "hi"', "back\\slash", "a/b", "\b\f\n\r\t", "\x00nul", "caf\u00e9", "\u20ac 5",
         "\U0001f600 grin", "line\u2028sep", "\u007f", "{\"x\":1.5,\"c\":\"v\"}", "mixé\\\"/\U0001f680"]


@pytest.fixture
def store(settings: Settings) -> tuple[Client, str]:
    client = connect(settings)
    database = database_name(settings)
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    columns = ", ".join(f"{name} {type_name}" for name, type_name in COLUMNS)
    for table in ("by_rows", "by_blocks"):
        client.command(f"CREATE TABLE {database}.{table} ({columns}) ENGINE = MergeTree ORDER BY i")
    return client, database


def _string(rnd: random.Random, value: str) -> str:
    """``value`` as JSON text, escaped one of the ways a JSON writer may escape it."""
    style = rnd.randrange(3)
    if style == 0:
        return orjson.dumps(value).decode()  # raw UTF-8, the fewest escapes
    if style == 1:
        return json.dumps(value)  # every non-ASCII character escaped, surrogate pairs for astral ones
    return json.dumps(value, ensure_ascii=False).replace("/", "\\/")


def _number(rnd: random.Random, value: float) -> str:
    return rnd.choice([repr(value), f"{value:.17e}", f"{value:E}", json.dumps(value)])


def _object(rnd: random.Random, i: int) -> bytes:
    """A row of every kind, each value written one of the ways JSON allows, blanks between tokens."""
    def blank() -> str:
        return rnd.choice(["", "", " ", "\n ", "\t"])

    ms = rnd.choice([rnd.randrange(-10**12, 4 * 10**12), -1, 0, 1, -999, -1000, -1001, 1_767_225_600_390])
    values = {
        "i": str(i),
        "s": _string(rnd, rnd.choice(TEXTS) + rnd.choice(TEXTS)),
        "lc": _string(rnd, rnd.choice(TEXTS[:6])),
        "ns": rnd.choice(["null", _string(rnd, rnd.choice(TEXTS))]),
        "lns": rnd.choice(["null", _string(rnd, rnd.choice(TEXTS[:4]))]),
        "u": str(rnd.randrange(256)),
        "nu": rnd.choice(["null", "0", "1", "255"]),
        "f": rnd.choice([_number(rnd, rnd.uniform(-1e6, 1e6)), str(rnd.randrange(-10**17, 10**17)), "-0",
                         "-0.0", "1e-300", "2.5E+3", "0.1", "123456789012345678",
                         _number(rnd, rnd.random() * 1e-12)]),
        "nf": rnd.choice(["null", _number(rnd, rnd.gauss(0, 1e3)), "7"]),
        "t0": str(ms), "t2": str(ms), "t3": str(ms), "t6": str(ms),
        "i32": str(rnd.choice([-2**31, 2**31 - 1, 0, rnd.randrange(-999, 999)])),
        "ni32": rnd.choice(["null", "-7"]),
        "u64": str(rnd.choice([0, 10**18 - 1, rnd.randrange(10**12)])),
        "u32": str(rnd.choice([0, 2**32 - 1, 77])),
        "u16": str(rnd.choice([0, 65535, 300])),
        "nt3": rnd.choice(["null", str(ms)]),
        "as": "[" + ",".join(_string(rnd, rnd.choice(TEXTS)) for _ in range(rnd.randrange(4))) + "]",
        "af": "[" + f",{blank()}".join(_number(rnd, rnd.uniform(-9, 9))
                                        for _ in range(rnd.randrange(5))) + "]",
        "au": "[" + ",".join(str(rnd.randrange(65536)) for _ in range(rnd.randrange(3))) + "]",
    }
    if rnd.random() < 0.2:
        values["u"] = rnd.choice(["true", "false"])  # the writer writes a bool as 1 or 0
    body = ",".join(f"{blank()}\"{name}\"{blank()}:{blank()}{values[name]}{blank()}" for name, _ in COLUMNS)
    return f"{blank()}{{{body}}}{blank()}".encode()


def test_a_batch_read_in_c_inserts_the_rows_the_row_by_row_way_inserts(store: tuple[Client, str]) -> None:
    client, database = store
    rnd = random.Random(5)
    by_rows = ClickHouseRowWriter(client, database, close_client=False)
    by_blocks = ClickHouseRowWriter(client, database, close_client=False)
    for batch, size in enumerate((1, 7, 300, 300, 300, 300)):
        values = [_object(rnd, batch * 1000 + i) for i in range(size)]
        by_rows.write("by_rows", [orjson.loads(value) for value in values])
        assert by_blocks.write_json_objects("by_blocks", values), values[:3]
    by_rows.flush()
    by_blocks.flush()
    select = "SELECT * FROM {database}.{table} ORDER BY i"
    expected = client.query(select.format(database=database, table="by_rows")).result_rows
    got = client.query(select.format(database=database, table="by_blocks")).result_rows
    assert len(got) == len(expected) > 1000
    assert got == expected


def _base() -> dict[str, Any]:
    return {"i": 1, "s": "x", "lc": "m", "ns": None, "lns": "v", "u": 1, "nu": None, "f": 0.5, "nf": None,
            "t0": 5, "t2": 5, "t3": 5, "t6": 5, "i32": 1, "ni32": None, "u64": 1, "u32": 1, "u16": 1,
            "nt3": None, "as": ["a"], "af": [0.5], "au": [1]}


def _text(**changed: Any) -> bytes:
    return orjson.dumps({**_base(), **changed})


NOT_TAKEN = {
    "invalid UTF-8": _text(s="x").replace(b'"x"', b'"\xc3\x28"'),
    "overlong UTF-8": _text(s="x").replace(b'"x"', b'"\xc0\xaf"'),
    "an encoded surrogate": _text(s="x").replace(b'"x"', b'"\xed\xa0\x80"'),
    "a lone high surrogate": _text(s="x").replace(b'"x"', b'"\\ud83d"'),
    "a high surrogate and no low one": _text(s="x").replace(b'"x"', b'"\\ud83d\\u0041"'),
    "a lone low surrogate": _text(s="x").replace(b'"x"', b'"\\ude00"'),
    "a raw control character": _text(s="x").replace(b'"x"', b'"a\tb"'),
    "an unknown escape": _text(s="x").replace(b'"x"', b'"\\x41"'),
    "a short \\u escape": _text(s="x").replace(b'"x"', b'"\\u00e"'),
    "keys in another order": orjson.dumps({"s": "x", **{k: v for k, v in _base().items() if k != "s"}}),
    "a key missing": orjson.dumps({k: v for k, v in _base().items() if k != "t6"}),
    "a key more": _text(extra=1),
    "an escaped key": _text().replace(b'"lc"', b'"l\\u0063"'),
    "null where the column has none": _text(s=None),
    "a number for a string": _text(s=5),
    "an object for a string": _text(s={"a": 1}),
    "a float for an Int64": _text(i=1.5),
    "true for an Int64": _text(i=True),
    "2**31 for an Int32": _text(i32=2**31),
    "-1 for a UInt64": _text(u64=-1),
    "2**32 for a UInt32": _text(u32=2**32),
    "65536 for a UInt16": _text(u16=65536),
    "null in an array": _text(af=[0.5, None]),
    "a string in a float array": _text(af=["0.5"]),
    "a number in a string array": _text(**{"as": [1]}),
    "an array of arrays": _text(au=[[1]]),
    "null for an array": _text(au=None),
    "a float for a nullable time": _text(nt3=1.5),
    "256 for a UInt8": _text(u=256),
    "-1 for a UInt8": _text(u=-1),
    "a float time": _text(t3=5.5),
    "a time as text": _text(t3="2026-01-01T00:00:00"),
    "19 digits": _text(i=1234567890123456789),
    "beyond float range": _text(f=0.5).replace(b'"f":0.5', b'"f":1e400'),
    "a string for a float": _text(f="0.5"),
    "a time past 64 bits at microseconds": _text(t6=10**17),
    "trailing bytes": _text() + b"x",
    "two objects": _text() + _text(),
    "an array": b"[1, 2]",
    "truncated": _text()[:-3],
    "a leading zero": _text(i=1).replace(b'"i":1', b'"i":01'),
}


@pytest.mark.parametrize("case", sorted(NOT_TAKEN))
def test_a_batch_with_a_value_the_c_pass_does_not_take_is_refused_whole(store: tuple[Client, str],
                                                                       case: str) -> None:
    client, database = store
    writer = ClickHouseRowWriter(client, database, close_client=False)
    good = [_text(i=2), _text(i=3)]
    assert writer.write_json_objects("by_blocks", good)  # the layout known, the good ones taken
    assert not writer.write_json_objects("by_blocks", [_text(i=4), NOT_TAKEN[case]])
    assert writer._buffered == 2  # nothing of the refused batch
    writer.flush()
    assert client.query(f"SELECT i FROM {database}.by_blocks ORDER BY i").result_rows == [(2,), (3,)]


def test_a_layout_it_cannot_write_and_the_reference_path_are_refused(store: tuple[Client, str]) -> None:
    client, database = store
    client.command(f"CREATE TABLE {database}.mapped (i Int64, m Map(String, String))"
                   " ENGINE = MergeTree ORDER BY i")
    writer = ClickHouseRowWriter(client, database, close_client=False)
    assert not writer.write_json_objects("mapped", [b'{"i": 1, "m": {"a": "b"}}'])  # no kind for a Map
    assert not writer.write_json_objects("by_blocks", [orjson.dumps({**_base(), "nope": 1})])  # no column
    assert not writer.write_json_objects("no_such_table", [_text()])  # write() says what it is
    with reference_paths():
        assert not writer.write_json_objects("by_blocks", [_text()])
    assert writer.write_json_objects("by_blocks", [_text()])
    assert native_layout(["m"], {"m": "Map(String, String)"}) is None


class _RefusingOnce:
    """The engine's client, but the first raw insert fails as a server refusing its block would."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.refused = 0

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        if not self.refused:
            self.refused += 1
            raise DatabaseError("Code: 53. DB::Exception: Type mismatch (TYPE_MISMATCH)")
        return self._client.raw_insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_refused_block_turns_the_c_pass_off_and_its_rows_go_in_row_by_row(
        store: tuple[Client, str]) -> None:
    client, database = store
    refusing = _RefusingOnce(client)
    writer = ClickHouseRowWriter(refusing, database, close_client=False)  # type: ignore[arg-type]
    assert writer.write_json_objects("by_blocks", [_text(i=1), _text(i=2, s="\u00e9")])
    writer.flush()
    assert refusing.refused == 1 and not writer.native_rows
    assert not writer.write_json_objects("by_blocks", [_text(i=3)])  # off from now on
    rows = client.query(f"SELECT i, s FROM {database}.by_blocks ORDER BY i").result_rows
    assert rows == [(1, "x"), (2, "\u00e9")]


def test_a_block_refused_for_a_column_gone_keeps_its_rows_until_the_column_is_back(
        store: tuple[Client, str]) -> None:
    """A refused block's rows go to the row-by-row buffer; where that refuses them too (the column
    gone from the columns it read), the block is kept, as a refused batch is (nothing lost), and goes
    in once the column is back."""
    client, database = store
    writer = ClickHouseRowWriter(client, database, close_client=False)
    assert writer.write_json_objects("by_blocks", [_text(i=1), _text(i=2, ns="kept")])
    client.command(f"ALTER TABLE {database}.by_blocks DROP COLUMN ns")
    writer._schemas.pop("by_blocks")  # the writer has read the columns since
    with pytest.raises(RowRefused, match="no column"):
        writer.flush()
    assert writer._buffered == 2 and not writer.native_rows
    client.command(f"ALTER TABLE {database}.by_blocks ADD COLUMN ns Nullable(String) AFTER lc")
    writer.flush()
    rows = client.query(f"SELECT i, ns FROM {database}.by_blocks ORDER BY i").result_rows
    assert rows == [(1, None), (2, "kept")]


def _message(table: str, rows: list[dict[str, Any]]) -> bytes:
    (message,) = records.sink_rows("sink", table, rows, chunk=10**6)
    return message.value


def test_a_sink_message_read_in_c_inserts_the_rows_the_mapping_inserts(store: tuple[Client, str]) -> None:
    """Sink messages of the columns form (blocks of rows of other key sets among them) written
    through write_sink_message and through the sink's mapping (RowMapper.blocks, write_blocks)."""
    client, database = store
    rnd = random.Random(8)
    mapper = RowMapper(TopicSettings())
    by_rows = ClickHouseRowWriter(client, database, close_client=False)
    by_blocks = ClickHouseRowWriter(client, database, close_client=False)
    for batch, size in enumerate((1, 40, 300, 300)):
        rows = [orjson.loads(_object(rnd, batch * 1000 + i)) for i in range(size)]
        for row in rows[::7]:  # other key sets: other blocks (the columns left to their defaults)
            del row["ns"], row["af"]
        table, blocks = mapper.blocks(mapper._sink_topic, _message("by_rows", rows))
        by_rows.write_blocks(table, joined_blocks(blocks))
        assert by_blocks.write_sink_message(_message("by_blocks", rows)) == ("by_blocks", size)
    by_rows.flush()
    by_blocks.flush()
    select = "SELECT * FROM {database}.{table} ORDER BY i"
    expected = client.query(select.format(database=database, table="by_rows")).result_rows
    got = client.query(select.format(database=database, table="by_blocks")).result_rows
    assert len(got) == len(expected) == 641
    assert got == expected


def _good_message() -> bytes:
    return _message("by_blocks", [_base(), {**_base(), "i": 2}])


SINK_NOT_TAKEN = {
    "the rows form": orjson.dumps({"table": "by_blocks", "rows": [_base()]}),
    "an envelope key more": _good_message()[:-1] + b',"x":1}',
    "blocks before the table": orjson.dumps({"blocks": [], "table": "by_blocks"}),
    "fewer values than n": _good_message().replace(b'"n":2', b'"n":3'),
    "more values than n": _good_message().replace(b'"n":2', b'"n":1'),
    "a name twice": _good_message().replace(b'"s","lc"', b'"s","s"'),
    "a name the table lacks": _good_message().replace(b'"lc"', b'"nope"'),
    "a value of another type": _message("by_blocks", [_base(), {**_base(), "u": "1"}]),
    "a table this writer does not know": _message("no_such_table", [_base()]),
    "the table held": _good_message(),
    "trailing bytes": _good_message() + b" x",
}


@pytest.mark.parametrize("case", sorted(SINK_NOT_TAKEN))
def test_a_sink_message_the_c_pass_does_not_take_is_left_whole(store: tuple[Client, str], case: str) -> None:
    client, database = store
    writer = ClickHouseRowWriter(client, database, close_client=False)
    held = {"by_blocks"} if case == "the table held" else set()
    assert writer.write_sink_message(_good_message()) == ("by_blocks", 2)
    assert writer.write_sink_message(SINK_NOT_TAKEN[case], held) is None
    assert writer._buffered == 2


def _mutated(rnd: random.Random, value: bytes) -> bytes:
    """``value`` with a few bytes deleted, inserted or replaced (JSON's own among them), or cut."""
    out = bytearray(value)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(4)
        if op == 0 and out:
            del out[rnd.randrange(len(out))]
        elif op == 1:
            out.insert(rnd.randrange(len(out) + 1), rnd.choice(MUTATIONS))
        elif op == 2 and out:
            out[rnd.randrange(len(out))] = rnd.choice(MUTATIONS)
        else:
            out = out[: rnd.randrange(len(out) + 1)]
    return bytes(out)


MUTATIONS = b'{}[]",:\\u0123456789.eE+-nulltrfalse \x00\x1f\xff\xc3\xa9\xed\xa0'


def test_what_the_c_pass_takes_of_mangled_messages_the_mapping_reads_too() -> None:
    """Random damage to good messages: the C pass never crashes, and whatever it takes orjson and
    the mapping read as a row (or a sink message's blocks) too, so nothing the mapping would
    dead-letter is written (no engine needed: nothing is inserted)."""
    rnd = random.Random(11)
    layout = native_layout(list(_base()), dict(COLUMNS))
    assert layout is not None
    sink_types = dict(COLUMNS)

    def layout_of(table: str, names: tuple[str, ...]) -> NativeLayout | None:
        return native_layout(names, sink_types)

    objects = [_object(rnd, i) for i in range(20)]
    messages = [_message("t", [orjson.loads(value) for value in objects[i : i + 3]]) for i in range(0, 18, 3)]
    taken = [0, 0]
    for _ in range(20_000):
        value = _mutated(rnd, rnd.choice(objects))
        if native_block([value], layout) is not None:
            taken[0] += 1
            assert tuple(orjson.loads(value)) == layout.names, value
        message = _mutated(rnd, rnd.choice(messages))
        if native_sink_message(message, layout_of) is not None:
            taken[1] += 1
            _blocks_form(orjson.loads(message))
    assert min(taken) > 100, taken  # (some damage leaves a good message: those are taken)
