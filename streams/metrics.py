"""Prometheus exposition of the worker: read from the runners at scrape time.

Series (all prefixed ``driftline_``):
- ``events_in_total{stage,topic}``, ``messages_out_total{stage,topic}`` (dead-lettered = the
  dead-letter topic, joined = the outcomes topic), ``batches_total``, ``checkpoints_total``,
  ``produce_retries_total``, ``shards_owned``, ``producer_blocked`` per stage;
- ``checkpoint_bytes_total{stage,kind}``: the checkpoint bytes the broker acknowledged, bases and
  deltas apart (against the input's bytes: what checkpoints cost the cluster);
- ``inputs_waiting{stage}``, ``input_waits_total{stage}``: input partitions paused while their shard
  waits for another input (``worker.labels_wait_for_predictions``: labels ahead of a predictions
  backlog in event time), and how often one was;
- ``idle_partitions{stage}``: predictions and labels partitions read to their end with no record for
  ``worker.idle_partition_s``, whose watermarks follow the other partitions'
  (``stage_idle_advances_total{shard}`` counts the moves; ``stage_silent_advances_total{shard}``
  the moves of ``worker.silent_predictions_s`` while every predictions partition is silent);
- ``consumer_lag{stage,topic,partition}`` = true end (Fetch high watermark) - next offset;
- ``checkpoint_offset{stage,topic,partition}``: where a restart resumes (the last checkpoint's next
  offset, as a Kafka committed offset), so end offset minus it is what a crash now would read again;
- ``checkpoint_age_seconds{stage,shard}``; ``checkpoint_local_copy_failures_total{stage}``: bases
  kept without their local copy (``worker.state_dir``: disk full, IO error);
- ``stage_<name>{stage,shard,...}``: every figure a processor reports through ``gauges()``
  (late, expired, duplicates, dead letters, pending joins, ...). A gauge may carry its own labels
  (:class:`driftline.pipeline.gauges.Gauge`), e.g. ``model_accuracy_ew{model_id="m",model_version="1"}``;
  prometheus_client escapes label values as the text exposition format requires, so any model id
  round-trips; ``stage_restore_{seconds,cpu_seconds,read_seconds,bytes,deltas}`` describe the shard's
  last restore (a chain's also ``_broker_bytes`` and ``_local_bytes``: where its base came from),
  ``stage_restore_estimate_seconds`` what restoring its checkpoint chain would take now (the
  figure ``worker.restore_target_s`` bounds: ``streams/runner.py``), priced at
  ``stage_restore_base_cpu_ms_per_mb`` and ``stage_restore_delta_cpu_us_per_record`` (the defaults
  until the worker's own restores measure them: ``stage_restore_{base,delta}_cpu_measured`` 1) and
  read at ``stage_restore_{base,delta}_read_mb_per_s`` (``stage_restore_base_local`` 1: the base
  from its local copy); ``stage_restore_base_cpu_seconds`` is the base's unpickling in the last restore;
  ``stage_base_waiting`` (1 while the shard's base is due but another shard's base is in flight:
  one at a time per worker) and ``stage_bases_deferred`` (deltas
  written instead of a due base, since the start);
- ``sink_messages_total{topic}``, ``sink_rows_total{table}`` (counted once flushed; the sink's own
  dead letters under ``dead_letters``), ``sink_rejected_total{source}``, ``sink_write_failures_total``,
  ``sink_blocked`` (1 while the sink retries a failed write with fetching paused, nothing
  committed: ClickHouse unreachable or failing, or a table behind its schema),
  ``sink_schema_behind{table}`` (1 while the table lacks a column this version's migrations
  create: the sink waits for ``driftline db migrate``, nothing is dead-lettered), and the sink's
  ``consumer_lag{stage="sink"}``;
- ``compiled_path{path}``: 1 where a compiled C path runs (``decode``, ``join``, ``ks``, ``watch``,
  ``fetch``), 0 where its reference does (the extension not built at install, or
  ``worker.compiled_paths`` false);
- ``gc_threshold0``: the cyclic collector's generation-0 threshold now (``driftline.runtime.CollectorPacing``:
  it rises while collections find no garbage, back to its floor when one does), ``gc_collections_total``
  and ``gc_collected_total`` by ``generation``;
- ``kafka_metadata_requests_total{client}``: the process's aiokafka metadata requests (producer,
  consumer): a few dozen a run; a steady rate means a client asks again and again for a partition
  without a known leader.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from driftline.kafka.metadata_requests import metadata_requests
from driftline.kafka.records import process_compiled_paths
from driftline.pipeline.gauges import Gauge
from driftline.streams.runner import StageRunner
from driftline.streams.sink import SinkRunner

# (stage, shard, the processor's gauges()) of every shard a worker runs
ShardFigures = tuple[str, int, Iterable[Gauge]]


def processor_families(figures: Iterable[ShardFigures]) -> list[Metric]:
    """One ``driftline_stage_<name>`` gauge family per figure name, labelled by stage and shard plus
    the gauge's own labels (prometheus_client escapes their values when rendering)."""
    families: dict[str, Metric] = {}
    for stage, shard, gauges in figures:
        for name, value, labels in gauges:
            metric_name = f"driftline_stage_{name}"
            family = families.get(metric_name)
            if family is None:
                family = Metric(metric_name, f"processor figure {name}", "gauge")
                families[metric_name] = family
            family.add_sample(metric_name, {"stage": stage, "shard": str(shard), **labels}, value)
    return list(families.values())


def collector_families() -> list[Metric]:
    """The cyclic collector's pace (``driftline.runtime.CollectorPacing``) and what it found."""
    threshold = GaugeMetricFamily(
        "driftline_gc_threshold0", "the cyclic collector's generation-0 threshold (paced by what it finds)")
    threshold.add_metric([], float(gc.get_threshold()[0]))
    collections = CounterMetricFamily("driftline_gc_collections", "cyclic collections, by generation",
                                      labels=["generation"])
    collected = CounterMetricFamily("driftline_gc_collected",
                                    "objects cyclic collections freed, by generation",
                                    labels=["generation"])
    for generation, stats in enumerate(gc.get_stats()):
        collections.add_metric([str(generation)], stats["collections"])
        collected.add_metric([str(generation)], stats["collected"])
    return [threshold, collections, collected]


class WorkerCollector(Collector):
    def __init__(self, runners: Sequence[StageRunner], sink: SinkRunner | None) -> None:
        self.runners = list(runners)
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        yield from self._stage_metrics()
        yield from self._processor_gauges()
        if self.sink is not None:
            yield from self._sink_metrics(self.sink)
        yield self._metadata_requests()
        yield self._compiled_paths()
        yield from collector_families()

    @staticmethod
    def _compiled_paths() -> Metric:
        family = GaugeMetricFamily("driftline_compiled_path",
                                   "1 where the compiled C path runs, 0 where its Python reference does "
                                   "(extension not built, or worker.compiled_paths false)", labels=["path"])
        for name, on in sorted(process_compiled_paths().items()):
            family.add_metric([name], float(on))
        return family

    def _metadata_requests(self) -> Metric:
        family = CounterMetricFamily("driftline_kafka_metadata_requests",
                                     "cluster metadata requests of the process's Kafka clients",
                                     labels=["client"])
        for kind, n in sorted(metadata_requests().items()):
            family.add_metric([kind], n)
        return family

    def _stage_metrics(self) -> Iterable[Metric]:
        events = CounterMetricFamily("driftline_events_in", "records fed to processors",
                                     labels=["stage", "topic"])
        out = CounterMetricFamily("driftline_messages_out", "messages produced and acknowledged",
                                  labels=["stage", "topic"])
        batches = CounterMetricFamily("driftline_batches", "consumer batches processed", labels=["stage"])
        ckpts = CounterMetricFamily("driftline_checkpoints", "shard checkpoints saved", labels=["stage"])
        ckpt_bytes = CounterMetricFamily("driftline_checkpoint_bytes",
                                         "checkpoint bytes the broker acknowledged, per kind (base, delta)",
                                         labels=["stage", "kind"])
        retries = CounterMetricFamily("driftline_produce_retries", "produce retries (broker unreachable)",
                                      labels=["stage"])
        owned = GaugeMetricFamily("driftline_shards_owned", "shards this worker runs", labels=["stage"])
        blocked = GaugeMetricFamily("driftline_producer_blocked", "1 while outputs cannot be produced",
                                    labels=["stage"])
        idle = GaugeMetricFamily("driftline_idle_partitions",
                                 "predictions and labels partitions read to their end with no record for "
                                 "worker.idle_partition_s (watermarks follow the others')",
                                 labels=["stage"])
        waiting = GaugeMetricFamily("driftline_inputs_waiting",
                                    "input partitions paused while their shard waits for another input "
                                    "(labels ahead of a predictions backlog)", labels=["stage"])
        waits = CounterMetricFamily("driftline_input_waits", "times an input partition was paused so",
                                    labels=["stage"])
        lag = GaugeMetricFamily("driftline_consumer_lag", "true end offset minus next offset",
                                labels=["stage", "topic", "partition"])
        age = GaugeMetricFamily("driftline_checkpoint_age_seconds", "seconds since the shard's checkpoint",
                                labels=["stage", "shard"])
        resume = GaugeMetricFamily("driftline_checkpoint_offset", "next offset of the last checkpoint",
                                   labels=["stage", "topic", "partition"])
        copy_failures = CounterMetricFamily("driftline_checkpoint_local_copy_failures",
                                            "base checkpoints kept without a local copy (IO error)",
                                            labels=["stage"])
        now = time.time()
        for r in self.runners:
            if r.checkpoints.local is not None:
                copy_failures.add_metric([r.stage], r.checkpoints.local_copy_failures.get(r.stage, 0))
            for topic, n in r.stats.records_in.items():
                events.add_metric([r.stage, topic], n)
            for topic, n in r.stats.messages_out.items():
                out.add_metric([r.stage, topic], n)
            batches.add_metric([r.stage], r.stats.batches)
            ckpts.add_metric([r.stage], r.stats.checkpoints)
            for kind in ("base", "delta"):
                ckpt_bytes.add_metric([r.stage, kind], r.stats.checkpoint_bytes[kind])
            retries.add_metric([r.stage], r.stats.produce_retries)
            owned.add_metric([r.stage], len(r.shards))
            blocked.add_metric([r.stage], float(r.stats.blocked))
            idle.add_metric([r.stage], r.stats.idle_partitions)
            waiting.add_metric([r.stage], r.stats.inputs_waiting)
            waits.add_metric([r.stage], r.stats.input_waits)
            for tp, n in sorted(r.lag().items()):
                lag.add_metric([r.stage, tp.topic, str(tp.partition)], n)
            for shard, state in sorted(r.shards.items()):
                age.add_metric([r.stage, str(shard)], max(0.0, now - state.checkpointed_at))
                for tp, offset in sorted(state.checkpointed_offsets.items()):
                    resume.add_metric([r.stage, tp.topic, str(tp.partition)], offset)
        if self.sink is not None:
            for tp, n in sorted(self.sink.lag().items()):
                lag.add_metric(["sink", tp.topic, str(tp.partition)], n)
        yield from (events, out, batches, ckpts, ckpt_bytes, retries, owned, blocked, idle, waiting, waits,
                    lag, age, resume, copy_failures)

    def _processor_gauges(self) -> Iterable[Metric]:
        figures: list[ShardFigures] = []
        for r in self.runners:
            for shard, state in sorted(r.shards.items()):
                restore = [Gauge(name, value) for name, value in state.restore_figures.items()]
                figures.append((r.stage, shard, [*state.processor.gauges(), *restore]))
        return processor_families(figures)

    def _sink_metrics(self, sink: SinkRunner) -> Iterable[Metric]:
        messages = CounterMetricFamily("driftline_sink_messages", "messages read by the sink",
                                       labels=["topic"])
        written = CounterMetricFamily("driftline_sink_rows", "rows written to ClickHouse", labels=["table"])
        rejected = CounterMetricFamily("driftline_sink_rejected", "messages/rows that could not be written",
                                       labels=["source"])
        for topic, n in sink.stats.messages_in.items():
            messages.add_metric([topic], n)
        for table, n in sink.stats.rows_written.items():
            written.add_metric([table], n)
        for source, n in sink.stats.rejected.items():
            rejected.add_metric([source], n)
        native = CounterMetricFamily("driftline_sink_native_rows",
                                     "rows staged as they came, read into a Native block in C (the rest "
                                     "row by row)", labels=["table"])
        for table, n in sink.stats.native_rows.items():
            native.add_metric([table], n)
        failures = CounterMetricFamily("driftline_sink_write_failures", "failed ClickHouse writes (retried)",
                                       value=sink.stats.write_failures)
        blocked = GaugeMetricFamily("driftline_sink_blocked",
                                    "1 while the sink retries a failed write, fetching paused: ClickHouse"
                                    " unreachable or failing, or a table behind its schema",
                                    value=float(sink.stats.blocked))
        behind = GaugeMetricFamily("driftline_sink_schema_behind",
                                   "1 while the table lacks columns this version's migrations create",
                                   labels=["table"])
        for table, flag in sorted(sink.stats.schema_behind.items()):
            behind.add_metric([table], flag)
        yield from (messages, written, rejected, native, failures, blocked, behind)


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render_families(families: Iterable[Metric]) -> bytes:
    """Metric families in the Prometheus text exposition format (label values escaped)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


def render(runners: Sequence[StageRunner], sink: SinkRunner | None) -> bytes:
    """The Prometheus text exposition of everything the worker runs."""
    return render_families(WorkerCollector(runners, sink).collect())
