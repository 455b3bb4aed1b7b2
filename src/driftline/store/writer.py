"""Row writers: straight into ClickHouse, or through the sink topic when another process owns it.

Rows are mappings of column name -> value. Times may be epoch milliseconds (int), aware or naive
(UTC) datetimes, or ISO-8601 strings; dict/list values of String columns are stored as JSON.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, Protocol, overload

import orjson
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from clickhouse_connect.driver.insert import InsertContext
from kafka import KafkaProducer, TopicPartition
from kafka.producer.future import FutureRecordMetadata

from driftline.config import Settings
from driftline.kafka.admin import admin_client
from driftline.kafka.clients import kafka_python_producer
from driftline.pipeline.records import row_blocks
from driftline.store.client import EngineBusy, StoreError, connect, database_name
from driftline.store.cluster_ddl import table_columns
from driftline.store.migrate import discover
from driftline.store.native_rows import (
    INSERT_SETTINGS,
    NativeLayout,
    native_block,
    native_layout,
    native_sink_message,
)
from driftline.store.owner import read_owner

MAX_SINK_MESSAGE_BYTES = 900_000
SINK_CHUNK_ROWS = 2000  # rows a sink message holds at most (as records.sink_rows), fewer if large
MAX_INSERT_CONTEXTS = 64  # distinct (table, column set) pairs a writer keeps an InsertContext for
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATETIME64 = re.compile(r"^DateTime64\((\d)")
_NULLABLE = re.compile(r"^Nullable\((.*)\)$")
log = logging.getLogger(__name__)
SCHEMA_REFRESH_S = 1.0  # a table's columns are read again at most this often (an unknown column each row)


class RowRefused(ValueError):
    """A row the writer will not buffer: an unknown table or column, None in a non-Nullable column,
    a time it cannot read. Nothing of the refused call is buffered."""


class SchemaBehind(StoreError):
    """A table lacks a column (or is missing) that the packaged migrations create: ``driftline db
    migrate`` has not run since an upgrade (a sink role migrates at its start; other writers do
    not), or the column was dropped since. Not the row's fault: the caller keeps the rows and tries
    again (the sink waits as for an outage). Nothing of the refused call is buffered."""

    def __init__(self, database: str, table: str, missing: Sequence[str]) -> None:
        self.table = table
        self.missing = tuple(missing)
        what = f"lacks column(s) {', '.join(missing)}" if missing else "does not exist"
        super().__init__(f"{database}.{table} {what}, which this version's migrations create: run "
                         "`driftline db migrate` (with every migration applied, it was dropped or renamed "
                         "since: add it back); the rows wait (nothing is dropped)")


@functools.cache
def migration_columns() -> dict[str, frozenset[str]]:
    """The columns the packaged migrations give each table (what this version writes)."""
    settings = Settings()  # the placeholders (database, TTLs) do not change a column's name
    statements = (sql for migration in discover() for sql in migration.statements(settings))
    return {table: frozenset(names) for table, names in table_columns(statements).items()}


class RowWriter(Protocol):
    """Where pipeline rows go. Rows are durable only once ``flush`` returns."""

    def write(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class MemoryRowWriter:
    """A :class:`RowWriter` that keeps the rows in memory, per table: a replay or backtest whose
    rows the caller reads itself (a notebook, a test) without a ClickHouse.

    >>> writer = MemoryRowWriter()
    >>> writer.write("late_events", [{"prediction_id": "p"}]); writer.flush()
    >>> dict(writer.rows), writer.flushed
    ({'late_events': [{'prediction_id': 'p'}]}, 1)
    """

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.flushed = 0

    def write(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.rows[table].extend(dict(r) for r in rows)

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        self.flush()


# -- direct ClickHouse writer ----------------------------------------------------------------------


def _datetime64_ticks(precision: int) -> Callable[[Any], Any]:
    """Converter of one time value to DateTime64 ticks, which clickhouse-connect writes as is."""
    per_ms = 10 ** (precision - 3) if precision >= 3 else None

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=UTC)
            micros = (aware - _EPOCH) // timedelta(microseconds=1)
            return micros * 10**precision // 1_000_000
        ms = round(value)  # epoch milliseconds
        return ms * per_ms if per_ms is not None else ms // 10 ** (3 - precision)

    return convert


def _json_text(value: Any) -> Any:
    # a tuple, not dict | list: isinstance of a union type costs ~3x the time
    return orjson.dumps(value).decode() if isinstance(value, (dict, list)) else value


def _converter(type_name: str) -> Callable[[Any], Any] | None:
    nullable = _NULLABLE.match(type_name)
    inner = nullable.group(1) if nullable else type_name
    dt64 = _DATETIME64.match(inner)
    if dt64:
        return _datetime64_ticks(int(dt64.group(1)))
    if inner in ("String", "LowCardinality(String)", "LowCardinality(Nullable(String))"):
        return _json_text
    return None


@dataclass
class _Column:
    name: str
    type_name: str
    nullable: bool
    convert: Callable[[Any], Any] | None


class _BlockRows(Sequence[Mapping[str, Any]]):
    """A column block's rows, made only if a refused row has to be found (``_refuse``)."""

    def __init__(self, names: Sequence[str], columns: Sequence[list[Any]], n: int) -> None:
        self._names, self._columns, self._n = names, columns, n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> Mapping[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Mapping[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> Mapping[str, Any] | Sequence[Mapping[str, Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return {name: column[index] for name, column in zip(self._names, self._columns, strict=True)}


@dataclass
class _Batch:
    columns: list[_Column]
    data: list[list[Any]]  # one list per column
    rows: int = 0


@dataclass
class _NativeBatch:
    """Rows buffered as Native blocks (:meth:`ClickHouseRowWriter.write_json_objects`,
    :meth:`~ClickHouseRowWriter.write_sink_message`), with what reads them again as rows from the
    messages they came from (the row-by-row way's input, should an insert refuse the blocks)."""

    blocks: list[bytes]
    sources: list[Callable[[], list[dict[str, Any]]]]
    rows: int = 0


def _object_rows(values: Sequence[bytes], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows of JSON objects that all name ``names`` (see ``native_block``), in order."""
    return [orjson.loads(value) for value in values]


def _block_rows(value: bytes, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows of a sink message's blocks of these names (see ``native_sink_message``), in order."""
    return [dict(zip(names, row, strict=True)) for block in orjson.loads(value)["blocks"]
            if tuple(block["names"]) == names for row in zip(*block["columns"], strict=True)]


class ClickHouseRowWriter:
    """Buffers rows per table and inserts them column-oriented on ``flush``.

    Column types come from ``system.columns``, cached per table and read again when a row names a
    column the cache lacks or an insert fails for a column gone (:data:`SCHEMA_REFRESH_S`). A key
    missing from a row leaves that column to its ClickHouse default: rows are grouped by the set
    of keys they carry, and each group is inserted with just those columns. A key the table lacks
    but this version's migrations create (:func:`migration_columns`) raises :class:`SchemaBehind`;
    any other unknown key, and None in a non-Nullable column, :class:`RowRefused` (at ``write``:
    nothing of that call is buffered; at ``flush``: the batch is kept).
    A write that would bring the buffers to ``max_buffer_rows`` flushes them first (an insert
    failing there leaves nothing of the call buffered). ``close`` flushes and, if
    ``close_client``, closes the client.
    """

    def __init__(self, client: Client, database: str, *, max_buffer_rows: int = 100_000,
                 close_client: bool = True) -> None:
        self._client = client
        self._database = database
        self._max_buffer_rows = max_buffer_rows
        self._close_client = close_client
        self._schemas: dict[str, dict[str, _Column]] = {}
        self._batches: dict[tuple[str, tuple[str, ...]], _Batch] = {}
        self._contexts: dict[tuple[str, tuple[str, ...]], InsertContext] = {}
        self._layouts: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}  # (table, row keys) -> columns
        self._buffered = 0
        self._read_at: dict[str, float] = {}  # time.monotonic() each table's columns were read
        self._native: dict[tuple[str, tuple[str, ...]], _NativeBatch] = {}
        self._native_layouts: dict[tuple[str, tuple[str, ...]], NativeLayout | None] = {}
        self.native_taken = 0
        """Rows the C pass took (buffered as Native blocks) so far."""
        self.native_rows = True
        """Whether the C pass takes rows (:meth:`write_json_objects`, :meth:`write_sink_message`):
        off after an insert refused its blocks."""

    @property
    def client(self) -> Client:
        return self._client

    def _schema(self, table: str) -> dict[str, _Column]:
        schema = self._schemas.get(table)
        if schema is None:
            rows = self._client.query(
                "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String}"
                " AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') ORDER BY position",
                parameters={"db": self._database, "t": table},
            ).result_rows
            if not rows:
                if table in migration_columns():
                    raise SchemaBehind(self._database, table, ())
                raise RowRefused(f"unknown table {self._database}.{table}; unknown to this sink's schema too:"
                                 " upgrade the sink?")
            self._read_at[table] = time.monotonic()
            schema = {
                name: _Column(name, type_name, "Nullable(" in type_name, _converter(type_name))
                for name, type_name in rows
            }
            self._schemas[table] = schema
        return schema

    def _read_again(self, table: str) -> dict[str, _Column]:
        """The table's columns read again (unless read within :data:`SCHEMA_REFRESH_S`): a column a
        migration added meanwhile is written, one dropped is noticed."""
        read_at = self._read_at.get(table)  # (None: columns given, not read)
        if read_at is not None and time.monotonic() - read_at >= SCHEMA_REFRESH_S:
            self._schemas.pop(table, None)
            self._layouts = {key: keys for key, keys in self._layouts.items() if key[0] != table}
            self._native_layouts = {key: found for key, found in self._native_layouts.items()
                                    if key[0] != table}
            self._contexts = {key: context for key, context in self._contexts.items() if key[0] != table}
        return self._schema(table)

    def _lacking(self, table: str, names: Sequence[str]) -> Exception:
        """What a table lacking ``names`` raises: :class:`SchemaBehind` if this version's migrations
        create them all, else :class:`RowRefused` naming the ones it does not know."""
        known = migration_columns().get(table, frozenset())
        unknown = [name for name in names if name not in known]
        if not unknown:
            return SchemaBehind(self._database, table, names)
        return RowRefused(f"{self._database}.{table} has no column(s) {', '.join(unknown)}; unknown to this "
                          "sink's schema too: upgrade the sink?")

    def write(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        schema = self._schema(table)
        # Rows carrying the same keys (a mapper's rows of one kind all do) are converted a column at
        # a time: one comprehension per column instead of a few calls per cell (the sink spent ~25 us
        # a row here, more than the event loop's share of a prediction outside the operators).
        groups = self._grouped(table, rows)
        if self._schemas[table] is not schema:  # a row's key made the columns be read again: the
            schema = self._schemas[table]  # layouts found before may name a column dropped since
            groups = self._grouped(table, rows)
        # Convert everything first so that a bad row leaves the buffer untouched.
        staged = [(keys, self._converted(table, schema, keys, [[row[name] for row in group] for name in keys],
                                         rows), len(group))
                  for keys, group in groups.items()]
        self._buffer(table, schema, staged)

    def _grouped(self, table: str, rows: Sequence[Mapping[str, Any]]
                 ) -> dict[tuple[str, ...], list[Mapping[str, Any]]]:
        """The rows by the columns they fill (:meth:`_layout`)."""
        groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
        for row in rows:
            layout = self._layouts.get((table, tuple(row)))
            if layout is None:
                layout = self._layout(table, row)
            group = groups.get(layout)
            if group is None:
                groups[layout] = [row]
            else:
                group.append(row)
        return groups

    def write_blocks(self, table: str,
                     blocks: Sequence[tuple[Sequence[str], Sequence[list[Any]], int]]) -> None:
        """Buffer rows given as column blocks (``names``, a list of values per name, ``n`` rows;
        :class:`~driftline.pipeline.records.ColumnBlock`): what :meth:`write` does with the same
        rows, without a dict per row. Nothing of the call is buffered if any row is refused."""
        if not blocks:
            return
        schema = self._schema(table)
        layouts = self._block_layouts(table, blocks)
        if self._schemas[table] is not schema:  # read again for a block's key (as in write)
            schema = self._schemas[table]
            layouts = self._block_layouts(table, blocks)
        staged = [(keys, self._converted(table, schema, keys, [by_name[name] for name in keys],
                                         _BlockRows(names, columns, n)), n)
                  for keys, by_name, (names, columns, n) in layouts]
        self._buffer(table, schema, staged)

    def _block_layouts(self, table: str, blocks: Sequence[tuple[Sequence[str], Sequence[list[Any]], int]]
                       ) -> list[tuple[tuple[str, ...], dict[str, list[Any]],
                                       tuple[Sequence[str], Sequence[list[Any]], int]]]:
        """Each non-empty block's columns filled (:meth:`_layout`), its columns by name, and itself."""
        out = []
        for block in blocks:
            names, columns, n = block
            if not n:
                continue
            by_name = dict(zip(names, columns, strict=True))
            keys = self._layouts.get((table, tuple(names)))
            if keys is None:
                keys = self._layout(table, by_name)
            out.append((keys, by_name, block))
        return out

    def write_json_objects(self, table: str, values: Sequence[bytes]) -> bool:
        """Buffer rows given as JSON objects (message values) that all name the same columns in the
        same order, read in one C pass into the Native block the other writes would insert for the
        same rows (:mod:`driftline.store.native_rows`); True where taken. False, nothing buffered,
        where the batch is not one that pass takes as it stands (a value of another type, an
        unknown column, another key order, a value it cannot read, ...): the caller then maps and
        writes it row by row, which refuses or dead-letters what it must."""
        if not values or not self.native_rows:
            return False
        try:
            first = orjson.loads(values[0])
        except orjson.JSONDecodeError:
            return False
        if not isinstance(first, dict) or not first:
            return False
        layout = self._layout_of(table, tuple(first))
        if layout is None:
            return False
        block = native_block(list(values), layout)
        if block is None:
            return False
        self._buffer_native(table, [(layout.names, len(values), block)],
                            functools.partial(_object_rows, values))
        return True

    def write_sink_message(self, value: bytes, held: Container[str] = ()) -> tuple[str, int] | None:
        """Buffer a sink message of the columns form (``records.sink_rows``) read in one C pass into
        a Native block per block, the rows :meth:`write_blocks` would insert for the blocks the
        sink's mapping makes of it; its table and rows where taken. None, nothing buffered, where
        the pass does not take it as it stands (its table in ``held``, a value of another type, a
        column the table lacks, ...): the caller then maps and writes it row by row."""
        if not self.native_rows:
            return None
        taken = native_sink_message(value, self._layout_of)
        if taken is None or taken[0] in held:
            return None
        table, blocks = taken
        return table, self._buffer_native(table, blocks, functools.partial(_block_rows, value))

    def _buffer_native(self, table: str, blocks: list[tuple[tuple[str, ...], int, bytes]],
                       rows_of: Callable[[tuple[str, ...]], list[dict[str, Any]]]) -> int:
        """Buffer Native ``blocks`` (names, rows, block) of ``table``, each layout's batch with what
        reads its rows again (``rows_of(names)``: the rows of the call's blocks of those names); the
        rows buffered. Flushed before, as :meth:`_buffer` is."""
        n = sum(rows for _, rows, _ in blocks)
        self._make_room(n)
        for names in dict.fromkeys(names for names, _, _ in blocks):  # a source a layout, in order
            batch = self._native.setdefault((table, names), _NativeBatch([], []))
            for block_names, rows, block in blocks:
                if block_names == names:
                    batch.blocks.append(block)
                    batch.rows += rows
            batch.sources.append(functools.partial(rows_of, names))
        self._buffered += n
        self.native_taken += n
        return n

    def _make_room(self, n: int) -> None:
        # Flushed before, not after: an insert that fails leaves nothing of this call buffered, so
        # the caller can keep the rows (the sink holds a table behind its schema) and try again.
        if self._buffered and self._buffered + n >= self._max_buffer_rows:
            self.flush()

    def _layout_of(self, table: str, keys: tuple[str, ...]) -> NativeLayout | None:
        """The Native layout of rows naming ``keys`` in ``table`` (cached), None where the C pass
        does not write them: a key the table lacks, a column of a type it does not write, a table
        this writer does not know (the row-by-row way says why)."""
        if (table, keys) in self._native_layouts:
            return self._native_layouts[(table, keys)]
        try:
            schema = self._schema(table)
        except (RowRefused, SchemaBehind):
            return None
        layout = native_layout(keys, {name: column.type_name for name, column in schema.items()})
        if len(self._native_layouts) >= MAX_INSERT_CONTEXTS * 4:
            self._native_layouts.clear()
        self._native_layouts[(table, keys)] = layout
        return layout

    def _converted(self, table: str, schema: dict[str, _Column], keys: tuple[str, ...],
                   columns: list[list[Any]], rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """``keys``' columns converted for the insert; raises for a None in a non-Nullable column
        what converting ``rows`` (the call's rows) row by row would."""
        out = []
        for name, values in zip(keys, columns, strict=True):
            column = schema[name]
            if not column.nullable and any(value is None for value in values):
                self._refuse(table, schema, rows)  # raises what the first bad row raises
            convert = column.convert
            if convert is _json_text:  # a String column: its cells are nearly all str, kept as they are
                out.append([v if type(v) is str else _json_text(v) for v in values])
            elif convert is None:
                out.append(values)
            else:
                try:
                    out.append([convert(value) for value in values])
                except (ValueError, TypeError, OverflowError):  # e.g. a time it cannot read
                    self._refuse(table, schema, rows)
        return out

    def _buffer(self, table: str, schema: dict[str, _Column],
                staged: list[tuple[tuple[str, ...], list[list[Any]], int]]) -> None:
        self._make_room(sum(n for _, _, n in staged))
        for keys, columns, n in staged:
            batch = self._batches.get((table, keys))
            if batch is None:
                batch = _Batch([schema[name] for name in keys], [[] for _ in keys])
                self._batches[(table, keys)] = batch
            for column_values, values in zip(batch.data, columns, strict=True):
                column_values.extend(values)
            batch.rows += n
            self._buffered += n

    def _layout(self, table: str, row: Mapping[str, Any]) -> tuple[str, ...]:
        """The columns a row of these keys fills, in table order (cached per key order); raises for
        a key the table lacks, once its columns are read again."""
        schema = self._schemas[table]
        keys = tuple(name for name in schema if name in row)
        if len(keys) != len(row):
            schema = self._read_again(table)
            keys = tuple(name for name in schema if name in row)
            if len(keys) != len(row):
                self._refuse(table, schema, [row])
        if len(self._layouts) >= MAX_INSERT_CONTEXTS * 4:
            self._layouts.clear()
        self._layouts[(table, tuple(row))] = keys
        return keys

    def _refuse(self, table: str, schema: dict[str, _Column], rows: Sequence[Mapping[str, Any]]) -> NoReturn:
        """Raise the ValueError of the first bad row, exactly as converting row by row would."""
        for row in rows:
            self._convert(table, schema, tuple(name for name in schema if name in row), row)
        raise AssertionError("_refuse called without a bad row")  # pragma: no cover

    def _convert(self, table: str, schema: dict[str, _Column], keys: tuple[str, ...],
                 row: Mapping[str, Any]) -> list[Any]:
        if len(keys) != len(row):
            raise self._lacking(table, sorted(set(row) - set(schema)))
        values = []
        for name in keys:
            column, value = schema[name], row[name]
            if value is None and not column.nullable:
                raise RowRefused(f"{self._database}.{table}.{name} is not Nullable; omit it or give a value")
            try:
                values.append(column.convert(value) if column.convert else value)
            except (ValueError, TypeError, OverflowError) as err:
                raise RowRefused(f"{self._database}.{table}.{name}: {err}") from err
        return values

    def flush(self) -> None:
        # A failed insert keeps its batch (and those after it) for a retry. The Native blocks go
        # after the other batches: a batch refused for a bad row sends the sink's search to write
        # every staged message again, and blocks inserted before would then go in twice.
        self._flush_batches()
        if self._native:
            self._flush_native()
            self._flush_batches()  # the rows of a block ClickHouse refused, row by row

    def _flush_batches(self) -> None:
        for key in list(self._batches):
            batch = self._batches[key]
            try:
                self._client.insert(data=batch.data, context=self._insert_context(key, batch))
            except DatabaseError as err:
                if not isinstance(err, OperationalError):
                    self._check_columns(key, err)
                raise
            del self._batches[key]
            self._buffered -= batch.rows
            batch.data.clear()  # the context still refers to this list until its next insert

    def _flush_native(self) -> None:
        """Insert the Native blocks. One refused (not an outage: a server that cannot convert a
        column, a column gone, ...) turns the C pass off for this writer and its rows are buffered
        the row-by-row way, inserted by the flush as every other batch; where that way refuses them
        too (a column gone, a table behind its schema), its error is raised with the blocks kept,
        as a refused batch is kept, for the caller's retry or search."""
        for key in list(self._native):
            batch = self._native.get(key)
            if batch is None:  # (inserted by a flush that buffering the rows of one refused made)
                continue
            table, names = key
            qualified = f"{quote_identifier(self._database)}.{quote_identifier(table)}"
            try:
                self._client.raw_insert(qualified, list(names), b"".join(batch.blocks),
                                        settings=INSERT_SETTINGS, fmt="Native")
            except DatabaseError as err:
                if isinstance(err, OperationalError):
                    raise
                if self.native_rows:
                    log.warning("ClickHouse refused a Native block of %d %s rows (%s): rows go in row by "
                                "row from now on", batch.rows, table, err)
                self.native_rows = False
                rows = [row for rows_of in batch.sources for row in rows_of()]
                del self._native[key]
                self._buffered -= batch.rows
                try:
                    self.write(table, rows)  # (all or nothing buffered)
                except Exception:
                    self._native[key] = batch
                    self._buffered += batch.rows
                    raise
                continue
            del self._native[key]
            self._buffered -= batch.rows

    def _check_columns(self, key: tuple[str, tuple[str, ...]], err: DatabaseError) -> None:
        """After a refused insert: raise what a column of the batch gone from the table means
        (:meth:`_lacking`), if one is; else return (the caller raises ``err``)."""
        table, names = key
        try:
            schema = self._read_again(table)
        except SchemaBehind:
            raise
        except Exception:  # ClickHouse failing: the insert's own error tells
            return
        missing = [name for name in names if name not in schema]
        if missing:
            raise self._lacking(table, missing) from err

    def discard(self) -> None:
        """Drop every buffered row not inserted yet: a flush refused for a bad row buffered among
        good ones, whose caller writes the rows again in smaller groups to find it. The insert
        contexts go too: one whose insert failed part way is not reused."""
        self._batches.clear()
        self._native.clear()
        self._contexts.clear()
        self._buffered = 0

    def _insert_context(self, key: tuple[str, tuple[str, ...]], batch: _Batch) -> InsertContext:
        """One reused InsertContext per (table, columns).

        A clickhouse-connect InsertContext refers to itself (it keeps a bound method of its own) and
        to the columns it last inserted. One made per insert is therefore garbage only the cyclic GC
        frees, with the rows inside, and tune_gc() makes that GC rare: a sink grew ~100 MB per 10
        minutes of such dead rows. Reused contexts are few and long-lived, and flush empties the
        columns they point at.
        """
        context = self._contexts.get(key)
        if context is None:
            if len(self._contexts) >= MAX_INSERT_CONTEXTS:
                self._contexts.clear()
            context = self._client.create_insert_context(
                key[0],
                column_names=[c.name for c in batch.columns],
                database=self._database,
                column_type_names=[c.type_name for c in batch.columns],
                column_oriented=True,
            )
            self._contexts[key] = context
        return context

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._close_client:
                self._client.close()


# -- writer through the sink topic -----------------------------------------------------------------


class KafkaSinkRowWriter:
    """Publishes sink messages of column blocks (``{"table": t, "blocks": [{"names": [...], "n": n,
    "columns": [...]}, ...]}``, the form stage 2 writes: :func:`~driftline.pipeline.records.sink_rows`)
    for the sink to insert, < 900 KB each: up to :data:`SINK_CHUNK_ROWS` rows a message, halved
    until the message fits.

    Messages are keyed by table. ``flush`` waits for the broker to acknowledge every message sent
    so far and raises the first send error. ``close`` flushes and closes the producer.
    """

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._pending: list[FutureRecordMetadata] = []
        self._ends: dict[int, int] = {}  # partition -> offset after the last message acknowledged

    def write(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(rows), SINK_CHUNK_ROWS):
            self._send_rows(table, rows[start : start + SINK_CHUNK_ROWS])

    def _send_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        value = orjson.dumps(
            {"table": table, "blocks": [{"names": block.names, "n": block.n, "columns": block.columns}
                                        for block in row_blocks(rows)]},
            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
        )
        if len(value) <= MAX_SINK_MESSAGE_BYTES:
            self._send(table, value)
        elif len(rows) == 1:
            raise ValueError(f"a {table} row is {len(value)} bytes, over the sink message limit")
        else:
            middle = len(rows) // 2
            self._send_rows(table, rows[:middle])
            self._send_rows(table, rows[middle:])

    def _send(self, table: str, value: bytes) -> None:
        self._pending.append(self._producer.send(self._topic, key=table.encode(), value=value))

    def flush(self) -> None:
        self._producer.flush()
        pending, self._pending = self._pending, []
        for future in pending:
            sent = future.get()  # raises the send error, if any; bounded by the producer's delivery timeout
            self._ends[sent.partition] = max(self._ends.get(sent.partition, 0), sent.offset + 1)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close()

    def wait_inserted(self, settings: Settings, group: str, patience_s: float = 30.0) -> int:
        """Wait until consumer group ``group`` (the worker's sink, which commits once the rows are
        inserted) has committed past every message acknowledged; give up once its offsets have not
        moved for ``patience_s``. Returns the messages it has still to commit (0: all inserted)."""
        topic, ends = self._topic, dict(self._ends)
        partitions = [TopicPartition(topic, p) for p in ends]
        last, moved = -1, time.monotonic()
        with admin_client(settings) as admin:
            while True:
                committed = admin.list_group_offsets({group: partitions}).get(group, {})
                left = sum(max(0, end - _committed(committed.get(TopicPartition(topic, p))))
                           for p, end in ends.items())
                if left == 0:
                    return 0
                if left != last:
                    last, moved = left, time.monotonic()
                elif time.monotonic() - moved >= patience_s:
                    return left
                time.sleep(0.2)


def _committed(meta: Any) -> int:
    """A partition's committed offset, 0 without a commit (kafka-python reports -1 or no entry)."""
    return max(0, meta.offset) if meta is not None else 0


def sink_producer(settings: Settings) -> KafkaProducer:
    """A kafka-python producer suited to the sink topic."""
    max_request = max(settings.kafka.max_message_bytes, MAX_SINK_MESSAGE_BYTES + 65_536)
    return kafka_python_producer(settings, acks="all", linger_ms=20, max_request_size=max_request)


def open_row_writer(settings: Settings) -> RowWriter:
    """Write directly when ClickHouse can be opened here, else through ``settings.topics.sink``.

    An embedded engine recorded as owned by another live process is not even tried. Note that a
    direct writer on the embedded engine holds it until closed, so a worker cannot start meanwhile.
    """
    owner = read_owner(settings.home) if settings.clickhouse.embedded else None
    if owner is None or owner.pid == os.getpid():
        try:
            return ClickHouseRowWriter(connect(settings), database_name(settings))
        except EngineBusy:
            pass
    return KafkaSinkRowWriter(sink_producer(settings), settings.topics.sink)
