"""JSON rows read straight into ClickHouse Native blocks, for the sink's two busy inputs.

The outcomes topic carries a JSON object a row (one per joined prediction), every one with the
same keys in the same order; the sink topic the stages' other rows as columns (``records.sink_rows``).
Read row by row (orjson, dicts or column lists, converted column by column, clickhouse-connect's
Native serialisation in Python) an outcome row cost the sink ~12-15 CPU-us, all of it holding the
GIL the worker's stages share (``bench/bench_sink_outcomes.py``). :func:`native_block` reads a
batch of such objects, :func:`native_sink_message` a sink message, in one C pass (``_decode.c``)
into the Native blocks the writer would have inserted for the same rows, value for value, or gives
None for what it does not take as it stands; the writer then takes the row-by-row way, which
dead-letters what it cannot read (see
:meth:`~driftline.store.writer.ClickHouseRowWriter.write_json_objects` and ``write_sink_message``).

Each column's kind follows its ClickHouse type; a LowCardinality column is sent as its plain type
and converted by the server on insert (``input_format_native_allow_types_conversion``).

>>> layout = native_layout(["a", "t"], {"a": "LowCardinality(String)", "t": "DateTime64(3, 'UTC')"})
>>> layout.kinds, layout.headers[0]
(b'\\x01\\x13', b'\\x01a\\x06String')
>>> native_layout(["m"], {"m": "Map(String, String)"}) is None  # a type it does not write
True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from driftline.operators import decode_native

# the kinds of _decode.c's Native passes (N_*): a base kind, or-ed with _NULLABLE or _ARRAY
_STRING, _INT64, _INT32, _UINT64, _UINT32, _UINT16, _UINT8, _FLOAT64 = range(1, 9)
_DATETIME64 = 16  # + the precision
_NULLABLE, _ARRAY = 0x40, 0x80
_BASES: dict[str, tuple[int, str]] = {  # a type -> its base kind and the type its header names
    "String": (_STRING, "String"),
    "LowCardinality(String)": (_STRING, "String"),
    "Int64": (_INT64, "Int64"),
    "Int32": (_INT32, "Int32"),
    "UInt64": (_UINT64, "UInt64"),
    "UInt32": (_UINT32, "UInt32"),
    "UInt16": (_UINT16, "UInt16"),
    "UInt8": (_UINT8, "UInt8"),
    "Float64": (_FLOAT64, "Float64"),
}
_DATETIME64_TYPE = re.compile(r"^DateTime64\((\d)(?:, *'[^']*')?\)$")
_WRAPPED = re.compile(r"^(Nullable|Array|LowCardinality)\((.*)\)$")
INSERT_SETTINGS = {"input_format_native_allow_types_conversion": 1}
"""What a Native block of :func:`native_block` is inserted with: its LowCardinality columns come as
their plain type."""


@dataclass(frozen=True)
class NativeLayout:
    """The columns of a batch's rows (their keys, in order), each one's kind and Native header."""

    names: tuple[str, ...]
    keys: list[bytes]
    kinds: bytes
    headers: list[bytes]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | 0x80 if n else low)
        if not n:
            return bytes(out)


def _text(value: str) -> bytes:
    raw = value.encode()
    return _varint(len(raw)) + raw


def _base(type_name: str) -> tuple[int, str] | None:
    found = _BASES.get(type_name)
    if found is not None:
        return found
    time = _DATETIME64_TYPE.match(type_name)
    return (_DATETIME64 + int(time.group(1)), type_name) if time else None


def column_kind(type_name: str) -> tuple[int, str] | None:
    """A column type's kind and the type its Native header names; None for a type not written so.

    >>> column_kind("LowCardinality(Nullable(String))"), column_kind("Array(Float64)")
    ((65, 'Nullable(String)'), (136, 'Array(Float64)'))
    >>> column_kind("Array(Nullable(Float64))") is None  # (nor Map, Decimal, Enum, ...)
    True
    """
    wrapped = _WRAPPED.match(type_name)
    if wrapped is None:
        return _base(type_name)
    outer, inner = wrapped.groups()
    if outer == "LowCardinality":  # sent as the plain type, converted by the server
        return column_kind(inner)
    found = _base(inner)
    if found is None:
        return None
    kind, header = found
    return (kind | (_NULLABLE if outer == "Nullable" else _ARRAY), f"{outer}({header})")


def native_layout(keys: Sequence[str], types: Mapping[str, str]) -> NativeLayout | None:
    """The layout of rows naming ``keys`` (in that order) of a table of these column ``types``;
    None where a key is no column or a column's type is not one :func:`native_block` writes."""
    if len(set(keys)) != len(keys):
        return None
    kinds, headers = bytearray(), []
    for name in keys:
        type_name = types.get(name)
        found = None if type_name is None else column_kind(type_name)
        if found is None:
            return None
        kind, header_type = found
        kinds.append(kind)
        headers.append(_text(name) + _text(header_type))
    return NativeLayout(tuple(keys), [name.encode() for name in keys], bytes(kinds), headers)


def native_block(values: list[bytes], layout: NativeLayout) -> bytes | None:
    """``values`` (JSON objects, each naming exactly ``layout``'s keys in order) as one Native block;
    None where the C pass is off (``worker.compiled_paths``) or does not take every value as it
    stands."""
    native = decode_native.NATIVE
    if native is None or not values:
        return None
    block: bytes | None = native.native_block(values, layout.keys, layout.kinds, layout.headers)
    return block


def native_sink_message(value: bytes, layout_of: Callable[[str, tuple[str, ...]], NativeLayout | None]
                        ) -> tuple[str, list[tuple[tuple[str, ...], int, bytes]]] | None:
    """A sink message of the columns form (``records.sink_rows``) as its table and each block's
    names, rows and Native block (``layout_of(table, names)`` their layout, None for names it does
    not write); None where the C pass is off or does not take the message as it stands."""
    native = decode_native.NATIVE
    if native is None:
        return None

    def kinds_of(table: str, names: tuple[str, ...]) -> tuple[bytes, list[bytes]] | None:
        layout = layout_of(table, names)
        return None if layout is None else (layout.kinds, layout.headers)

    taken: tuple[str, list[tuple[tuple[str, ...], int, bytes]]] | None = \
        native.native_sink_message(value, kinds_of)
    return taken
