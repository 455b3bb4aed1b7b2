"""Features as a pending record keeps them: interned layouts (:class:`_Shape`: names in order,
the floats as packed doubles, the other values as JSON), and their JSON text for outcomes."""

from __future__ import annotations

import functools
import json
import math
import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson

from driftline.operators.join import native

_MAX_SHAPES = 4096
"""Feature layouts interned; beyond this (e.g. free-form feature names) features are kept as JSON."""
_BIGINT_JSON = b"!"  # marks non-float values that orjson cannot encode (ints beyond 64 bits)
FloatArray = npt.NDArray[np.float64]
_Layout = tuple[tuple[str, ...], tuple[type, ...]]  # feature names and value types, in order


class _Shape:
    """One feature layout: names in order and which positions hold floats.

    Encoded values: the floats as packed doubles, then the other values as a JSON list (or, if one
    is an int beyond 64 bits, which orjson refuses, ``_BIGINT_JSON`` and the standard library's).
    """

    __slots__ = ("_get_floats", "_get_others", "_order", "float_pos", "floats", "keys", "kinds", "other_pos")

    def __init__(self, keys: tuple[str, ...], kinds: tuple[type, ...]) -> None:
        self.keys = keys
        self.kinds = kinds
        self.float_pos = tuple(i for i, kind in enumerate(kinds) if kind is float)
        self.other_pos = tuple(i for i, kind in enumerate(kinds) if kind is not float)
        self.floats = struct.Struct(f"<{len(self.float_pos)}d")
        self._get_floats = _getter(self.float_pos)
        self._get_others = _getter(self.other_pos)
        rank = {pos: i for i, pos in enumerate(self.float_pos + self.other_pos)}
        order = tuple(rank[i] for i in range(len(keys)))
        # floats + others -> key order (None: they already are)
        self._order = None if order == tuple(range(len(keys))) else _getter(order)

    def encode(self, values: tuple[Any, ...]) -> bytes:
        packed = self.floats.pack(*self._get_floats(values))
        if not self.other_pos:
            return packed
        others = self._get_others(values)
        try:
            return packed + orjson.dumps(others)
        except TypeError:
            text = json.dumps(others, separators=(",", ":"), ensure_ascii=False)
            return packed + _BIGINT_JSON + text.encode()

    def json(self, data: bytes, offset: int, end: int) -> str:
        """:func:`features_to_json` of :meth:`decode`, without the dict: each value's JSON text as
        orjson writes it in a list (the floats' from their tuple, the others' as encoded) between
        the keys' texts (:func:`_json_template`); through the dict where an other value is an int
        beyond 64 bits or a string holding a comma (the texts would not split at the commas).

        >>> shape = _Shape(("c", "x", "d"), (str, float, str))
        >>> [shape.json(data, 0, len(data)) for data in (shape.encode(("a", 0.5, "b")),
        ...                                              shape.encode(("a,b", float("nan"), "é")))]
        ['{"c":"a","x":0.5,"d":"b"}', '{"c":"a,b","x":null,"d":"é"}']
        """
        texts: list[bytes] = []
        if self.float_pos:
            texts = orjson.dumps(self.floats.unpack_from(data, offset))[1:-1].split(b",")
        if self.other_pos:
            others = data[offset + self.floats.size : end]
            if others[:1] == _BIGINT_JSON:
                return features_to_json(self.decode(data, offset, end))
            texts += others[1:-1].split(b",")
            if len(texts) != len(self.keys):
                return features_to_json(self.decode(data, offset, end))
            if self._order is not None:
                texts = list(self._order(texts))
        parts = _json_template(self).copy()
        parts[1::2] = texts
        return b"".join(parts).decode()

    def jsons(self, encoded: list[bytes]) -> list[str]:
        """:meth:`json` of each of ``encoded`` (values encoded in this shape), made for the whole
        list at once: every float of the list goes through one ``orjson.dumps`` and every value's
        text into one ``bytes.join``, rows separated by a newline (JSON text from orjson never holds
        a raw one), so that no Python call is made per row but the slicing (a labelled batch's
        outcomes: ~3.7 us a row one by one, 20 floats + 5 strings). Rows with an int beyond 64
        bits or a comma in a string value (their texts do not split at the commas) make the whole
        list go row by row.

        >>> shape = _Shape(("c", "x", "d"), (str, float, str))
        >>> rows = [shape.encode(("a", 0.5, "b")), shape.encode(("é", float("nan"), "\\n"))]
        >>> shape.jsons(rows) == [shape.json(row, 0, len(row)) for row in rows]
        True
        >>> shape.jsons([*rows, shape.encode(("a,b", 1.0, "c"))])[2]
        '{"c":"a,b","x":1.0,"d":"c"}'
        """
        rows, width = len(encoded), len(self.keys)
        if not width or not rows:
            return ["{}"] * rows
        size = self.floats.size
        floats_text = None  # orjson's text of every row's floats, in order
        if self.float_pos:
            floats_text = floats_json(b"".join(map(_slice_of, encoded, repeat(slice(0, size)))))
        fast = native.NATIVE
        if fast is not None:  # the same texts put together in C, with no bytes object per value
            made = fast.rows_json(encoded if type(encoded) is list else list(encoded), size, floats_text,
                                  len(self.float_pos), len(self.other_pos), *_key_texts_and_order(self))
            if made is not None:
                return cast(list[str], made)
        columns: list[list[bytes]] = []  # each value's text, float values first (as encoded)
        if floats_text is not None:
            texts = floats_text[1:-1].split(b",")
            step = len(self.float_pos)
            columns += [texts[i::step] for i in range(step)]
        if self.other_pos:
            step = len(self.other_pos)
            if b"".join(map(_slice_of, encoded, repeat(slice(size, size + 1)))) != b"[" * rows:
                return [self.json(row, 0, len(row)) for row in encoded]  # _BIGINT_JSON
            texts = b",".join(map(_slice_of, encoded, repeat(slice(size + 1, -1)))).split(b",")
            if len(texts) != rows * step:
                return [self.json(row, 0, len(row)) for row in encoded]
            columns += [texts[i::step] for i in range(step)]
        if self._order is not None:
            columns = list(self._order(columns))
        parts = _json_row_template(self) * rows  # per row: (key text, value text) per key
        for i, column in enumerate(columns):
            parts[2 * i + 1 :: 2 * width] = column
        # each row's template opens with "}\n{": strip the first row's "}\n", close the last one's
        return (b"".join(parts)[2:] + b"}").decode().split("\n")

    def decode(self, data: bytes, offset: int, end: int) -> dict[str, Any]:
        values = self.floats.unpack_from(data, offset)
        if self.other_pos:
            rest = data[offset + self.floats.size : end]
            others = json.loads(rest[1:]) if rest[:1] == _BIGINT_JSON else orjson.loads(rest)
            values += tuple(others)
        if self._order is not None:
            values = self._order(values)
        return dict(zip(self.keys, values, strict=True))


@functools.lru_cache(maxsize=_MAX_SHAPES)
def _json_template(shape: _Shape) -> list[bytes]:
    """The JSON object text of a shape's keys, in parts, with an empty part in place of each value
    (orjson's key texts); cached per shape object (an identity hash: no hashing of the keys per call).

    >>> _json_template(_Shape(("x", "y"), (float, str))), _json_template(_Shape((), ()))
    ([b'{"x":', b'', b',"y":', b'', b'}'], [b'{}'])
    """
    parts: list[bytes] = []
    for i, key in enumerate(shape.keys):
        parts += [(b"," if i else b"{") + orjson.dumps(key) + b":", b""]
    return [*parts, b"}"] if parts else [b"{}"]


_slice_of = cast(Callable[[bytes, slice], bytes], operator.getitem)  # mypy cannot pick its overload in map()


def floats_json(packed: bytes) -> bytes:
    """The JSON list of the little-endian doubles ``packed``, as ``orjson.dumps`` writes a tuple of
    them (NaN and infinities as null): through numpy, with no float object made per value (orjson
    writes a float64 array's items as it writes floats; test_op_join_outcomes checks it).

    >>> floats_json(struct.pack("<3d", 0.5, float("nan"), 1e16))
    b'[0.5,null,1e+16]'
    """
    try:
        return orjson.dumps(np.frombuffer(packed, "<f8"), option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # a big-endian machine: orjson takes native arrays only
        return orjson.dumps(struct.unpack(f"<{len(packed) // 8}d", packed))


@functools.lru_cache(maxsize=_MAX_SHAPES)
def _key_texts_and_order(shape: _Shape) -> tuple[list[bytes], list[int]]:
    """For the C path of :meth:`_Shape.jsons`: each key's text before its value (as
    :func:`_json_template`'s) and the index of its value among a row's floats then others.

    >>> _key_texts_and_order(_Shape(("c", "x"), (str, float)))
    ([b'{"c":', b',"x":'], [1, 0])
    """
    rank = {pos: i for i, pos in enumerate(shape.float_pos + shape.other_pos)}
    return _json_template(shape)[0:-1:2], [rank[i] for i in range(len(shape.keys))]


@functools.lru_cache(maxsize=_MAX_SHAPES)
def _json_row_template(shape: _Shape) -> list[bytes]:
    """:func:`_json_template` as one row of :meth:`_Shape.jsons`: the previous row's close, a
    newline and the object's open before the first key.

    >>> _json_row_template(_Shape(("x", "y"), (float, str)))
    [b'}\\n{"x":', b'', b',"y":', b'']
    """
    parts = _json_template(shape)[:-1]
    return [b"}\n" + parts[0], *parts[1:]]


@functools.lru_cache(maxsize=_MAX_SHAPES)
def shape_of(layout: _Layout) -> _Shape:
    """``layout``'s shape, one object per layout (its JSON templates are kept per object)."""
    return _Shape(*layout)


def _packed_features(
    names: Sequence[str], columns: Sequence[Sequence[Any]], numbers: Sequence[FloatArray | None]
) -> tuple[_Layout, list[bytes]] | None:
    """The layout of features given as columns (a value per event, every event carrying every name)
    and each event's encoding in it (:meth:`_Shape.encode`, at once: the floats as one float64
    block); None if the events' value types differ (then each event has its own layout).

    >>> layout, packed = _packed_features(("x", "c"), ([0.5, 1.5], ["a", "b"]), (np.array([0.5, 1.5]), None))
    >>> layout, packed[1] == _Shape(*layout).encode((1.5, "b"))
    ((('x', 'c'), (<class 'float'>, <class 'str'>)), True)
    """
    if not names:
        return None
    kinds: list[type] = []
    arrays: list[FloatArray] = []  # the float columns, in order
    for column, floats in zip(columns, numbers, strict=True):
        types = {float} if floats is not None else set(map(type, column))
        if len(types) != 1:
            return None
        kinds.append(types.pop())
        if kinds[-1] is float:
            arrays.append(np.asarray(column, dtype=np.float64) if floats is None else floats)
    layout = (tuple(names), tuple(kinds))
    shape = shape_of(layout)
    n = len(columns[0])
    fast = native.NATIVE
    if fast is not None:  # each event's bytes made in one C pass, no object per value or part
        block = np.column_stack(arrays).astype("<f8", copy=False) if arrays else None
        made = fast.packed_rows(block, shape.floats.size, [columns[p] for p in shape.other_pos], n)
        if made is not None:
            return layout, made
    if arrays:
        block = np.column_stack(arrays).astype("<f8", copy=False)
        packed = block.view(f"V{shape.floats.size}").ravel().tolist()  # each row's bytes, in C
    else:
        packed = [b""] * n
    if shape.other_pos:
        try:
            others = list(map(orjson.dumps, zip(*[columns[p] for p in shape.other_pos], strict=True)))
        except TypeError:  # an int beyond 64 bits: encoded event by event
            return None
        packed = list(map(operator.add, packed, others))
    return layout, packed


def _getter(positions: tuple[int, ...]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The items at ``positions``, as a tuple (``itemgetter`` returns a bare item for one position)."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:
        (only,) = positions
        return lambda values: (values[only],)
    return lambda values: ()


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
