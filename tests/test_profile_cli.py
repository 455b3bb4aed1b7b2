"""`driftline profile build|show`: a training table becomes a published and stored reference profile."""

from __future__ import annotations

import asyncio
import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pyarrow import parquet
from rich.console import Console

from driftline.cli.main import main
from driftline.cli.profile import select_columns, summary_table
from driftline.config import Settings
from driftline.kafka.clients import aiokafka_consumer_kwargs
from driftline.kafka.offsets import end_offsets
from driftline.operators.profile import ReferenceProfile, build_profile
from driftline.operators.seasonal import DAILY, cycle_strengths, fit_season, strong_cycles
from driftline.pipeline.to_rows import RowMapper
from driftline.store.client import connect
from driftline.store.migrate import migrate
from driftline.store.owner import owner_path

ELEC2 = Path("/work/shared/data/elec2.csv")


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _training_rows(n: int = 200) -> list[dict[str, Any]]:
    # Deterministic: x spreads over 0..99, the plan cycles a/b/c, the model is right 3 times in 4.
    rows = []
    for i in range(n):
        label = "yes" if i % 2 else "no"
        pred = label if i % 4 else ("no" if label == "yes" else "yes")
        rows.append({"x": (i * 37) % 100 + 0.5, "plan": "abc"[i % 3], "churned": label, "pred": pred})
    return rows


def _use_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the CLI (settings from DRIFTLINE_* env) see the fixture's settings."""
    for key, value in {"HOME": settings.home, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                       "CLICKHOUSE_URL": settings.clickhouse.url,
                       "CLICKHOUSE_DATABASE": settings.clickhouse.database}.items():
        monkeypatch.setenv(f"DRIFTLINE_{key}", str(value))
    for name, topic in settings.topics.model_dump().items():
        monkeypatch.setenv(f"DRIFTLINE_TOPICS_{name.upper()}", str(topic))


async def _read_topic(settings: Settings, topic: str) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata partitions_for_topic reads
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await end_offsets(consumer, tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[tuple[bytes, bytes]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                records.extend((r.key, r.value) for r in batch if r.offset < ends[tp])
        return records
    finally:
        await consumer.stop()


@pytest.mark.integration
def test_build_publishes_and_stores_then_show(settings: Settings, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    client = connect(settings)
    migrate(client, settings)
    _use_settings(settings, monkeypatch)
    rows = _training_rows()
    data_csv = _write_csv(tmp_path / "train.csv", rows)
    data_parquet = tmp_path / "train.parquet"
    parquet.write_table(pa.Table.from_pylist(rows), data_parquet)

    out = tmp_path / "p1.json"
    assert main(["profile", "build", "--model", "churn", "--version", "3", "--data", str(data_csv),
                 "--label-column", "churned", "--prediction-column", "pred", "--bins", "4",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    v3 = ReferenceProfile.model_validate_json(out.read_bytes())
    assert v3.profile_id in printed and "accuracy=0.75" in printed and "published to" in printed
    assert sorted(v3.features) == ["plan", "x"] and v3.task == "classification"
    assert v3.features["x"].kind == "numeric" and len(v3.features["x"].ref_counts) == 4
    assert v3.features["plan"].categories == ["a", "b", "c"] and v3.baseline == {"accuracy": 0.75}
    assert v3.prediction is not None and v3.prediction.categories == ["yes", "no"]
    assert v3.prediction.ref_counts == [150, 50, 0]

    assert main(["profile", "build", "--model", "churn", "--version", "4", "--data", str(data_parquet),
                 "--feature", "x", "--effective-from", "2026-01-01T00:00:00Z", "--out",
                 str(tmp_path / "p2.json")]) == 0
    capsys.readouterr()
    v4 = ReferenceProfile.model_validate_json((tmp_path / "p2.json").read_bytes())
    assert sorted(v4.features) == ["x"] and v4.prediction is None and v4.baseline == {}
    assert v4.effective_from_ms == 1767225600000
    assert len(v4.features["x"].ref_counts) == settings.drift.bins  # the default: 100 distinct values

    records = asyncio.run(_read_topic(settings, settings.topics.profiles))
    published = [(k, ReferenceProfile.model_validate_json(v)) for k, v in records]
    assert published == [(b"churn", v3), (b"churn", v4)]
    stored = client.query("SELECT model_version, profile_id, source, toUnixTimestamp64Milli(effective_from), "
                          "profile FROM reference_profiles FINAL ORDER BY model_version").result_rows
    assert [tuple(r[:4]) for r in stored] == [("3", v3.profile_id, "training", 0),
                                              ("4", v4.profile_id, "training", 1767225600000)]
    assert ReferenceProfile.model_validate_json(stored[0][4]) == v3
    client.close()

    assert main(["profile", "show", "--model", "churn", "--version", "3", "--json"]) == 0
    assert ReferenceProfile.model_validate_json(capsys.readouterr().out) == v3
    assert main(["profile", "show", "--model", "churn"]) == 0
    shown = capsys.readouterr().out
    assert v4.profile_id in shown and "version 4" in shown
    assert main(["profile", "show", "--model", "nobody"]) == 1
    assert "no reference profile of model 'nobody'" in capsys.readouterr().err


@pytest.mark.integration
def test_build_goes_through_the_sink_while_another_process_owns_the_engine(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _use_settings(settings, monkeypatch)
    # A live process other than this one (our parent) is recorded as the embedded engine's owner.
    owner_path(settings.home).parent.mkdir(parents=True)
    owner_path(settings.home).write_bytes(orjson.dumps({"pid": os.getppid(), "query_url": "http://127.0.0.1:9/q"}))
    data = _write_csv(tmp_path / "train.csv", _training_rows(40))
    out = tmp_path / "p.json"
    assert main(["profile", "build", "--model", "churn", "--version", "5", "--data", str(data),
                 "--label-column", "churned", "--out", str(out)]) == 0
    assert f"through {settings.topics.sink}" in capsys.readouterr().out
    payload = out.read_bytes().rstrip(b"\n")
    [(key, message)] = asyncio.run(_read_topic(settings, settings.topics.sink))
    mapper = RowMapper(settings.topics)
    assert key == b"reference_profiles"
    assert mapper.rows(settings.topics.sink, message) == mapper.rows(settings.topics.profiles, payload)
    [(_, published)] = asyncio.run(_read_topic(settings, settings.topics.profiles))
    assert published == payload


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--label-column", "nope"], "column(s) 'nope' not in"),
        (["--feature", "x", "ghost"], "column(s) 'ghost' not in"),
        (["--prediction-column", "when"], "column 'when' of"),
    ],
)
def test_bad_column_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          extra: list[str], message: str) -> None:
    rows = [{**r, "when": "2026-01-01T00:00:00Z"} for r in _training_rows(20)]
    data = _write_csv(tmp_path / "train.csv", rows)
    assert main(["profile", "build", "--model", "m", "--version", "1", "--data", str(data), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("driftline: ")
    assert message in captured.err


def test_missing_empty_or_unreadable_data_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header_only = tmp_path / "empty.csv"
    header_only.write_text("x,plan\n")
    nulls = tmp_path / "nulls.csv"
    nulls.write_text("x,y\n,1\n,0\n")
    cases = {tmp_path / "absent.csv": "no such file", header_only: "has no rows",
             tmp_path / "train.txt": "expected a .csv or .parquet file",
             nulls: "no usable values"}
    (tmp_path / "train.txt").write_text("x\n1\n")
    for path, message in cases.items():
        args = ["profile", "build", "--model", "m", "--version", "1", "--data", str(path), "--no-publish"]
        if path == nulls:
            args += ["--label-column", "y"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_select_columns_skips_non_wire_columns_unless_named() -> None:
    table: dict[str, list[Any]] = {"x": [1.0, None], "day": [None, None], "raw": [b"a", None],
                                   "y": ["a", "b"]}
    columns, skipped = select_columns(table, label_column="y", prediction_column=None, features=None,
                                      source="t")
    assert list(columns) == ["x", "day", "y"] and skipped == ["raw"]
    columns, skipped = select_columns(table, label_column=None, prediction_column=None, features=["x", "x"],
                                      source="t")
    assert list(columns) == ["x"] and skipped == []


@pytest.mark.skipif(not ELEC2.is_file(), reason=f"shared dataset {ELEC2} not present")
def test_elec2_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "elec2.json"
    assert main(["profile", "build", "--model", "elec2", "--version", "1", "--data", str(ELEC2),
                 "--label-column", "class", "--no-publish", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    profile = ReferenceProfile.model_validate_json(out.read_bytes())
    assert profile.profile_id in printed and "not published" in printed
    assert sorted(profile.features) == sorted(["date", "day", "period", "nswprice", "nswdemand", "vicprice",
                                               "vicdemand", "transfer"])
    assert profile.task == "classification" and profile.prediction is None and profile.baseline == {}
    assert all(f.kind == "numeric" and f.n == 45_312 and sum(f.ref_counts) == 45_312
               for f in profile.features.values())
    # Rows 0..17,423 hold the imputed constant vicprice 0.003467: one bin takes at least those.
    assert max(profile.features["vicprice"].ref_counts) >= 17_424
    assert profile.features["day"].min == 1 and profile.features["day"].max == 7
    # Deterministic: the same data gives the same content id.
    assert main(["profile", "build", "--model", "elec2", "--version", "1", "--data", str(ELEC2),
                 "--label-column", "class", "--no-publish"]) == 0
    assert profile.profile_id in capsys.readouterr().out


def test_build_checks_its_input_before_the_broker_and_names_a_missing_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from driftline.local.broker import free_port

    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS", address)
    data = _write_csv(tmp_path / "train.csv", _training_rows(20))
    assert main(["profile", "build", "--model", "m", "--version", "1", "--data", str(data),
                 "--label-column", "nope"]) == 2  # the input error, not the missing broker
    capsys.readouterr()
    assert main(["profile", "build", "--model", "m", "--version", "1", "--data", str(data),
                 "--prediction-column", "pred"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"driftline profile: no Kafka broker reachable at {address}"), err


def test_confidence_scores_of_a_multiclass_model_calibrate_p_correct(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from driftline.operators.model_watch import MultivariateReference

    rows = []
    for i in range(900):  # three classes; the model is right more often the more confident it is
        confidence = 0.4 + 0.6 * ((i * 7) % 100) / 100
        label = "abc"[i % 3]
        right = (i * 13) % 100 < 100 * confidence
        rows.append({"x": (i * 37) % 100 + 0.5, "w": (i * 11) % 50 * 0.1, "kind": label,
                     "pred": label if right else "abc"[(i + 1) % 3], "conf": round(confidence, 3)})
    data = _write_csv(tmp_path / "train.csv", rows)
    args = ["profile", "build", "--model", "m", "--version", "1", "--data", str(data),
            "--label-column", "kind", "--score-column", "conf", "--score-kind", "confidence", "--no-publish"]
    assert main(args) == 2  # the calibration needs the predictions
    assert "--prediction-column" in capsys.readouterr().err
    out = tmp_path / "profile.json"
    assert main([*args, "--prediction-column", "pred", "--out", str(out)]) == 0
    profile = ReferenceProfile.model_validate_json(out.read_bytes())
    assert sorted(profile.features) == ["w", "x"]  # the score is no feature
    assert profile.multivariate is not None
    assert profile.multivariate["score_kind"] == "confidence"
    reference = MultivariateReference.from_section(profile.multivariate)
    assert reference.score_kind == "confidence" and reference.estimator is not None
    low, high = reference.estimator.calibrated([0.45, 0.95]).tolist()
    assert 0.3 < low < 0.6 < 0.85 < high  # P(correct) rises with the confidence


def test_summary_of_a_seasonal_profile_says_windows_meet_their_hours_reference() -> None:
    """`profile show` (and build) of a seasonal profile: a seasonal feature's row shows the pooled
    bins, so it says so and that a window is compared with its hour's reference; the caption gives
    the season and each feature's cycle strength. A profile built without a season over a strong
    cycle names it (the build's hint, kept in ``detected_cycle``)."""
    hour_ms = 3_600_000
    times = np.arange(0, 2 * 24 * hour_ms, 60_000) + 1_767_225_600_000
    rng = np.random.default_rng(0)
    columns = {"load": 10 + 3 * np.sin(2 * np.pi * times / (24 * hour_ms)) + rng.normal(size=times.size),
               "plan": ["abc"[i % 3] for i in range(times.size)]}
    common: dict[str, Any] = dict(label_column=None, prediction_column=None, bins=10, top_k=10,
                                  created_at_ms=0)

    def shown(profile: ReferenceProfile) -> str:
        console = Console(record=True, width=400)
        console.print(summary_table(profile))
        return " ".join(console.export_text().split())

    season = fit_season(columns, times, DAILY, bins=10)
    seasonal = shown(build_profile("m", "1", columns, season=season, **common))
    assert "season daily (86400 s) in 24 slots of 3600 s; the cycle of load (82% of its variance)" in seasonal
    assert "│ load │ numeric, seasonal │ 10 │ 2880 │ pooled mean 9.9" in seasonal
    assert "compared with its hour's reference" in seasonal
    assert "│ plan │ categorical │" in seasonal  # a categorical feature keeps its pooled reference

    strong = strong_cycles(cycle_strengths(columns, times, DAILY))
    hinted = shown(build_profile("m", "1", columns, detected_cycle=strong, **common))
    assert "strong daily cycle in load (82% of its variance), yet no season" in hinted
    assert "--season daily" in hinted and "numeric, seasonal" not in hinted


def test_a_column_named_like_an_output_is_profiled_with_a_note(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A training table's label or prediction column left unnamed is profiled as a feature, as
    asked, and stderr says which option would make it the output instead."""
    rows = [{"x": r["x"], "plan": r["plan"], "Label": r["churned"], "pred": r["pred"]}
            for r in _training_rows()]
    data = _write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "profile.jsonl"
    base = ["profile", "build", "--model", "m", "--version", "1", "--data", str(data), "--no-publish",
            "--out", str(out)]
    assert main(base) == 0
    err = capsys.readouterr().err
    assert "column 'Label' is profiled as a feature; if it is the model's ground truth, pass " \
           "--label-column Label" in err, err
    assert "column 'pred' is profiled as a feature; if it is the model's output, pass " \
           "--prediction-column pred" in err, err
    assert {"Label", "pred"} <= set(ReferenceProfile.model_validate_json(out.read_text()).features)
    assert main([*base, "--label-column", "Label", "--prediction-column", "pred"]) == 0
    assert "is profiled as a feature" not in capsys.readouterr().err



def test_a_sparse_column_is_profiled_with_a_note_that_it_gets_no_sequential_monitor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A feature with one value in the training table builds (its windows get drift scores), and
    stderr says it gets no sequential monitor and why; a feature with values says nothing."""
    rows = [{"x": r["x"], "rare": 2.5 if i == 0 else "", "pred": r["pred"]}
            for i, r in enumerate(_training_rows())]
    data = _write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "profile.jsonl"
    assert main(["profile", "build", "--model", "m", "--version", "1", "--data", str(data), "--no-publish",
                 "--prediction-column", "pred", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert ("feature 'rare' gets no sequential monitor (a numeric reference needs at least 2 values)"
            in err), err
    assert "feature 'x'" not in err
    assert ReferenceProfile.model_validate_json(out.read_text()).features["rare"].n == 1


def test_an_unnamed_index_column_is_skipped_with_a_note(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A table written with its index (pandas' to_csv) has a first column named "": no event can
    carry a feature so named (the schema's names have 1 to 256 characters), so every window found
    it missing. profile build leaves it out and says why."""
    data = tmp_path / "train.csv"
    lines = [f"{i},{r['x']},{r['pred']}\n" for i, r in enumerate(_training_rows())]
    data.write_text(",x,pred\n" + "".join(lines))
    out = tmp_path / "profile.jsonl"
    assert main(["profile", "build", "--model", "m", "--version", "1", "--data", str(data), "--no-publish",
                 "--prediction-column", "pred", "--out", str(out)]) == 0
    assert "skipped column(s) '': a feature name has 1 to 256 characters" in capsys.readouterr().err
    assert set(ReferenceProfile.model_validate_json(out.read_text()).features) == {"x"}
