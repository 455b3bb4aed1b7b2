"""`driftline report --last` with several window sizes ends where the page's heat map (the smallest
size) ends: it ended at the newest window of any size, and a larger size that does not divide into
the smallest (900 s against 600 s) closes a window past the smallest's last one, leaving the last
600-s window out of `--last 10m` (here: no drift window at all, so an error)."""

from __future__ import annotations

import html
from pathlib import Path

import orjson
import pytest

from driftline.cli.main import main

START = 1_767_225_600_000  # 2026-01-01 00:00 UTC: a multiple of both window sizes
MIN = 60_000


def test_last_ends_at_the_newest_window_of_the_heat_maps_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # 45 minutes at one event per 2 s (the last at minute 45), no labels (no outcome intervals): the
    # replay closes the 600-s windows up to minute 40 and the 900-s ones up to minute 45
    events = [{"schema_version": 1, "prediction_id": f"p{i}", "model_id": "m", "model_version": "1",
               "timestamp": START + i * 2_000, "features": {"x": float(i % 17)},
               "prediction": {"label": "a", "score": 0.5}} for i in range(45 * 30 + 1)]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRIFTLINE_CLICKHOUSE_URL", f"chdb://{tmp_path / 'ch'}")
    monkeypatch.setenv("DRIFTLINE_WINDOWS_SIZES_S", "[600, 900]")
    assert main(["db", "migrate"]) == 0
    assert main(["replay", "--run-id", "r", "--no-progress", "--predictions", str(predictions)]) == 0
    capsys.readouterr()
    out = tmp_path / "m.html"
    assert main(["report", "--model", "m", "--run-id", "r", "--last", "10m", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    # the output says which range and window size the page shows
    assert capsys.readouterr().out.strip().endswith(
        "event times from 2026-01-01T00:30:00.000Z, drift windows of 600 s")
    page = out.read_text()
    numbers = orjson.loads(html.unescape(page.split('data-report="', 1)[1].split('"', 1)[0]))["models"][0]
    assert numbers["from_ms"] == START + 30 * MIN and numbers["versions"]["1"]["windows"] == 1
