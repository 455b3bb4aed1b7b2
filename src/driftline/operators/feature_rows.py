"""The feature maps of a batch of one layout, kept as value rows: a dict per event only when read.

The compiled decode pass (:mod:`~driftline.operators.struct_decode`) reads the feature objects of a
batch whose events all carry the same names in the same order into one tuple of values per event
(no dict, no key per event). :class:`FeatureRows` is then the batch's ``feature_maps``: the
stage-1 readers take the batch's columns (the join's records, the windows, the detectors), and
the few that need an event's map (a late event's row, a dead letter, an event read alone) get
the dict its payload's JSON object would have decoded to, made on index.

>>> rows = FeatureRows(("x", "c"), [(0.5, "a"), (1.5, "b"), (2.5, "c")])
>>> rows[1], len(rows), rows == [{"x": 0.5, "c": "a"}, {"x": 1.5, "c": "b"}, {"x": 2.5, "c": "c"}]
({'x': 1.5, 'c': 'b'}, 3, True)
>>> rows.take([2, 0]).rows, rows[1:].rows
([(2.5, 'c'), (0.5, 'a')], [(1.5, 'b'), (2.5, 'c')])
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any, overload

# The kinds of a column's values, a bit each, as the C decode pass (``_decode.c``) reports them.
KIND_STR, KIND_BOOL, KIND_INT, KIND_NONE, KIND_FLOAT = 1, 2, 4, 8, 16


@functools.lru_cache(maxsize=1024)
def positions(names: tuple[str, ...]) -> dict[str, int]:
    """Each name's position in a layout (the last for a repeated one, as a map of the row keeps it),
    kept per layout: a process sees a few.

    >>> positions(("x", "c", "x"))
    {'x': 2, 'c': 1}
    """
    return {name: at for at, name in enumerate(names)}


class FeatureRows(Sequence[dict[str, Any]]):
    """Events' features as ``names`` (the one layout, in payload order) and a tuple of values per
    event, in that order; read by index, the event's feature map (a fresh dict)."""

    __slots__ = ("names", "rows")

    def __init__(self, names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        self.names = names
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> FeatureRows: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | FeatureRows:
        if isinstance(i, slice):  # a part of the batch stays rows (the detectors read parts by slice)
            return FeatureRows(self.names, self.rows[i])
        return dict(zip(self.names, self.rows[i], strict=True))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        names = self.names
        return (dict(zip(names, row, strict=True)) for row in self.rows)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FeatureRows):
            return self.names == other.names and self.rows == other.rows
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # (mutable, like the list it stands for)

    def __repr__(self) -> str:
        return f"FeatureRows({self.names!r}, {len(self.rows)} rows)"

    def take(self, rows: Sequence[int]) -> FeatureRows:
        """The events at ``rows``, in that order, still as rows."""
        values = self.rows
        return FeatureRows(self.names, [values[i] for i in rows])


class TypedFeatureRows(FeatureRows):
    """:class:`FeatureRows` as the C decode pass reads them, with what the batch decoder's feature
    checks would find by walking the rows (:attr:`typed`, until they take it): a list per name of
    its values (the rows' own objects), per name the ``KIND_*`` bits of its values, and a buffer
    of ``len(names)`` rows of ``len(rows)`` doubles, a name's floats in its row (0.0 elsewhere).

    >>> typed = ([[0.5, 1.5], ["a", None]], (KIND_FLOAT, KIND_STR | KIND_NONE), bytearray(32))
    >>> rows = TypedFeatureRows(("x", "c"), [(0.5, "a"), (1.5, None)], typed)
    >>> rows[1], rows.take([0]).rows, type(rows[:1]).__name__
    ({'x': 1.5, 'c': None}, [(0.5, 'a')], 'FeatureRows')
    """

    __slots__ = ("typed",)

    def __init__(self, names: tuple[str, ...], rows: list[tuple[Any, ...]],
                 typed: tuple[list[list[Any]], tuple[int, ...], bytearray] | None) -> None:
        super().__init__(names, rows)
        self.typed = typed

    def __reduce__(self) -> tuple[Any, ...]:  # (a copy or a checkpoint keeps the rows, not the hint)
        return FeatureRows, (self.names, self.rows)
