"""The live progress of a demo run: worker figures from /metrics and ClickHouse, and their display."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

# Counters of the worker's /metrics exposition (prometheus_client appends _total to counters).
EVENTS_IN = "driftline_events_in"
LAG = "driftline_consumer_lag"
WINDOWS_CLOSED = "driftline_stage_windows_closed_total"
TRIGGERS = "driftline_stage_triggers_total"

LIVE_COUNTS_SQL = (
    "SELECT (SELECT count() FROM drift_scores FINAL WHERE run_id = '' AND drifted = 1) AS drift_detections, "
    "(SELECT count() FROM model_metrics FINAL WHERE run_id = '' AND row_kind = 'alarm' AND segment = '') "
    "AS alarms, "
    "(SELECT uniqExactIf(trigger_id, status = 'succeeded') FROM retrain_jobs FINAL WHERE run_id = '') "
    "AS jobs_succeeded, "
    "(SELECT uniqExactIf(trigger_id, status IN ('queued', 'started')) FROM retrain_jobs FINAL "
    "WHERE run_id = '') AS jobs_running"
)


def metric_sums(text: str, stage: str | None = None) -> dict[str, float]:
    """Sum of every series per metric name, optionally only the series of one ``stage``.

    >>> text = 'driftline_events_in_total{stage="shard",topic="p"} 3.0\\n' \\
    ...        'driftline_events_in_total{stage="model",topic="m"} 5.0\\n'
    >>> metric_sums(text, stage="shard")
    {'driftline_events_in_total': 3.0}
    """
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if stage is not None and sample.labels.get("stage") != stage:
                continue
            sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)
    return sums


@dataclass
class Progress:
    """What the display shows; updated by the orchestration."""

    phase: str = "starting"
    started: float = field(default_factory=time.monotonic)
    produced: int = 0
    produce_rate: float = 0.0
    processed: int = 0
    lag: int = 0
    windows_closed: int = 0
    drift_detections: int = 0
    alarms: int = 0
    triggers: int = 0
    jobs_succeeded: int = 0
    jobs_running: int = 0
    simulated_until: str = ""
    _last_produced: tuple[float, int] = (0.0, 0)

    def set_produced(self, total: int) -> None:
        now = time.monotonic()
        then, before = self._last_produced
        if now - then >= 1.0:
            if then:
                self.produce_rate = (total - before) / (now - then)
            self._last_produced = (now, total)
        self.produced = total

    def apply_metrics(self, text: str) -> None:
        every = metric_sums(text)
        shard = metric_sums(text, stage="shard")
        self.processed = int(shard.get(f"{EVENTS_IN}_total", 0))
        self.lag = int(every.get(LAG, 0))
        self.windows_closed = int(every.get(WINDOWS_CLOSED, 0))
        self.triggers = int(every.get(TRIGGERS, 0))

    def apply_counts(self, row: dict[str, object]) -> None:
        self.drift_detections = _int(row.get("drift_detections"))
        self.alarms = _int(row.get("alarms"))
        self.jobs_succeeded = _int(row.get("jobs_succeeded"))
        self.jobs_running = _int(row.get("jobs_running"))

    def lines(self) -> Iterable[tuple[str, str]]:
        yield "phase", self.phase
        yield "elapsed", f"{time.monotonic() - self.started:.0f} s"
        yield "events produced", f"{self.produced:,}  ({self.produce_rate:,.0f}/s)"
        yield "events processed", f"{self.processed:,}  (lag {self.lag:,})"
        if self.simulated_until:
            yield "simulated time", self.simulated_until
        yield "windows closed", f"{self.windows_closed:,}"
        yield "drift detections", f"{self.drift_detections:,} feature-windows"
        yield "detector alarms", f"{self.alarms:,}"
        yield "retrain triggers", f"{self.triggers:,}"
        yield "retrain jobs", f"{self.jobs_succeeded} succeeded, {self.jobs_running} running"

    def line(self) -> str:
        """The progress for a log: two lines of under 80 columns for typical figures."""
        return (f"{time.monotonic() - self.started:4.0f}s {self.phase}: {self.produced:,} sent, "
                f"{self.processed:,} processed (lag {self.lag:,})\n"
                f"      windows {self.windows_closed:,}, drift {self.drift_detections:,}, alarms "
                f"{self.alarms:,}, triggers {self.triggers:,}, jobs ok {self.jobs_succeeded}, running "
                f"{self.jobs_running}")

    def render(self) -> Table:
        table = Table(title="driftline demo", show_header=False, min_width=60)
        table.add_column(style="bold cyan")
        table.add_column()
        for name, value in self.lines():
            table.add_row(name, value)
        return table


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float | str) and str(value).strip() else 0


@contextlib.contextmanager
def progress_display(console: Console, progress: Progress, interval_s: float = 10.0) -> Iterator[None]:
    """A live table on a terminal; elsewhere (a log file, CI) one :meth:`Progress.line` every
    ``interval_s`` and a last one at the end, so the log reads top to bottom."""
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, get_renderable=progress.render):
            yield
        return
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(interval_s):
            console.print(progress.line(), markup=False, highlight=False, soft_wrap=True)

    reporter = threading.Thread(target=report, name="demo-progress", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
        console.print(progress.line(), markup=False, highlight=False, soft_wrap=True)
