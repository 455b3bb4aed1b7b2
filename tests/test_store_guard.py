"""The read-only SQL guard of `driftline query` and the worker's /query endpoint."""

from __future__ import annotations

import pytest

from driftline.store.guard import QueryRejected, check_read_only


@pytest.mark.parametrize(
    ("sql", "statement"),
    [
        ("SELECT 1", "SELECT 1"),
        ("  select * from outcomes FINAL ;  ", "select * from outcomes FINAL"),
        ("-- note\nWITH 1 AS x SELECT x;\n-- trailing comment", "-- note\nWITH 1 AS x SELECT x"),
        ("/* c */ SHOW TABLES", "/* c */ SHOW TABLES"),
        ("DESCRIBE TABLE drift_scores", "DESCRIBE TABLE drift_scores"),
        ("desc outcomes", "desc outcomes"),
        ("EXPLAIN SELECT 1", "EXPLAIN SELECT 1"),
        ("EXISTS TABLE outcomes", "EXISTS TABLE outcomes"),
        ("(SELECT 1)", "(SELECT 1)"),
        ("SELECT 'a;b', \"c;d\", `e;f`, $$g;h$$", "SELECT 'a;b', \"c;d\", `e;f`, $$g;h$$"),
        ("SELECT 'it''s; fine', 'back\\'slash;'", "SELECT 'it''s; fine', 'back\\'slash;'"),
        ("SELECT 'into outfile' AS words", "SELECT 'into outfile' AS words"),
    ],
)
def test_read_only_statements(sql: str, statement: str) -> None:
    assert check_read_only(sql) == statement


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO outcomes (run_id) VALUES ('x')",
        "DROP TABLE outcomes",
        "ALTER TABLE outcomes DELETE WHERE 1",
        "TRUNCATE TABLE outcomes",
        "OPTIMIZE TABLE outcomes FINAL",
        "SYSTEM FLUSH LOGS",
        "SET readonly = 0",
        "CREATE TABLE t (a Int8) ENGINE = Memory",
        "SELECT 1; DROP TABLE outcomes",
        "SELECT 1; SELECT 2",
        "SELECT 1 -- it's\n; DROP TABLE outcomes",
        "SELECT 1 # it's\n; DROP TABLE outcomes",
        "SELECT 1 /* it's */ ; DROP TABLE outcomes",
        "SELECT $$it's$$; DROP TABLE outcomes",
        "SELECT 1 INTO OUTFILE '/tmp/x.csv'",
        "WITH 1 AS x SELECT x into   outfile 'y'",
        "SELECT 'unterminated",
        "SELECT 1 /* unterminated",
        "",
        "  ;  ",
        "-- only a comment",
    ],
)
def test_everything_else_is_rejected(sql: str) -> None:
    with pytest.raises(QueryRejected):
        check_read_only(sql)


@pytest.mark.parametrize(("sql", "code"), [
    ("INSERT INTO outcomes (run_id) VALUES ('x')", 164), ("drop table outcomes", 164),
    ("SET readonly = 0", 164), ("SELECT 1 INTO OUTFILE '/tmp/x.csv'", 164),
    ("SELEC 1", 62), ("SELECT 1; SELECT 2", 62), ("SELECT 'unterminated", 62), ("", 62),
])
def test_rejections_carry_the_clickhouse_error_code(sql: str, code: int) -> None:
    """What a ClickHouse server would answer: READONLY for a write, SYNTAX_ERROR otherwise."""
    with pytest.raises(QueryRejected) as rejected:
        check_read_only(sql)
    assert rejected.value.code == code
