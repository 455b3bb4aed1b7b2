"""What `driftline replay` tells a new user: the drift episodes apart from the drift_episodes rows
written (an episode's row is re-written while it lasts, so replaying elec2 printed "drift_episodes
820" for 9 episodes, which reads as a flood of alarms), and an unmigrated store before the replay
runs rather than after."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from driftline.cli.main import main
from driftline.cli.replay import summary_lines
from driftline.config import Settings
from driftline.operators.profile import build_profile
from driftline.operators.validate import RawRecord
from driftline.replay.engine import Replayer, ReplayResult
from driftline.store.migrate import discover
from driftline.store.writer import MemoryRowWriter

START = 1_767_225_600_000
SETTINGS = Settings(
    topics={"partitions": 1},
    windows={"sizes_s": [300], "allowed_lateness_s": 0, "metrics_interval_s": 300},
)


def _records() -> list[RawRecord]:
    """Two events a second for 40 minutes; ``load`` shifts by 2 sd after 10 minutes, for good."""
    rng = random.Random(11)
    out = []
    for i in range(2 * 2400):
        ts = START + i * 500
        shift = 2.0 if i >= 1200 else 0.0
        value = orjson.dumps({
            "schema_version": 1, "prediction_id": f"p{i}", "model_id": "grid", "model_version": "1",
            "timestamp": ts, "features": {"load": rng.gauss(shift, 1), "price": rng.gauss(0, 1)},
            "prediction": {"label": "up", "score": 0.7},
        })
        out.append(RawRecord("driftline.predictions", 0, i, ts, f"p{i}".encode(), value))
    return out


def _profile() -> bytes:
    rng = random.Random(5)
    columns = {name: [rng.gauss(0, 1) for _ in range(3000)] for name in ("load", "price")}
    return build_profile("grid", "1", columns, label_column=None, prediction_column=None, bins=10,
                         top_k=10, created_at_ms=START).model_dump_json().encode()


def test_replay_summary_counts_episodes_not_row_versions() -> None:
    writer = MemoryRowWriter()
    replayer = Replayer(SETTINGS, "episodes", writer, [_profile()])
    records = _records()
    for i in range(0, len(records), 500):
        replayer.feed(records[i : i + 500])
    result = replayer.finish()
    written = writer.rows["drift_episodes"]
    episodes = {row["episode_id"] for row in written}
    assert "load" in {row["feature"] for row in written}
    assert result.rows["drift_episodes"] == len(written) > len(episodes) >= 1
    assert result.episode_ids == episodes
    expected = (f"drift episodes: {len(episodes):,} (the {len(written):,} drift_episodes rows are their "
                "versions, kept current while each lasts; read the table with FINAL)")
    assert expected in summary_lines(result)
    assert not result.first_window_references


def test_replay_summary_says_a_model_without_training_profile_gets_no_episodes() -> None:
    """Replaying elec2 without --profiles wrote 0 drift episodes and said nothing about why."""
    writer = MemoryRowWriter()
    replayer = Replayer(SETTINGS, "no-profile", writer)
    records = sorted(_records() + _low_traffic(), key=lambda r: r.timestamp_ms)
    records = [replace(r, offset=i) for i, r in enumerate(records)]
    for i in range(0, len(records), 500):
        replayer.feed(records[i : i + 500])
    result = replayer.finish()
    assert not writer.rows["drift_episodes"] and result.first_window_references == {("grid", "1")}
    lines = summary_lines(result)
    assert any(line.startswith("no training profile for grid v1: its first full window is the "
                               "reference") for line in lines), lines
    # a model whose windows never reach drift.min_count events never gets a reference: it says so
    assert result.models_never_scored == [("quiet", "2")]
    assert any(line.startswith("never scored, no reference: quiet v2 (no training profile") for line in lines)


def _low_traffic() -> list[RawRecord]:
    """A model with one event a minute: 5 a window, under drift.min_count."""
    out = []
    for i in range(40):
        ts = START + i * 60_000 + 250
        value = orjson.dumps({
            "schema_version": 1, "prediction_id": f"q{i}", "model_id": "quiet", "model_version": "2",
            "timestamp": ts, "features": {"load": 0.5}, "prediction": {"label": "up", "score": 0.7},
        })
        out.append(RawRecord("driftline.predictions", 0, 0, ts, f"q{i}".encode(), value))
    return out


def test_replay_into_an_unmigrated_store_stops_before_reading_its_input(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """It used to replay the whole input, then fail at the first write ("unknown table")."""
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRIFTLINE_CLICKHOUSE_URL", f"chdb://{tmp_path / 'ch'}")
    missing_input = tmp_path / "never-read.jsonl"
    code = main(["replay", "--run-id", "r", "--no-progress", "--predictions", str(missing_input)])
    err = capsys.readouterr().err
    assert code == 1
    assert "migration(s) not applied (001_dead_letters, ...): run `driftline db migrate` first" in err, err
    # then migrated, the same replay runs
    assert main(["db", "migrate"]) == 0
    assert f"applied {len(discover())} migration(s)" in capsys.readouterr().out
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(r.value + b"\n" for r in _records()[:400]))
    assert main(["replay", "--run-id", "r", "--no-progress", "--predictions", str(events)]) == 0


def test_replay_summary_says_what_did_not_count_and_where() -> None:
    """Rejected events, exact re-sends and labels that joined nothing, in the summary beside the
    rows: they had been visible only by querying dead_letters and model_metrics."""
    records = _records()[:1200]
    resent = records[100:105]
    bad = [replace(records[200], value=b'{"schema_version": 1, "prediction_id": "broken"')]
    orphans = [RawRecord("driftline.labels", 0, i, START + 1000 * i + 1, f"nobody-{i}".encode(),
                         orjson.dumps({"schema_version": 1, "prediction_id": f"nobody-{i}", "label": "up",
                                       "timestamp": START + 1000 * i + 1, "model_id": "grid"}))
               for i in range(7)]
    stream = sorted(records + resent + bad + orphans, key=lambda r: r.timestamp_ms)
    offsets: Counter[str] = Counter()
    ordered = []
    for r in stream:
        ordered.append(replace(r, offset=offsets[r.topic]))
        offsets[r.topic] += 1
    writer = MemoryRowWriter()
    replayer = Replayer(SETTINGS.model_copy(update={"join": SETTINGS.join.model_copy(
        update={"label_horizon_s": 60})}), "not-counted", writer, [_profile()])
    for i in range(0, len(ordered), 300):
        replayer.feed(ordered[i : i + 300])
    result = replayer.finish(START + 1_200_000)
    assert result.dead_letters == Counter(r["error_kind"] for r in writer.rows["dead_letters"])
    assert sum(result.dead_letters.values()) == 1
    overall = [r for r in writer.rows["model_metrics"] if r["segment"] == ""]
    assert result.not_joined["n_duplicate_predictions"] == 5 == sum(
        r.get("n_duplicate_predictions") or 0 for r in overall)
    assert result.not_joined["n_orphan_labels"] == 7
    assert result.not_joined["n_expired"] == sum(r.get("n_expired") or 0 for r in overall) > 0
    lines = summary_lines(result)
    [kind] = result.dead_letters
    assert f"dead letters: 1 ({kind} 1); a dead_letters row each, with its reason" in lines, lines
    assert any(line.startswith("not joined (model_metrics counts, all traffic): ") and "7 labels joined no "
               "prediction; exact re-sends counted, not applied: 5 predictions, 0 labels" in line
               for line in lines), lines


def test_not_joined_line_points_at_the_rows_when_the_pipeline_writes_them() -> None:
    result = ReplayResult(records=10, first_ms=START, last_ms=START + 1)
    result.not_joined.update(n_orphan_labels=2)
    [line] = [x for x in summary_lines(result) if x.startswith("not joined")]
    assert not line.endswith("unjoined_events")
    result.rows["unjoined_events"] = 2
    [line] = [x for x in summary_lines(result) if x.startswith("not joined")]
    assert line.endswith("0 labels; a row each in unjoined_events")
