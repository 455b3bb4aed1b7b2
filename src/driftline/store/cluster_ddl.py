r"""Rewrite the migrations' single-server DDL into ON CLUSTER DDL for a ClickHouse cluster.

Layout (what `driftline db migrate --cluster NAME` creates on every node of cluster NAME):

- ``<table>_local``: the data, ``Replicated<Engine>`` with the replication path
  ``/clickhouse/tables/{shard}/{database}/{table}`` and replica ``{replica}`` (server macros);
- ``<table>``: a ``Distributed`` table over the ``_local`` tables under the public name, so BI
  queries (``SELECT ... FROM drift_scores FINAL``), the views and the sink's inserts keep working
  unchanged. Its sharding key is a hash of the table's ``ORDER BY`` key: every row of one identity
  lands on one shard, so ``FINAL`` (run on each shard) still collapses re-inserted rows.

Views are created (or replaced, or dropped) on every node over the public names; a materialized
view ``TO`` a table reads and writes the ``_local`` tables (inserts into a shard's local table
trigger it there). ALTERs of columns (ADD/DROP/MODIFY/COMMENT/RENAME COLUMN, what a Distributed
table accepts) run on both tables; other ALTERs (TTL, indexes, settings) on the local table only.

The statements come after placeholder substitution (``{database}`` is the database name), so the
``{database}``/``{table}``/``{shard}``/``{replica}`` left in the replication path are ClickHouse
macros, expanded by each server.

Examples:
    >>> rewriter = ClusterRewriter("analytics", "driftline", known_tables={"t"})
    >>> local, distributed = rewriter.rewrite(
    ...     "CREATE TABLE IF NOT EXISTS driftline.t (a UInt8, v UInt64) "
    ...     "ENGINE = ReplacingMergeTree(v) ORDER BY (a) COMMENT 'demo'"
    ... )
    >>> print(local.replace(" ENGINE", "\nENGINE").replace(" ORDER", "\nORDER"))
    CREATE TABLE IF NOT EXISTS driftline.t_local ON CLUSTER `analytics` (a UInt8, v UInt64)
    ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', v)
    ORDER BY (a) COMMENT 'demo'
    >>> print(distributed.replace(" ENGINE", "\nENGINE").replace(" COMMENT", "\nCOMMENT"))
    CREATE TABLE IF NOT EXISTS driftline.t ON CLUSTER `analytics` AS driftline.t_local
    ENGINE = Distributed('analytics', 'driftline', 't_local', cityHash64(a))
    COMMENT 'demo'
    >>> rewriter.rewrite("ALTER TABLE driftline.t ADD COLUMN IF NOT EXISTS b String")[0]
    'ALTER TABLE driftline.t_local ON CLUSTER `analytics` ADD COLUMN IF NOT EXISTS b String'
    >>> rewriter.rewrite("CREATE OR REPLACE VIEW driftline.v AS SELECT a FROM driftline.t")
    ['CREATE OR REPLACE VIEW driftline.v ON CLUSTER `analytics` AS SELECT a FROM driftline.t']
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from driftline.store.client import StoreError

LOCAL_SUFFIX = "_local"
REPLICATION_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
REPLICA_NAME = "{replica}"
# schema_migrations is one replication group over every node (not per shard): any node answers
# `db status`, so replica names must be unique cluster-wide.
MIGRATIONS_REPLICATION_PATH = "/clickhouse/tables/all/{database}/{table}"
MIGRATIONS_REPLICA_NAME = "{shard}-{replica}"

_NAME = r"(?P<name>(?:`[^`]+`|\w+)(?:\.(?:`[^`]+`|\w+))?)"
_CREATE_TABLE = re.compile(r"^CREATE\s+TABLE\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?" + _NAME + r"\s*\(", re.I)
_CREATE_VIEW = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _NAME + r"\s+AS\b", re.I
)
_DROP_VIEW = re.compile(r"^DROP\s+VIEW\s+(?:IF\s+EXISTS\s+)?" + _NAME + r"(?:\s|$)", re.I)
_CREATE_MV = re.compile(r"^CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _NAME + r"\s", re.I)
_ALTER_TABLE = re.compile(r"^ALTER\s+TABLE\s+" + _NAME + r"\s", re.I)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(?P<engine>\w+)\s*(?P<args>\()?", re.I)
_ORDER_BY = re.compile(r"\bORDER\s+BY\s+", re.I)
_CLAUSE_START = re.compile(r"\s(?:PARTITION\s+BY|PRIMARY\s+KEY|SAMPLE\s+BY|TTL|SETTINGS|COMMENT)\b", re.I)
_TABLE_COMMENT = re.compile(r"\sCOMMENT\s+(?P<text>'(?:[^'\\]|''|\\.)*')\s*$", re.I | re.S)
_MV_TARGET = re.compile(r"\bTO\s+" + _NAME, re.I)
_COLUMN_ACTION = re.compile(r"^(?:ADD|DROP|MODIFY|COMMENT|RENAME)\s+COLUMN\b", re.I)
_LEADING_COMMENTS = re.compile(r"^(?:\s*--[^\n]*\n)*\s*")


class ClusterDDLError(StoreError):
    """A migration statement has a form the cluster rewrite does not know."""


def _mask_strings(sql: str) -> str:
    """`sql` with the contents of string literals blanked (same length), for structural searches.

    >>> _mask_strings("a COMMENT 'x (y)' b")
    "a COMMENT '     ' b"
    """
    out = list(sql)
    i = 0
    while i < len(sql):
        if sql[i] == "'":
            j = i + 1
            while j < len(sql):
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == "'":
                    if j + 1 < len(sql) and sql[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            for k in range(i + 1, min(j, len(sql))):
                out[k] = " "
            i = j + 1
        else:
            i += 1
    return "".join(out)


def _matching_paren(masked: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(masked)):
        if masked[i] == "(":
            depth += 1
        elif masked[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ClusterDDLError(f"unbalanced parentheses: {masked[open_at : open_at + 60]!r}")


def _split_top_level(text: str) -> list[str]:
    """Comma-separated parts of `text` outside parentheses and strings."""
    masked = _mask_strings(text)
    parts, depth, start = [], 0, 0
    for i, char in enumerate(masked):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [part for part in parts if part]


def _split_name(name: str) -> tuple[str, str]:
    database, _, table = name.rpartition(".")
    return database, table


def _local_name(name: str) -> str:
    database, table = _split_name(name)
    local = f"`{table.strip('`')}{LOCAL_SUFFIX}`" if table.startswith("`") else table + LOCAL_SUFFIX
    return f"{database}.{local}" if database else local


class ClusterRewriter:
    """Turns each single-server migration statement into the statements for cluster `cluster`.

    `known_tables` are the bare names of every table the migrations create (see `table_names`);
    a materialized view's source and target among them are read and written as ``_local``.
    """

    def __init__(self, cluster: str, database: str, known_tables: Iterable[str] = ()) -> None:
        if not re.fullmatch(r"[\w.-]+", cluster):
            raise ClusterDDLError(f"cluster name {cluster!r}: use letters, digits, '_', '-' or '.'")
        self.cluster = cluster
        self.database = database
        self.known_tables = {name.strip("`") for name in known_tables}
        self._on_cluster = f" ON CLUSTER `{cluster}`"

    def rewrite(self, statement: str) -> list[str]:
        sql = _LEADING_COMMENTS.sub("", statement).strip().rstrip(";").strip()
        if _CREATE_TABLE.match(sql):
            return self._create_table(sql)
        if _CREATE_MV.match(sql):
            return [self._materialized_view(sql)]
        if match := _CREATE_VIEW.match(sql) or _DROP_VIEW.match(sql):
            return [self._after(sql, match.end("name"))]
        if match := _ALTER_TABLE.match(sql):
            return self._alter(sql, match)
        raise ClusterDDLError(f"no cluster form known for: {sql[:80]!r}")

    def _after(self, sql: str, at: int) -> str:
        return sql[:at] + self._on_cluster + sql[at:]

    def _create_table(self, sql: str) -> list[str]:
        match = _CREATE_TABLE.match(sql)
        assert match is not None
        name = match.group("name")
        masked = _mask_strings(sql)
        columns_end = _matching_paren(masked, match.end() - 1)
        engine = _ENGINE.search(masked, columns_end)
        if engine is None:
            raise ClusterDDLError(f"{name}: CREATE TABLE without ENGINE")
        engine_name = engine.group("engine")
        if not engine_name.endswith("MergeTree") or engine_name.startswith("Replicated"):
            raise ClusterDDLError(f"{name}: engine {engine_name} has no replicated form here")
        replication = f"'{REPLICATION_PATH}', '{REPLICA_NAME}'"
        if engine.group("args"):
            args_end = _matching_paren(masked, engine.end() - 1)
            args = sql[engine.end() : args_end].strip()
            engine_sql = f"Replicated{engine_name}({replication}{', ' + args if args else ''})"
            after_engine = args_end + 1
        else:
            engine_sql = f"Replicated{engine_name}({replication})"
            after_engine = engine.end("engine")
        order_by = _ORDER_BY.search(masked, after_engine)
        if order_by is None:
            raise ClusterDDLError(f"{name}: no ORDER BY to derive the sharding key from")
        clause = _CLAUSE_START.search(masked, order_by.end())
        key_sql = sql[order_by.end() : clause.start() if clause else len(sql)].strip()
        if key_sql.startswith("(") and _matching_paren(_mask_strings(key_sql), 0) == len(key_sql) - 1:
            key_sql = key_sql[1:-1]
        key_columns = _split_top_level(key_sql)
        if not key_columns or key_sql.lower() == "tuple()":
            raise ClusterDDLError(f"{name}: an empty ORDER BY gives no sharding key")
        local = _local_name(name)
        local_sql = (
            sql[: match.start("name")]
            + local
            + self._on_cluster
            + " "
            + sql[match.end("name") : engine.start("engine")].lstrip()
            + engine_sql
            + sql[after_engine:]
        )
        database, table = _split_name(name)
        comment = _TABLE_COMMENT.search(sql[after_engine:])
        distributed = (
            f"CREATE TABLE {match.group('ine') or ''}{name}{self._on_cluster} AS {local}"
            f" ENGINE = Distributed('{self.cluster}', '{(database or self.database).strip('`')}',"
            f" '{_split_name(local)[1].strip('`')}', cityHash64({', '.join(key_columns)}))"
            + (f" COMMENT {comment.group('text')}" if comment else "")
        )
        self.known_tables.add(table.strip("`"))
        return [local_sql, distributed]

    def _alter(self, sql: str, match: re.Match[str]) -> list[str]:
        name = match.group("name")
        rest = sql[match.end("name") :]
        if _split_name(name)[1].strip("`") not in self.known_tables:
            return [self._after(sql, match.end("name"))]
        local = "ALTER TABLE " + _local_name(name) + self._on_cluster + rest
        actions = _split_top_level(rest)
        if not all(_COLUMN_ACTION.match(action) for action in actions):
            return [local]
        return [local, "ALTER TABLE " + name + self._on_cluster + rest]

    def _materialized_view(self, sql: str) -> str:
        match = _CREATE_MV.match(sql)
        assert match is not None
        masked = _mask_strings(sql)
        as_select = re.search(r"\bAS\s+(?:WITH|SELECT)\b", masked, re.I)
        head_end = as_select.start() if as_select else len(sql)
        target = _MV_TARGET.search(masked, match.end("name"), head_end)
        if target is None or _ENGINE.search(masked, match.end("name"), head_end):
            raise ClusterDDLError(
                f"{match.group('name')}: a materialized view on a cluster needs TO <table> (no inner ENGINE)"
            )
        out = self._after(sql, match.end("name"))
        # Reference the local tables: each shard's inserts feed its own view into its own target.
        tables = "|".join(re.escape(t) for t in sorted(self.known_tables, key=len, reverse=True))
        if not tables:
            return out
        pattern = re.compile(rf"(?<![\w`])((?:`?{re.escape(self.database)}`?\.)?`?)({tables})(`?)(?![\w`])")
        masked_out = _mask_strings(out)
        head = len(out[: out.index(self._on_cluster)]) + len(self._on_cluster)
        pieces, last = [], 0
        for ref in pattern.finditer(masked_out, head):
            pieces.append(out[last : ref.end(2)] + LOCAL_SUFFIX)
            last = ref.end(2)
        pieces.append(out[last:])
        return "".join(pieces)


def table_names(statements: Iterable[str]) -> set[str]:
    """Bare names of the tables CREATE TABLE statements create.

    >>> sorted(table_names(["CREATE TABLE IF NOT EXISTS db.a (x UInt8) ENGINE = MergeTree ORDER BY x"]))
    ['a']
    """
    names = set()
    for statement in statements:
        match = _CREATE_TABLE.match(_LEADING_COMMENTS.sub("", statement).strip())
        if match:
            names.add(_split_name(match.group("name"))[1].strip("`"))
    return names


_NOT_A_COLUMN = re.compile(r"^(?:INDEX|CONSTRAINT|PROJECTION)\s", re.I)
_COMPUTED = re.compile(r"\s(?:MATERIALIZED|ALIAS)\s", re.I)
_COLUMN = r"(?P<column>`[^`]+`|\w+)"
_ADD_COLUMN = re.compile(r"^ADD\s+COLUMN\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _COLUMN, re.I)
_DROP_COLUMN = re.compile(r"^DROP\s+COLUMN\s+(?:IF\s+EXISTS\s+)?" + _COLUMN, re.I)
_RENAME_COLUMN = re.compile(
    r"^RENAME\s+COLUMN\s+(?:IF\s+EXISTS\s+)?" + _COLUMN + r"\s+TO\s+(?P<to>`[^`]+`|\w+)", re.I
)


def table_columns(statements: Iterable[str]) -> dict[str, set[str]]:
    """The columns an insert may name (not MATERIALIZED or ALIAS) of each table, by bare name, after
    the CREATE TABLE and ALTER TABLE ... ADD/DROP/RENAME COLUMN statements, in their order.

    >>> {table: sorted(names) for table, names in table_columns([
    ...     "CREATE TABLE db.a (x UInt8, y String COMMENT 'p, (q)', w UInt8 ALIAS x, INDEX i x TYPE minmax)"
    ...     " ENGINE = MergeTree ORDER BY x",
    ...     "ALTER TABLE db.a ADD COLUMN IF NOT EXISTS z UInt8 DEFAULT 0, DROP COLUMN y",
    ... ]).items()}
    {'a': ['x', 'z']}
    """
    columns: dict[str, set[str]] = {}
    for statement in statements:
        sql = _LEADING_COMMENTS.sub("", statement).strip()
        if match := _CREATE_TABLE.match(sql):
            end = _matching_paren(_mask_strings(sql), match.end() - 1)
            names = columns[_split_name(match.group("name"))[1].strip("`")] = set()
            for entry in _split_top_level(sql[match.end() : end]):
                if not _NOT_A_COLUMN.match(entry) and not _COMPUTED.search(_mask_strings(entry)):
                    names.add(entry.split(None, 1)[0].strip("`"))
        elif match := _ALTER_TABLE.match(sql):
            names = columns.setdefault(_split_name(match.group("name"))[1].strip("`"), set())
            for action in _split_top_level(sql[match.end("name") :]):
                if (added := _ADD_COLUMN.match(action)) and not _COMPUTED.search(_mask_strings(action)):
                    names.add(added.group("column").strip("`"))
                elif dropped := _DROP_COLUMN.match(action):
                    names.discard(dropped.group("column").strip("`"))
                elif renamed := _RENAME_COLUMN.match(action):
                    names.discard(renamed.group("column").strip("`"))
                    names.add(renamed.group("to").strip("`"))
    return columns
