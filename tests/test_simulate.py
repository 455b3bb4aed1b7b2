"""Simulator: determinism, drift ground truth, label delays, malformed events, outputs."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from driftline.cli.main import main
from driftline.config import Settings
from driftline.kafka.clients import aiokafka_common
from driftline.replay.times import format_time
from driftline.schemas.events import LabelEvent, PredictionEvent
from driftline.simulate import (
    ConceptDrift,
    CovariateDrift,
    LabelDelay,
    ModelSpec,
    ProduceStats,
    Scenario,
    generate,
    ground_truth,
    produce,
)

START = 1767225600000  # 2026-01-01T00:00:00Z
DATA = Path("/work/shared/data")


def drifting(**overrides: Any) -> Scenario:
    spec = ModelSpec(
        model_id="churn", challenger=True,
        covariate_drift=[CovariateDrift(feature="x1", at_s=300, magnitude=1.5),
                         CovariateDrift(feature="c0", at_s=300, magnitude=0.5)],
        concept_drift=ConceptDrift(at_s=300, magnitude=0.4),
    )
    fields: dict[str, Any] = {"seed": 7, "start": START, "duration_s": 600, "rate": 20, "models": [spec]}
    return Scenario(**{**fields, **overrides})


def predictions(events: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(e.value) for e in events if e.kind == "predictions"]


def test_same_seed_same_bytes_and_event_time_order() -> None:
    scenario = drifting(malformed_rate=0.05)
    first, second = list(generate(scenario)), list(generate(scenario))
    assert first == second
    assert list(generate(drifting(seed=8)))[:10] != first[:10]
    times = [e.timestamp_ms for e in first]
    assert times == sorted(times)
    assert {e.kind for e in first} == {"predictions", "labels", "malformed-predictions"}


def test_valid_events_validate_and_champion_challenger_share_requests() -> None:
    events = list(generate(drifting()))
    preds = predictions(events)
    for doc in preds[:200]:
        PredictionEvent.model_validate(doc)
    for e in events[:2000]:
        if e.kind == "labels":
            assert LabelEvent.model_validate_json(e.value).prediction_id.encode() == e.key
    v1, v2 = preds[0], preds[1]
    assert (v1["prediction_id"], v2["prediction_id"]) == ("churn-7-0-v1", "churn-7-0-v2")
    assert v1["features"] == v2["features"] and (v1["model_version"], v2["model_version"]) == ("1", "2")


def test_covariate_drift_moves_the_feature_as_the_ground_truth_says() -> None:
    scenario = drifting()
    truth = ground_truth(scenario)
    drift = {d["feature"]: d for d in truth["models"]["churn"]["covariate_drift"]}
    x1 = drift["x1"]
    assert x1["start_ms"] == START + 300_000 and x1["kind"] == "numeric"
    preds = [p for p in predictions(list(generate(scenario))) if p["model_version"] == "1"]
    before = [p["features"]["x1"] for p in preds if p["timestamp"] < x1["start_ms"]]
    after = [p["features"]["x1"] for p in preds if p["timestamp"] >= x1["start_ms"]]
    shift = statistics.fmean(after) - statistics.fmean(before)
    assert shift == pytest.approx(x1["expected_mean_after"] - x1["reference_mean"], rel=0.15)
    assert statistics.fmean(before) == pytest.approx(x1["reference_mean"], abs=0.1 * x1["reference_std"])
    # the categorical drift re-draws half the values as the rarest category
    rare = next(iter(drift["c0"]["redrawn_from"]))
    rare_before = sum(p["features"]["c0"] == rare for p in preds if p["timestamp"] < x1["start_ms"])
    rare_after = sum(p["features"]["c0"] == rare for p in preds if p["timestamp"] >= x1["start_ms"])
    share_before, share_after = rare_before / len(before), rare_after / len(after)
    assert share_after > share_before + 0.4


def test_concept_drift_hurts_the_champion_not_the_challenger() -> None:
    scenario = drifting()
    truth = ground_truth(scenario)["models"]["churn"]
    events = list(generate(scenario))
    labels = {orjson.loads(e.value)["prediction_id"]: orjson.loads(e.value)["label"]
              for e in events if e.kind == "labels"}
    at = truth["concept_drift"]["start_ms"]
    hits: dict[tuple[str, bool], list[bool]] = {}
    for p in predictions(events):
        hits.setdefault((p["model_version"], p["timestamp"] >= at), []).append(
            p["prediction"]["label"] == labels[p["prediction_id"]])
    acc = {k: sum(v) / len(v) for k, v in hits.items()}
    expected = truth["expected_accuracy"]
    assert acc[("1", False)] == pytest.approx(expected["1"]["before"], abs=0.03)
    assert acc[("1", True)] < acc[("1", False)] - 0.15
    assert acc[("2", True)] == pytest.approx(expected["2"]["after"], abs=0.03)
    assert acc[("2", True)] > acc[("1", True)]


def test_labels_are_delayed_per_the_distribution_and_coverage() -> None:
    scenario = drifting(label_delay=LabelDelay(median_s=30, sigma=0.8), label_coverage=0.6,
                        models=[ModelSpec(model_id="m")])
    events = list(generate(scenario))
    sent = {p["prediction_id"]: p["timestamp"] for p in predictions(events)}
    delays = [(orjson.loads(e.value)["timestamp"] - sent[e.key.decode()]) / 1000
              for e in events if e.kind == "labels"]
    assert len(delays) / len(sent) == pytest.approx(0.6, abs=0.03)
    assert statistics.median(delays) == pytest.approx(30, rel=0.1)
    assert min(delays) > 0
    # a label is emitted only once event time has reached its timestamp
    clock = 0
    for e in events:
        assert e.timestamp_ms >= clock
        clock = e.timestamp_ms


def test_malformed_rate_and_every_kind_is_invalid() -> None:
    events = list(generate(drifting(malformed_rate=0.1, models=[ModelSpec(model_id="m")])))
    topic = [e for e in events if e.kind != "labels"]
    bad = [e for e in topic if e.kind == "malformed-predictions"]
    assert len(bad) / len(topic) == pytest.approx(0.1, abs=0.015)
    kinds: Counter[str] = Counter()
    for e in bad:
        with pytest.raises(ValidationError) as err:
            PredictionEvent.model_validate_json(e.value)
        kinds[err.value.errors()[0]["type"]] += 1
    assert len(kinds) >= 3  # json_invalid, literal_error (schema_version), finite/timestamp/type errors


def test_river_and_csv_sources() -> None:
    models = [ModelSpec(model_id="agr", source="agrawal"), ModelSpec(model_id="sea", source="sea"),
              ModelSpec(model_id="elec", source="csv", csv_path=DATA / "elec2.csv", label_column="class",
                        covariate_drift=[CovariateDrift(feature="nswdemand", at_s=60)])]
    scenario = Scenario(seed=1, start=START, duration_s=120, rate=30, models=models)
    preds = predictions(list(generate(scenario)))
    assert {p["model_id"] for p in preds} == {"agr", "sea", "elec"}
    elec = next(p for p in preds if p["model_id"] == "elec")
    assert "nswdemand" in elec["features"] and elec["prediction"]["label"] in ("UP", "DOWN")
    truth = ground_truth(scenario)["models"]
    assert truth["agr"]["features"]["salary"] == "numeric" and truth["elec"]["classes"] == ["DOWN", "UP"]


def test_scenario_file_and_cli_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "seed: 3\nstart: '2026-01-01T00:00:00Z'\nduration_s: 120\nrate: 10\n"
        "models:\n  - model_id: a\n    covariate_drift: [{feature: x0, at_s: 60}]\n  - model_id: b\n"
    )
    assert Scenario.from_file(path).start == START
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", str(path), "--challenger", "--malformed-rate", "0.05",
                 "--out", str(out)]) == 0
    truth = orjson.loads(capsys.readouterr().out)
    assert truth["models"]["a"]["challenger"] == "2"
    assert truth["models"]["a"]["covariate_drift"][0]["feature"] == "x0"
    lines = (out / "predictions.jsonl").read_bytes().splitlines()
    assert len((out / "labels.jsonl").read_bytes().splitlines()) == 2400
    assert 2400 < len(lines) < 2700
    assert orjson.loads((out / "ground_truth.json").read_bytes()) == truth
    assert main(["simulate", "--duration", "10", "--drift-features", "nope", "--drift-at", "1",
                 "--out", str(out)]) == 2


@pytest.mark.integration
def test_produce_to_the_broker(settings: Settings) -> None:
    scenario = drifting(duration_s=100, malformed_rate=0.05)
    counts = asyncio.run(produce(scenario, settings))
    expected = Counter(e.kind for e in generate(scenario))
    assert counts == dict(expected)
    on_predictions = expected["predictions"] + expected["malformed-predictions"]
    records = asyncio.run(consume(settings, settings.topics.predictions, on_predictions))
    assert len(records) == on_predictions
    assert all(r.timestamp >= START for r in records)  # record time = simulated event time
    labels = asyncio.run(consume(settings, settings.topics.labels, expected["labels"]))
    assert len(labels) == expected["labels"]


async def consume(settings: Settings, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, **aiokafka_common(settings), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    deadline = time.monotonic() + 20
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


def test_default_start_never_lies_in_the_future() -> None:
    now = time.time_ns() // 1_000_000
    backfill = Scenario(duration_s=600).resolved()  # full speed: the span ending now
    assert now - 60_000 - 600_000 <= backfill.start_ms() <= now - 600_000
    paced = Scenario(duration_s=600, speed=10.0).resolved()  # catches up with the wall clock at its end
    assert paced.start_ms() + 600_000 - 600_000 / 10 <= now
    assert Scenario(duration_s=600, speed=0.5).resolved().start_ms() <= now  # slower than the clock
    events = list(generate(backfill.model_copy(update={"label_delay": LabelDelay(median_s=1, max_s=2)})))
    assert max(e.timestamp_ms for e in events if e.kind != "labels") < now


def test_ids_are_namespaced_by_seed_or_by_an_explicit_namespace() -> None:
    def ids(scenario: Scenario) -> set[str]:
        return {orjson.loads(e.value)["prediction_id"] for e in generate(scenario) if e.kind == "predictions"}

    base = {"start": START, "duration_s": 5, "rate": 10}
    assert ids(Scenario(seed=3, **base)) == ids(Scenario(seed=3, **base))
    assert next(iter(ids(Scenario(seed=3, **base)))).startswith("model-a-3-")
    assert not ids(Scenario(id_namespace="run1", **base)) & ids(Scenario(id_namespace="run2", **base))
    with pytest.raises(ValidationError):
        Scenario(id_namespace="a b")


def test_cli_without_seed_gives_each_run_its_own_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(name: str, *flags: str) -> set[str]:
        out = str(tmp_path / name)
        assert main(["simulate", *flags, "--duration", "5", "--rate", "10", "--out", out]) == 0
        assert "prediction ids" in capsys.readouterr().err
        lines = (tmp_path / name / "predictions.jsonl").read_bytes().splitlines()
        return {orjson.loads(line)["prediction_id"] for line in lines}

    one, two = run("one"), run("two")
    assert len(one) == len(two) == 50 and not one & two
    seeded = run("s1", "--seed", "4")
    assert seeded == run("s2", "--seed", "4") and all(pid.startswith("model-a-4-") for pid in seeded)


def test_cli_names_the_seed_and_the_flags_that_repeat_a_run_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --seed the traffic is seed 0's and the ids a fresh namespace's: the ground truth's
    "seed" alone did not repeat the run; its seed, start and id_namespace do."""
    options = ["simulate", "--duration", "30", "--rate", "10", "--drift-features", "x1", "--drift-at", "10"]
    assert main([*options, "--out", str(tmp_path / "first")]) == 0
    out, err = capsys.readouterr()
    truth = orjson.loads(out)
    namespace, start = truth["id_namespace"], format_time(truth["start_ms"])
    assert truth["seed"] == 0 and namespace != "0"
    repeat = f"--seed 0 --start {start} --id-namespace {namespace}"
    assert f"driftline simulate: seed 0; the same options with {repeat} repeat this run" in err
    assert main([*options, *repeat.split(), "--out", str(tmp_path / "again")]) == 0
    assert orjson.loads(capsys.readouterr().out) == truth
    first, again = tmp_path / "first", tmp_path / "again"
    assert (first / "predictions.jsonl").read_bytes() == (again / "predictions.jsonl").read_bytes()
    # labels due by now: the second run, later, may hold a few more at the end
    labels = (first / "labels.jsonl").read_bytes()
    assert labels and (again / "labels.jsonl").read_bytes().startswith(labels)


def test_produce_refuses_a_full_speed_span_in_the_future() -> None:
    future = Scenario(start=time.time_ns() // 1_000_000 + 3_600_000, duration_s=10)
    with pytest.raises(ValueError, match="ends in the future"):
        asyncio.run(produce(future, Settings()))


@pytest.mark.integration
def test_full_speed_back_fill_writes_no_event_time_in_the_future(settings: Settings) -> None:
    scenario = Scenario(duration_s=60, rate=20, label_delay=LabelDelay(median_s=40, max_s=120))
    stats = ProduceStats()
    counts = asyncio.run(produce(scenario, settings, stats=stats))
    now = time.time_ns() // 1_000_000
    assert stats.first_ms is not None and stats.last_ms is not None and stats.last_ms <= now
    assert stats.labels_not_due > 0 and counts["labels"] + stats.labels_not_due == counts["predictions"]
    for topic in (settings.topics.predictions, settings.topics.labels):
        records = asyncio.run(consume(settings, topic, 1))
        values = [orjson.loads(r.value) for r in records]
        assert values and all(v["timestamp"] <= now for v in values if isinstance(v.get("timestamp"), int))


def test_cli_files_hold_no_event_time_in_the_future(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--duration", "60", "--rate", "5", "--out", str(tmp_path)]) == 0
    now = time.time_ns() // 1_000_000
    err = capsys.readouterr().err
    assert "event times " in err and "labels not due yet left out" in err
    lines = [*(tmp_path / "predictions.jsonl").read_bytes().splitlines(),
             *(tmp_path / "labels.jsonl").read_bytes().splitlines()]
    assert lines and all(orjson.loads(line)["timestamp"] <= now for line in lines)
