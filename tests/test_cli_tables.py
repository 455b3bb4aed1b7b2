"""Tables the CLI prints keep every value whole: `driftline query "SELECT * FROM retrain_triggers"`
into a file or a pipe printed "ele…", "202…" (rich fits a table to 80 columns off a terminal and cuts
what does not fit)."""

from __future__ import annotations

import pytest

from driftline.cli.common import print_table
from driftline.cli.query import render_table


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
