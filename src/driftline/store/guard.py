"""The read-only SQL guard and the execution limits of every query served to other processes.

Both the worker's ``POST /query`` and its ClickHouse HTTP interface (and ``driftline query``
before it connects anywhere) pass SQL through ``check_read_only``; the session that runs it is
also ``readonly=1`` with ``QueryLimits`` fixed before readonly, so neither barrier stands alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from driftline.config import Settings

# EXISTS: clickhouse-connect's SQLAlchemy dialect (Superset) asks EXISTS TABLE / EXISTS DATABASE.
READ_ONLY_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})
# Statements ClickHouse knows that change something: refused as READONLY, any other word as a syntax error.
WRITE_KEYWORDS = frozenset({
    "INSERT", "CREATE", "DROP", "ALTER", "DELETE", "UPDATE", "TRUNCATE", "RENAME", "OPTIMIZE", "SET",
    "USE", "GRANT", "REVOKE", "ATTACH", "DETACH", "EXCHANGE", "KILL", "SYSTEM", "BACKUP", "RESTORE",
    "UNDROP", "MOVE", "CHECK", "BEGIN", "COMMIT", "ROLLBACK", "WATCH", "REPLACE", "UNDO",
})

# ClickHouse error codes a rejection is reported with on the ClickHouse HTTP interface.
SYNTAX_ERROR = 62
READONLY = 164


class QueryRejected(ValueError):
    """The SQL is not a single read-only statement; ``code`` is the ClickHouse error it maps to."""

    def __init__(self, message: str, code: int = READONLY) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class QueryLimits:
    """Bounds of every served statement (``worker.query_max_*`` settings)."""

    max_execution_time_s: float
    max_result_rows: int

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        w = settings.worker
        return cls(w.query_max_execution_time_s, w.query_max_result_rows)

    def clickhouse_settings(self) -> dict[str, str]:
        """Session settings for ``connect(..., limits=...)`` (applied before ``readonly``)."""
        return {"max_execution_time": str(self.max_execution_time_s),
                "max_result_rows": str(self.max_result_rows), "result_overflow_mode": "throw"}

    def explain(self, error: str) -> str:
        """A ClickHouse error that is one of these limits, in the user's terms; others unchanged.

        >>> limits = QueryLimits(30.0, 1000)
        >>> limits.explain("Code: 396. DB::Exception: Limit exceeded. (TOO_MANY_ROWS_OR_BYTES)")[:48]
        'the result has more than 1000 rows, the /query l'
        >>> limits.explain("Code: 60. DB::Exception: Unknown table. (UNKNOWN_TABLE)")
        'Code: 60. DB::Exception: Unknown table. (UNKNOWN_TABLE)'
        """
        if "TOO_MANY_ROWS_OR_BYTES" in error:
            return (f"the result has more than {self.max_result_rows} rows, the /query limit "
                    "(DRIFTLINE_WORKER_QUERY_MAX_RESULT_ROWS)") + ": aggregate, filter or add a LIMIT"
        if "TIMEOUT_EXCEEDED" in error:
            return (f"the query ran longer than {self.max_execution_time_s:g} s, the /query limit "
                    "(DRIFTLINE_WORKER_QUERY_MAX_EXECUTION_TIME_S)")
        return error


_HEREDOC = re.compile(r"\$(\w*)\$")
_WORD = re.compile(r"[A-Za-z_]+")
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*$", re.IGNORECASE)


def _code_outside_literals(sql: str) -> str:
    """`sql` with string literals, quoted identifiers and comments blanked out (same length).

    Deliberately conservative: block comments do not nest and `#` always starts a line comment,
    so any reading that differs from ClickHouse's can only reveal more code, never hide it.
    """
    out = list(sql)
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            if j >= n:
                raise QueryRejected("unterminated quoted string or identifier", SYNTAX_ERROR)
            end = j + 1
        elif sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            end = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise QueryRejected("unterminated comment", SYNTAX_ERROR)
            end = j + 2
        elif c == "$" and (m := _HEREDOC.match(sql, i)):
            j = sql.find(m.group(0), m.end())
            if j < 0:
                raise QueryRejected("unterminated heredoc string", SYNTAX_ERROR)
            end = j + len(m.group(0))
        else:
            i += 1
            continue
        out[i:end] = " " * (end - i)
        i = end
    return "".join(out)


def check_read_only(sql: str) -> str:
    """The single read-only statement in `sql` (trailing `;` removed), or raise QueryRejected.

    Accepted: SELECT, WITH, SHOW, DESCRIBE/DESC, EXPLAIN, EXISTS. The client must still run it with
    ``readonly=1``; this check only narrows what reaches the engine (``INTO OUTFILE`` and
    multi-statement input are not stopped by readonly on chDB).
    """
    text = _code_outside_literals(sql)
    semicolon = text.find(";")
    if semicolon >= 0:
        if text[semicolon + 1 :].strip():
            raise QueryRejected("only a single statement is accepted", SYNTAX_ERROR)
        sql = sql[:semicolon]
        text = text[:semicolon]
    words = _WORD.findall(text)
    if not words:
        raise QueryRejected("empty query", SYNTAX_ERROR)
    first = words[0].upper()
    if first not in READ_ONLY_KEYWORDS:
        allowed = ", ".join(sorted(READ_ONLY_KEYWORDS))
        code = READONLY if first in WRITE_KEYWORDS else SYNTAX_ERROR
        raise QueryRejected(f"only {allowed} statements are accepted, not {first}", code)
    if "OUTFILE" in (w.upper() for w in words):
        raise QueryRejected("INTO OUTFILE is not accepted")
    return sql.strip()


def output_format(statement: str) -> str | None:
    """The format named by a checked statement's trailing ``FORMAT`` clause, if any.

    >>> output_format("SELECT 1 FORMAT JSONCompact"), output_format("SELECT 'FORMAT CSV'")
    ('JSONCompact', None)
    """
    match = _TRAILING_FORMAT.search(_code_outside_literals(statement))
    return match.group(1) if match else None
