"""A JSON integer beyond a float's range is a valid feature value (the schema bounds no integer):
it must reach every stage-1 consumer of features (windows, the join, the sequential detectors,
the multivariate state) without an OverflowError — a shard raising on one record would fail on it
at every restart (a poison pill) — and count as the wild value it is."""

from __future__ import annotations

import dataclasses

import orjson

from driftline.config import Settings
from driftline.demo.training import training_profiles
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import LabelDelay, ModelSpec

START = 1_767_225_600_000


def test_an_integer_beyond_float_range_is_a_wild_value_not_a_crash() -> None:
    settings = Settings(windows={"sizes_s": [300], "allowed_lateness_s": 30, "metrics_interval_s": 300},
                        join={"label_horizon_s": 600})
    scenario = Scenario(seed=5, start=START, duration_s=900, rate=10,
                        models=[ModelSpec(model_id="m", n_numeric=4, n_categorical=1, accuracy=0.9)],
                        label_delay=LabelDelay(median_s=20, max_s=60))
    profiles = [p.model_dump_json().encode()
                for p in training_profiles(scenario, settings.drift.bins, settings.drift.top_k,
                                           effective_from_ms=0)]
    assert orjson.loads(profiles[0]).get("multivariate"), "the profile should carry the section"
    records = logged_records(generate(scenario), settings)
    at = next(i for i, r in enumerate(records)
              if r.topic == settings.topics.predictions and i > len(records) // 2)
    event = orjson.loads(records[at].value or b"")
    numeric = next(k for k, v in event["features"].items() if isinstance(v, float))
    huge = (orjson.dumps(event).decode()
            .replace(f'"{numeric}":{orjson.dumps(event["features"][numeric]).decode()}',
                     f'"{numeric}":1{"0" * 400}'))
    records[at] = dataclasses.replace(records[at], value=huge.encode())
    pipeline = InProcessPipeline(settings, profiles=profiles)
    for i in range(0, len(records), 500):
        pipeline.feed(records[i : i + 500])
    pipeline.finish(START + 3_600_000)
    assert not pipeline.rows.get("dead_letters"), "a valid event was dead-lettered"
    windows = pipeline.rows["feature_windows"]
    mine = [r for r in windows if r["feature"] == numeric and r["segment"] == ""]
    counted = sum(int(r["count"]) for r in mine)  # count: every event of the window
    assert counted == sum(r.topic == settings.topics.predictions for r in records)
    assert sum(int(r["invalid"]) for r in mine) == 1  # the wild value, not a number to average
    assert pipeline.rows.get("outlier_rate"), "the multivariate state saw the events"
