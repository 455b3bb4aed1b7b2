"""Feeding a replay into the in-process pipeline and its rows into a RowWriter.

The pipeline is :class:`driftline.pipeline.local.InProcessPipeline` — the very stage processors
the live worker runs — constructed with the run id, which the pipeline stamps on every row, so a
replay's rows never mix with live rows (run id '') or with other runs'. Retrain triggers of a
replay become ``retrain_triggers`` rows only; nothing is published, so no retrain job starts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from driftline.config import Settings
from driftline.kafka.records import use_process_compiled_paths
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline
from driftline.pipeline.records import WindowKey
from driftline.runtime import tune_gc
from driftline.store.writer import ClickHouseRowWriter, RowWriter

# model_metrics counters of events that did not become (or re-become) an outcome
NOT_JOINED_COLUMNS = ("n_expired", "n_evicted", "n_orphan_labels", "n_duplicate_predictions",
                      "n_duplicate_labels")


class RunIdError(ValueError):
    """The run id would not isolate the replay's rows."""


def check_run_id(run_id: str) -> str:
    """The run id, refused if empty or blank: run id '' is the live pipeline's.

    >>> check_run_id("backtest-1")
    'backtest-1'
    >>> check_run_id(" ")
    Traceback (most recent call last):
    ...
    driftline.replay.engine.RunIdError: a replay needs a non-empty --run-id ('' is the live pipeline's)
    """
    if not run_id or not run_id.strip():
        raise RunIdError("a replay needs a non-empty --run-id ('' is the live pipeline's)")
    return run_id


@dataclass(frozen=True, order=True)
class PartialWindow:
    """A window the replay's input covers only in part: it extends past the input's end (not
    written: the live worker would not have closed it yet) or began before ``--from`` (written,
    with the events from ``--from`` on)."""

    model_id: str
    model_version: str
    window_size_s: int
    window_start: int  # epoch ms
    window_end: int  # epoch ms
    written: bool


@dataclass
class ReplayResult:
    records: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    triggers: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    end_ms: int | None = None  # the input's end: windows ending by then are closed and written
    # the end of the outcome interval holding the input's end: intervals are written up to it
    intervals_end_ms: int | None = None
    partial_windows: list[PartialWindow] = field(default_factory=list)
    elapsed_s: float = 0.0
    # An episode's row is re-written while it lasts (a new version each time): the rows written
    # are versions, the ids the episodes a query with FINAL reads.
    episode_ids: set[str] = field(default_factory=set)
    # (model_id, model_version) that took their first window as the reference: no training profile
    first_window_references: set[tuple[str, str]] = field(default_factory=set)
    # (model_id, model_version) with feature_windows rows, and those with a scored window
    # (model_drift): a model with events but no reference is never scored
    models_seen: set[tuple[str, str]] = field(default_factory=set)
    models_scored: set[tuple[str, str]] = field(default_factory=set)

    # What did not count, as the tables hold it: dead letters by error_kind, late events by
    # event_type, and the all-traffic model_metrics counters of failed joins and exact re-sends
    dead_letters: Counter[str] = field(default_factory=Counter)
    late_events: Counter[str] = field(default_factory=Counter)
    not_joined: Counter[str] = field(default_factory=Counter)

    @property
    def models_never_scored(self) -> list[tuple[str, str]]:
        return sorted(self.models_seen - self.models_scored)

    @property
    def events_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Replayer:
    """One replay run: micro-batches in, rows out to ``writer`` (flushed by ``finish``)."""

    def __init__(
        self,
        settings: Settings,
        run_id: str,
        writer: RowWriter,
        profiles: Iterable[bytes] = (),
        from_ms: int | None = None,
    ) -> None:
        tune_gc()
        use_process_compiled_paths(settings.worker.compiled_paths)
        # a writer that reads JSON rows in C takes the outcome messages as the stages made them
        self._native = writer if isinstance(writer, ClickHouseRowWriter) else None
        self.pipeline = InProcessPipeline(settings, check_run_id(run_id), profiles,
                                          outcome_messages=self._native is not None)
        self.writer = writer
        self.result = ReplayResult()
        self._from_ms = from_ms
        self._cut_at_start: set[PartialWindow] = set()
        self._started = time.perf_counter()

    def feed(self, batch: Sequence[RawRecord]) -> None:
        if not batch:
            return
        self.pipeline.feed(batch)
        result = self.result
        result.records += len(batch)
        first = min(r.timestamp_ms for r in batch)
        last = max(r.timestamp_ms for r in batch)
        result.first_ms = first if result.first_ms is None else min(result.first_ms, first)
        result.last_ms = last if result.last_ms is None else max(result.last_ms, last)
        self._drain()

    def finish(self, end_ms: int | None = None) -> ReplayResult:
        """End the input at ``end_ms`` (exclusive; default: just after the last record timestamp),
        close and write every window ending by then and every outcome interval up to the one
        holding the end, list the windows left partial, and flush: the rows are durable once this
        returns."""
        result = self.result
        if end_ms is None and result.last_ms is not None:
            end_ms = result.last_ms + 1
        if end_ms is not None:
            self.pipeline.finish(end_ms)
            result.end_ms = end_ms
            interval_ms = self.pipeline.settings.windows.metrics_interval_s * 1000
            result.intervals_end_ms = end_ms + (-end_ms) % interval_ms
        self._drain()
        open_windows = {
            PartialWindow(key.model_id, key.model_version, key.size_s, key.start, key.end, written=False)
            for shard in self.pipeline.shards
            for key in map(WindowKey._make, shard.open)
            if key.segment == ""
        }
        result.partial_windows = sorted(self._cut_at_start | open_windows)
        self.writer.flush()
        self.result.elapsed_s = time.perf_counter() - self._started
        return self.result

    def _drain(self) -> None:
        messages = self.pipeline.outcome_messages
        if messages:
            taken = messages[:]
            messages.clear()
            assert self._native is not None, "outcome messages are kept for a writer that reads them"
            if not self._native.write_json_objects("outcomes", taken):
                outcomes = self.pipeline.settings.topics.outcomes  # (not as they stand: row by row)
                self.writer.write("outcomes", [row for value in taken
                                               for row in self.pipeline.mapper.rows(outcomes, value)[1]])
            self.result.rows["outcomes"] += len(taken)
        rows = self.pipeline.rows
        for table in sorted(rows):
            produced = rows.pop(table)
            if table == "feature_windows" and self._from_ms is not None:
                self._note_cut_at_start(produced, self._from_ms)
            if table == "drift_episodes":
                self.result.episode_ids.update(row["episode_id"] for row in produced)
            elif table == "dead_letters":
                self.result.dead_letters.update(row["error_kind"] for row in produced)
            elif table == "late_events":
                self.result.late_events.update(row["event_type"] for row in produced)
            elif table == "model_metrics":
                self._count_not_joined(produced)
            elif table == "feature_windows":
                self.result.models_seen.update((row["model_id"], row["model_version"]) for row in produced)
            elif table == "model_drift":
                self.result.models_scored.update((row["model_id"], row["model_version"]) for row in produced)
            elif table == "reference_profiles":
                self.result.first_window_references.update(
                    (row["model_id"], row["model_version"]) for row in produced
                    if row["source"] == "first_window")
            self.writer.write(table, produced)
            self.result.rows[table] += len(produced)
        self.result.triggers += len(self.pipeline.triggers)
        self.pipeline.triggers.clear()

    def _count_not_joined(self, rows: list[dict[str, Any]]) -> None:
        counts = self.result.not_joined
        for row in rows:
            if row.get("segment", "") != "" or row.get("row_kind") == "alarm":
                continue
            for column in NOT_JOINED_COLUMNS:
                counts[column] += int(row.get(column) or 0)

    def _note_cut_at_start(self, rows: list[dict[str, Any]], from_ms: int) -> None:
        for row in rows:
            if row["window_start"] < from_ms and row["segment"] == "":
                self._cut_at_start.add(PartialWindow(
                    row["model_id"], row["model_version"], row["window_size_s"], row["window_start"],
                    row["window_end"], written=True))
