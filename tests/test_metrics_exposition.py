"""/metrics label values survive any model id: escaped as the text exposition format requires and read
back intact by prometheus_client's own parser (what a Prometheus scrape does)."""

from __future__ import annotations

import gc

from prometheus_client.parser import text_string_to_metric_families

from driftline.config import Settings
from driftline.pipeline.gauges import Gauge
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import LabelDelay, ModelSpec
from driftline.streams.metrics import collector_families, processor_families, render_families

START = 1_767_225_600_000
MODEL_ID = 'churn "eu"\\west\nbeta'  # a double quote, a backslash and a line feed
VERSION = '3 "rc"'


def _parsed(text: bytes) -> dict[str, list[dict[str, str]]]:
    """Metric family name -> the label sets of its samples, as a scraper reads them."""
    return {family.name: [dict(sample.labels) for sample in family.samples]
            for family in text_string_to_metric_families(text.decode())}


def test_any_label_value_round_trips_through_a_prometheus_parser() -> None:
    for value in (MODEL_ID, "\\", '"', "\n", '\\"', "\\n", "plain", "ünïcode ✓", "a,b=c}{"):
        gauge = Gauge("model_accuracy_ew", 0.5, {"model_id": value, "model_version": VERSION})
        text = render_families(processor_families([("model", 0, [gauge])]))
        samples = _parsed(text)["driftline_stage_model_accuracy_ew"]
        assert samples == [{"stage": "model", "shard": "0", "model_id": value, "model_version": VERSION}]


def test_pipeline_gauges_of_an_odd_model_id_reach_the_scraper_intact() -> None:
    settings = Settings(windows={"sizes_s": [300], "allowed_lateness_s": 30, "metrics_interval_s": 300},
                        join={"label_horizon_s": 600})
    scenario = Scenario(seed=5, start=START, duration_s=1800, rate=10,
                        models=[ModelSpec(model_id=MODEL_ID, version=VERSION, n_numeric=3, n_categorical=1)],
                        label_delay=LabelDelay(median_s=5, max_s=60))
    pipeline = InProcessPipeline(settings)
    pipeline.feed(logged_records(generate(scenario), settings))
    figures = [("model", q, model.gauges()) for q, model in enumerate(pipeline.models)]
    parsed = _parsed(render_families(processor_families(figures)))
    for name in ("driftline_stage_model_accuracy_ew", "driftline_stage_model_drifted_features"):
        labels = [(s["model_id"], s["model_version"]) for s in parsed[name]]
        assert labels == [(MODEL_ID, VERSION)], name


def test_the_collector_pace_and_counts_are_exposed_as_the_process_has_them() -> None:
    parsed = {family.name: family.samples
              for family in text_string_to_metric_families(render_families(collector_families()).decode())}
    assert [s.value for s in parsed["driftline_gc_threshold0"]] == [gc.get_threshold()[0]]
    by_generation = {s.labels["generation"]: s.value for s in parsed["driftline_gc_collections"]
                     if s.name.endswith("_total")}
    assert by_generation.keys() == {"0", "1", "2"}
    assert all(by_generation[str(g)] <= stats["collections"] for g, stats in enumerate(gc.get_stats()))
    assert by_generation["0"] > 0
