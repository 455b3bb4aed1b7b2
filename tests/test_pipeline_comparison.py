"""Champion/challenger comparison through the in-process pipeline (stage 1 -> stage 2 -> rows).

Two versions of one classifier on the label clock: a clearly worse challenger is decided
``challenger_worse`` with one ``comparison`` trigger; equal versions stay undecided over many
intervals; rows do not depend on batching, and survive crashes and restores of every processor.
"""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from driftline.config import ComparisonPair, ComparisonSettings, Settings, TriggerSettings
from driftline.operators.triggers import RetrainPolicy
from driftline.operators.validate import RawRecord
from driftline.pipeline.comparison import VersionComparisons
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.pipeline.model import ModelProcessor
from driftline.store.client import connect
from driftline.store.migrate import migrate
from driftline.store.writer import ClickHouseRowWriter

START = 1_767_225_600_000
INTERVAL_S = 60
RATE_MS = 100  # one request every 100 ms: 600 per interval and version
LABEL_DELAY_MS = 5_000


@dataclass(frozen=True)
class Event:
    kind: str
    key: bytes
    value: bytes
    timestamp_ms: int


def _settings(mode: str = "shadow", triggers: bool = True) -> Settings:
    return Settings(
        windows={"sizes_s": [INTERVAL_S], "allowed_lateness_s": 5, "metrics_interval_s": INTERVAL_S,
                 "segment_keys": ["region"]},
        join={"label_horizon_s": 120},
        topics={"partitions": 2},
        sequential={"enabled": False},
        comparison={"pairs": [{"model_id": "m", "champion": "1", "challenger": "2", "mode": mode}],
                    "request_separator": "#", "triggers": triggers},
    )


def _events(errors: dict[str, float], n: int, seed: int, shadow: bool = True,
            later: dict[str, float] | None = None) -> list[Event]:
    """Requests every RATE_MS; shadow: every version scores each request (ids ``r<i>#<version>``),
    canary: each request goes to one version; a label per prediction LABEL_DELAY_MS later. The
    error rates are ``later`` from half-way on, if given."""
    rng = random.Random(seed)
    out = []
    versions = sorted(errors)
    for i in range(n):
        t = START + i * RATE_MS
        truth = rng.choice(["yes", "no"])
        region = "eu" if i % 3 else "us"
        serving = versions if shadow else [versions[i % len(versions)]]
        for version in serving:
            rates = later if later is not None and i >= n // 2 else errors
            wrong = rng.random() < rates[version]
            predicted = ("no" if truth == "yes" else "yes") if wrong else truth
            pid = f"r{i}#{version}"
            prediction = {"prediction_id": pid, "model_id": "m", "model_version": version, "timestamp": t,
                          "features": {"x": rng.random()}, "prediction": {"label": predicted},
                          "segment": {"region": region}}
            label = {"prediction_id": pid, "label": truth, "timestamp": t + LABEL_DELAY_MS, "model_id": "m"}
            out.append(Event("predictions", pid.encode(), orjson.dumps(prediction), t))
            out.append(Event("labels", pid.encode(), orjson.dumps(label), t + LABEL_DELAY_MS))
    return sorted(out, key=lambda e: e.timestamp_ms)


def _run(settings: Settings, stream: list[RawRecord], batch: int, end_ms: int) -> InProcessPipeline:
    pipeline = InProcessPipeline(settings)
    for i in range(0, len(stream), batch):
        pipeline.feed(stream[i : i + batch])
    pipeline.finish(end_ms)
    return pipeline


def _canonical(rows: list[dict[str, Any]]) -> list[bytes]:
    return sorted({orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows})


def _triggers(pipeline: InProcessPipeline) -> list[dict[str, Any]]:
    return [t for t in map(orjson.loads, pipeline.triggers) if t["reason"] == "comparison"]


N_WORSE = 6_000  # ten intervals


@pytest.fixture(scope="module")
def worse_stream() -> list[RawRecord]:
    return logged_records(_events({"1": 0.10, "2": 0.30}, N_WORSE, seed=1), _settings())


def test_a_worse_challenger_is_decided_once_with_one_trigger(worse_stream: list[RawRecord]) -> None:
    pipeline = _run(_settings(), worse_stream, batch=700, end_ms=START + N_WORSE * RATE_MS + 60_000)
    rows = pipeline.rows["version_comparison"]
    overall = sorted((r for r in rows if r["segment"] == ""), key=lambda r: r["time"])
    assert len(overall) >= 9
    assert {r["segment"] for r in rows} == {"", "region=eu", "region=us"}
    first = overall[0]
    assert first["mode"] == "shadow" and first["paired"] == 1 and first["metric"] == "accuracy"
    assert first["n_champion"] == first["n_challenger"] > 500 and first["n_unpaired"] == 0
    assert first["champion_value"] == pytest.approx(0.9, abs=0.04)
    assert first["challenger_value"] == pytest.approx(0.7, abs=0.04)
    assert first["difference_low"] < first["difference"] < first["difference_high"] < 0
    decided = [r for r in overall if r["decided_now"]]
    assert len(decided) == 1 and decided[0]["decision"] == "challenger_worse"
    assert all(r["decision"] == "challenger_worse" for r in overall if r["time"] >= decided[0]["time"])
    triggers = _triggers(pipeline)
    assert len(triggers) == 1
    (trigger,) = triggers
    assert trigger["model_version"] == "2" and "champion v1" in trigger["message"]
    assert trigger["evidence"]["recommendation"] == "roll_back"
    assert trigger["window_end"] == decided[0]["time"]
    # no trigger without the setting, the same rows
    quiet = _run(_settings(triggers=False), worse_stream, batch=700,
                 end_ms=START + N_WORSE * RATE_MS + 60_000)
    assert _triggers(quiet) == []
    assert _canonical(quiet.rows["version_comparison"]) == _canonical(rows)


def test_rows_do_not_depend_on_batching(worse_stream: list[RawRecord]) -> None:
    end = START + N_WORSE * RATE_MS + 60_000
    first = _run(_settings(), worse_stream, batch=700, end_ms=end)
    second = _run(_settings(), worse_stream, batch=131, end_ms=end)
    assert first.rows["version_comparison"]
    assert _canonical(first.rows["version_comparison"]) == _canonical(second.rows["version_comparison"])
    assert _triggers(first) == _triggers(second)


def test_rows_survive_crash_and_restore(worse_stream: list[RawRecord], feed_with_crashes: Any) -> None:
    baseline = _run(_settings(), worse_stream, batch=400, end_ms=START + N_WORSE * RATE_MS + 60_000)
    batches = [worse_stream[i : i + 400] for i in range(0, len(worse_stream), 400)]
    crash_at = {len(batches) // 3, (2 * len(batches)) // 3}
    pipeline = InProcessPipeline(_settings())
    rows = feed_with_crashes(pipeline, batches, crash_at, every=4)
    pipeline.finish(START + N_WORSE * RATE_MS + 60_000)
    rows = {t: _canonical(rs) for t, rs in pipeline.rows.items()}
    assert rows["version_comparison"] == _canonical(baseline.rows["version_comparison"])
    assert {orjson.dumps(t, option=orjson.OPT_SORT_KEYS) for t in _triggers(pipeline)} == {
        orjson.dumps(t, option=orjson.OPT_SORT_KEYS) for t in _triggers(baseline)}


def test_checkpoint_without_comparisons_restores() -> None:
    """A stage-2 checkpoint from before comparisons (no ``comparisons`` attribute) restores and
    starts comparing."""
    settings = _settings()
    processor = ModelProcessor(0, settings)
    del processor.outcomes.__dict__["comparisons"]
    blob = processor.snapshot()
    restored = ModelProcessor.restore(blob, settings)
    assert restored.outcomes.versions.active


def test_equal_versions_stay_undecided_and_canary_is_unpaired() -> None:
    n = 18_000  # thirty intervals, 300 requests per version each
    settings = _settings(mode="canary")
    stream = logged_records(_events({"1": 0.15, "2": 0.15}, n, seed=2, shadow=False), settings)
    pipeline = _run(settings, stream, batch=900, end_ms=START + n * RATE_MS + 60_000)
    overall = [r for r in pipeline.rows["version_comparison"] if r["segment"] == ""]
    assert len(overall) >= 29
    assert all(r["paired"] == 0 and r["mode"] == "canary" for r in overall)
    assert all(r["decision"] == "" for r in pipeline.rows["version_comparison"])
    assert max(r["n_tested"] for r in overall) > 8_000
    assert _triggers(pipeline) == []


def test_rows_are_written_and_resends_collapse(worse_stream: list[RawRecord], settings: Settings) -> None:
    """The rows as the sink writes them: every column lands, a re-send collapses under FINAL."""
    pipeline = _run(_settings(), worse_stream, batch=700, end_ms=START + N_WORSE * RATE_MS + 60_000)
    rows = pipeline.rows["version_comparison"]
    client = connect(settings)
    db = settings.clickhouse.database
    try:
        migrate(client, settings)
        writer = ClickHouseRowWriter(client, db, close_client=False)
        for _ in range(2):  # a restarted stage re-produces identical rows
            writer.write("version_comparison", rows)
            writer.flush()
        table = f"`{db}`.version_comparison"
        assert client.query(f"SELECT count() FROM {table}").result_rows == [(2 * len(rows),)]
        assert client.query(f"SELECT count() FROM {table} FINAL").result_rows == [(len(rows),)]
        decided = client.query(
            "SELECT challenger_version, toUnixTimestamp64Milli(decided_at), decision, n_tested"
            f" FROM {table} FINAL WHERE segment = '' AND decided_now = 1").result_rows
        [row] = [r for r in rows if r["segment"] == "" and r["decided_now"]]
        assert decided == [("2", row["decided_at"], "challenger_worse", row["n_tested"])]
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{db}`")
        client.close()


def test_champions_compare_every_other_version_of_a_regressor() -> None:
    """``champions``: each version with outcomes against the model's champion; absolute errors
    (MAE) for a regressor, a much worse challenger decided, an equal one not."""
    settings = _settings().model_copy(update={"comparison": ComparisonSettings(champions={"m": "1"})})
    rng = random.Random(3)
    events = []
    n = 3_000
    spread = {"1": 1.0, "2": 1.0, "3": 3.0}  # version 3 errs three times as much
    for i in range(n):
        t = START + i * RATE_MS
        version = "123"[i % 3]
        truth = rng.gauss(10.0, 2.0)
        pid = f"q{i}"
        prediction = {"prediction_id": pid, "model_id": "m", "model_version": version, "timestamp": t,
                      "features": {"x": truth}, "prediction": truth + rng.gauss(0.0, spread[version])}
        label = {"prediction_id": pid, "label": truth, "timestamp": t + LABEL_DELAY_MS, "model_id": "m"}
        events += [Event("predictions", pid.encode(), orjson.dumps(prediction), t),
                   Event("labels", pid.encode(), orjson.dumps(label), t + LABEL_DELAY_MS)]
    stream = logged_records(sorted(events, key=lambda e: e.timestamp_ms), settings)
    pipeline = _run(settings, stream, batch=500, end_ms=START + n * RATE_MS + 60_000)
    overall = [r for r in pipeline.rows["version_comparison"] if r["segment"] == ""]
    assert {(r["champion_version"], r["challenger_version"]) for r in overall} == {("1", "2"), ("1", "3")}
    assert {(r["metric"], r["mode"], r["paired"]) for r in overall} == {("mae", "canary", 0)}
    last = {r["challenger_version"]: r for r in sorted(overall, key=lambda r: r["time"])}
    assert last["3"]["decision"] == "challenger_worse" and last["3"]["cumulative_difference"] < -1
    assert last["2"]["decision"] == ""
    full = [r for r in overall if r["challenger_version"] == "3" and r["n_challenger"] >= 150]
    assert len(full) >= 4
    for row in full:  # E|N(0, s)| = 0.8 s
        assert row["challenger_value"] == pytest.approx(3.0 * 0.8, rel=0.2)
        assert row["champion_value"] == pytest.approx(0.8, rel=0.2)
    assert _triggers(pipeline) == []  # comparison.triggers is off by default


def test_a_reversal_is_a_decision_of_its_own() -> None:
    """Worse first, better from half-way: two decisions, two triggers (roll back, then promote);
    the standing verdict re-reached in between decides nothing anew."""
    n = 12_000  # twenty intervals
    settings = _settings()
    events = _events({"1": 0.10, "2": 0.30}, n, seed=4, later={"1": 0.30, "2": 0.10})
    stream = logged_records(events, settings)
    pipeline = _run(settings, stream, batch=800, end_ms=START + n * RATE_MS + 60_000)
    overall = sorted((r for r in pipeline.rows["version_comparison"] if r["segment"] == ""),
                     key=lambda r: r["time"])
    decided = [(r["decision"], r["time"] < START + n * RATE_MS // 2) for r in overall if r["decided_now"]]
    assert decided == [("challenger_worse", True), ("challenger_better", False)]
    assert overall[-1]["decision"] == "challenger_better"
    recommendations = [t["evidence"]["recommendation"] for t in _triggers(pipeline)]
    assert recommendations == ["roll_back", "promote"]
    ids = [t["trigger_id"] for t in _triggers(pipeline)]
    assert len(set(ids)) == 2


def test_a_reconfigured_pairing_starts_a_fresh_test() -> None:
    """A restored stage whose shadow pair lost its request separator tests unpaired from then on."""
    book = VersionComparisons()
    book.configure(ComparisonSettings(pairs=[ComparisonPair(model_id="m", champion="1", challenger="2",
                                                            mode="shadow")], request_separator="#"), 60_000)
    policy = RetrainPolicy(TriggerSettings(), "abc")
    paired = {"1": [("r1#1", "", 1.0), ("r2#1", "", 0.0)], "2": [("r1#2", "", 0.0)]}
    [row], _ = book.close_interval("", "m", 0, "accuracy", paired, policy)
    assert (row["paired"], row["n_champion"], row["n_unpaired"]) == (1, 1, 1)
    restored = pickle.loads(pickle.dumps(book))
    restored.configure(ComparisonSettings(pairs=book.settings.pairs), 60_000)
    [row], _ = restored.close_interval("", "m", 60_000, "accuracy", paired, policy)
    assert (row["paired"], row["n_champion"], row["n_challenger"], row["n_tested"]) == (0, 2, 1, 1)
