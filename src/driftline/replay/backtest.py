"""Comparing runs: when each alarmed, how fast it caught each incident, how often it cried wolf.

Pure functions over rows read from ClickHouse (see :mod:`driftline.replay.results`).

- An **alarm** is a drifted model window (``model_drift.drifted``; alarm time = window end, the
  earliest moment the verdict exists, evidence ``[window start, window end)``), a concept-drift
  detector alarm (``model_metrics`` row_kind 'alarm') or a retrain trigger (``triggered_at``).
- **Detection delay** of an incident in a run: time from the incident start to the first alarm
  of the incident's model at or after that start whose evidence began before the incident ended.
- **False alarms per million quiet events**: alarms in windows overlapping no incident of the
  model (a detector alarm or trigger belongs to the window containing its time), divided by the
  events (``model_drift.n_events``) of those quiet windows, times 10^6. Without incidents every
  window is quiet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from driftline.replay.incidents import Incident, quiet

KINDS = ("drift", "performance", "trigger")


@dataclass(frozen=True)
class WindowRow:
    """One model-level drift window of a run (all traffic, one window size)."""

    run_id: str
    model_id: str
    model_version: str
    window_start: int
    window_end: int
    n_events: int
    n_drifted: int
    drifted: bool
    max_psi: float | None = None


@dataclass(frozen=True)
class Alarm:
    run_id: str
    model_id: str
    model_version: str
    kind: str  # one of KINDS
    time_ms: int  # when the alarm was raised (event time)
    since_ms: int  # start of the evidence (the window start for drift, else time_ms)


@dataclass(frozen=True)
class Detection:
    run_id: str
    incident: Incident
    first: Alarm | None  # first alarm of any kind
    first_trigger: Alarm | None

    @property
    def delay_ms(self) -> int | None:
        return None if self.first is None else self.first.time_ms - self.incident.start_ms

    @property
    def trigger_delay_ms(self) -> int | None:
        return None if self.first_trigger is None else self.first_trigger.time_ms - self.incident.start_ms


@dataclass(frozen=True)
class FalseAlarms:
    run_id: str
    model_id: str
    windows: int
    quiet_windows: int
    quiet_events: int
    alarms: dict[str, int]  # per kind, all alarms
    false_alarms: int

    @property
    def per_million(self) -> float | None:
        return self.false_alarms / self.quiet_events * 1e6 if self.quiet_events else None


def drift_alarms(windows: Sequence[WindowRow]) -> list[Alarm]:
    return [
        Alarm(w.run_id, w.model_id, w.model_version, "drift", w.window_end, w.window_start)
        for w in windows
        if w.drifted
    ]


def _order(alarm: Alarm) -> tuple[int, int, str]:
    return alarm.time_ms, KINDS.index(alarm.kind), alarm.model_version


def detections(
    run_ids: Sequence[str], alarms: Sequence[Alarm], incidents: Sequence[Incident]
) -> list[Detection]:
    """First alarm (and first trigger) of each run for each incident."""
    out = []
    for run_id in run_ids:
        for incident in incidents:
            hits = sorted(
                (a for a in alarms
                 if a.run_id == run_id and a.model_id == incident.model_id
                 and a.time_ms >= incident.start_ms and a.since_ms < incident.end_ms),
                key=_order,
            )
            triggers = [a for a in hits if a.kind == "trigger"]
            first_trigger = triggers[0] if triggers else None
            out.append(Detection(run_id, incident, hits[0] if hits else None, first_trigger))
    return out


def false_alarms(windows: Sequence[WindowRow], alarms: Sequence[Alarm],
                 incidents: Sequence[Incident]) -> list[FalseAlarms]:
    """Per run and model (see the module docstring)."""
    by_model: dict[tuple[str, str], list[WindowRow]] = defaultdict(list)
    for w in windows:
        by_model[(w.run_id, w.model_id)].append(w)
    alarms_by_model: dict[tuple[str, str], list[Alarm]] = defaultdict(list)
    for a in alarms:
        alarms_by_model[(a.run_id, a.model_id)].append(a)
    out = []
    for key in sorted(set(by_model) | set(alarms_by_model)):
        run_id, model_id = key
        model_windows = by_model.get(key, [])
        quiet_windows = [w for w in model_windows
                         if quiet(incidents, model_id, w.window_start, w.window_end)]
        counts = dict.fromkeys(KINDS, 0)
        n_false = 0
        for alarm in alarms_by_model.get(key, []):
            counts[alarm.kind] += 1
            n_false += _in_quiet_time(alarm, model_windows, incidents)
        out.append(FalseAlarms(run_id, model_id, len(model_windows), len(quiet_windows),
                               sum(w.n_events for w in quiet_windows), counts, n_false))
    return out


def _in_quiet_time(alarm: Alarm, windows: Sequence[WindowRow], incidents: Sequence[Incident]) -> bool:
    if alarm.kind == "drift":
        span = (alarm.since_ms, alarm.time_ms)
    else:
        containing = [w for w in windows if w.window_start <= alarm.time_ms < w.window_end]
        span = ((containing[0].window_start, containing[0].window_end) if containing
                else (alarm.time_ms, alarm.time_ms + 1))
    return quiet(incidents, alarm.model_id, *span)
