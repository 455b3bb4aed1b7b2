"""Tables the CLI prints keep every value whole: `driftline query "SELECT * FROM retrain_triggers"`
into a file or a pipe printed "ele…", "202…" (rich fits a table to 80 columns off a terminal and cuts
what does not fit)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.cli.common import print_table
from driftline.cli.query import render_table
from driftline.infra import clickhouse_sql_dir


def _wide_result() -> dict[str, object]:
    names = ["run_id", "model_id", "trigger_id", "reason", "message", "triggered_at", "evidence"]
    row = {"run_id": "elec-replay", "model_id": "electricity",
           "trigger_id": "7b23b075b04bff355a1ac1ad02e8c0b3",
           "reason": "drift", "message": "4 of the last 4 windows of 300s drifted (threshold 3); episodes: 6",
           "triggered_at": "2026-12-03 08:30:00.000", "evidence": '{"drifted_windows": 4, "windows": 4}'}
    return {"meta": [{"name": n, "type": "String"} for n in names], "data": [row, row], "rows": 2}


def test_query_table_off_a_terminal_prints_every_value_whole(capsys: pytest.CaptureFixture[str]) -> None:
    result = _wide_result()
    print_table(render_table(result))
    out = capsys.readouterr().out
    assert "…" not in out
    lines = out.splitlines()
    row_lines = [line for line in lines if "7b23b075b04bff355a1ac1ad02e8c0b3" in line]
    assert len(row_lines) == 2  # one line a row
    for value in result["data"][0].values():  # type: ignore[index]
        assert value in row_lines[0]


def test_stderr_tables_too(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(render_table(_wide_result()), stderr=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "…" not in captured.err
    assert "4 of the last 4 windows of 300s drifted (threshold 3); episodes: 6" in captured.err


def test_query_notes_tables_read_without_final() -> None:
    """A new user's `SELECT * FROM drift_episodes` shows an episode's versions as rows until they
    merge; `driftline query` says so on stderr (its output stays the result)."""
    from driftline.cli.query import driftline_tables, read_without_final

    tables = driftline_tables()
    assert {"drift_episodes", "drift_alerts", "outcomes", "dead_letters", "model_metrics"} <= tables
    assert "latest_drift" not in tables  # a view, FINAL inside
    sql = ("SELECT e.feature FROM driftline.drift_episodes AS e JOIN `outcomes` FINAL USING (model_id) "
           "WHERE e.model_id IN (SELECT model_id FROM model_metrics) AND 1 IN (SELECT 1 FROM latest_drift)")
    assert read_without_final(sql, tables) == ["drift_episodes", "model_metrics"]
    assert read_without_final("select * from drift_episodes final", tables) == []


def _one_by_one() -> dict[str, object]:
    return {"meta": [{"name": "n", "type": "UInt64"}], "data": [{"n": 5}], "rows": 1}


def test_a_caption_wider_than_its_table_is_one_line_off_a_terminal(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`driftline query "SELECT count() ..." | cat` printed the caption of its 1x1 table as "row(s" then
    ")": rich wraps a title and a caption at the table's width."""
    table = render_table(_one_by_one())
    table.title = "a title wider than the table"
    print_table(table)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "a title wider than the table"
    assert lines[-1] == "1 row(s)"
    assert len(lines) == 2 + 5  # the table's own lines: top, header, rule, the row, bottom


def test_a_caption_wider_than_its_table_is_one_line_on_a_terminal(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich takes the captured stdout for a terminal
    monkeypatch.setenv("COLUMNS", "100")
    print_table(render_table(_one_by_one()))
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert "1 row(s)" in out.splitlines()[-1]


def test_commands_print_their_tables_whole_into_a_pipe(tmp_path: Path) -> None:
    """db status cut its migration names to 80 columns ("…") off a terminal, and query wrapped the
    caption of a narrow result."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
           "DRIFTLINE_HOME": str(tmp_path / "home"), "COLUMNS": "60"}

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "driftline.cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    run("db", "migrate")
    status = run("db", "status")
    assert "…" not in status
    assert status.splitlines()[0].endswith("database driftline")
    names = [path.stem.split("_", 1)[1] for path in sorted(clickhouse_sql_dir().glob("*.sql"))]
    rows = [line for line in status.splitlines() if "│ applied │" in line]
    assert len(rows) == len(names) and all(name in row for name, row in zip(names, rows, strict=True))
    assert run("query", "SELECT 5 AS n").splitlines()[-1] == "1 row(s)"
