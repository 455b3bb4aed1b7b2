"""Retrain policy: turns drift verdicts and performance observations into retrain triggers.

A pure operator: no I/O, no wall clock; every decision is a function of the event times and
values it is fed. State is kept per ``(model_id, model_version)`` and the object pickles, so it
can be checkpointed with the input offsets it reflects.

Three independent signal families, each with its own hysteresis and cooldown:

* **drift** (:meth:`RetrainPolicy.on_drift_window`, fed on the drift/window clock): fires when at
  least ``drift_k`` of the model's last ``drift_n`` windows drifted. "Last N windows" is the
  window grid, not the last N verdicts: a window that produced no verdict (no traffic) counts as
  not drifted, so a drifted window from last week never combines with two from today. A window
  during which one of the model's drift episodes was open counts as drifted too (unless
  ``episodes_count_as_drift`` is off).
* **performance** (:meth:`RetrainPolicy.on_performance`, fed on the label clock): fires when the
  metric stays at least ``performance_drop`` (absolute, in metric units) worse than its reference
  in every observation for ``performance_duration_s``.
* **concept_drift** (same clock and call): fires when detector alarms *persist*: at least two
  alarms, the latest at least ``alarm_persist_s`` after the first, with no gap between consecutive
  alarms longer than ``alarm_persist_s`` (a longer quiet gap ends the run of alarms; the next
  alarm starts a new one). With ``alarm_persist_s = 0`` a single alarm is enough. Accuracy that
  collapses while alarms persist fires both ``concept_drift`` and ``performance``: neither blocks
  the other.

* **estimated performance** (:meth:`RetrainPolicy.on_estimated_performance`, fed on the window
  clock when ``use_estimated_performance`` is on): the same rule as **performance** on the
  accuracy CBPE estimates per policy window from scores alone, so a drop can fire before any
  label arrives. Its triggers have reason ``performance`` with ``evidence["source"] ==
  "estimated"``; it is a family of its own (hysteresis, cooldown), sharing no state with the
  label clock's, so the triggers do not depend on how the two clocks interleave (when labels
  confirm the drop, the realized family may fire as well).

* **comparison** (:meth:`RetrainPolicy.on_comparison`, label clock): the evidence of a
  champion/challenger comparison that reached a decision (promote the challenger, or roll it
  back). The comparison reports a decision only when it is new (a first one, or a reversal), so
  this family needs no hysteresis: one trigger per decision, named after the challenger, the
  champion in its message.

Stage 2 advances the window clock and the label clock independently and may interleave them in
any order; because the drift family shares no state with the other two, the triggers produced do
not depend on that interleaving.

Hysteresis: after a family fired it is disarmed until its condition has been seen clear (drift:
fewer than K of the last N windows drifted; performance: a not-degraded observation; concept
drift: no run of alarms in progress). Cooldown: a family never fires twice within ``cooldown_s``
of event time. A condition that still holds when the cooldown ends (without having cleared) does
not fire again.

Episodes re-arm the drift family: a drift episode that *opens* or *escalates* (a further change:
larger, or of the opposite sign) after the family's last trigger arms it again even though the
condition never cleared; the cooldown still applies (an escalation during the cooldown fires when
it ends, if the condition still holds). One change reaches the features it affects at different
times (a feature whose shift is smaller, or rarer, opens its episode some windows after the
first), so an episode event within the **grace period** after a trigger, the policy's own
evidence span (``drift_n`` windows), belongs to the change that trigger reported: it is kept as
an open episode (named by the next trigger) but does not re-arm. Under a lasting shift the
episodes stay open and produce no new events, so the family stays disarmed: one trigger per
change, a trigger storm is impossible by construction (every re-arming is an episode event past
the grace period, and an episode opens once and escalates only on a further change). A drift
trigger names the episodes open during its evidence windows and the episode events that armed it.

Feed each family in event-time order: an input older than the latest one already seen for the
model (e.g. a replayed window) is ignored. Feed windows of one size (``window_size_s``).

``trigger_id`` hashes ``(model_id, model_version, reason, evidence window start, end)`` only, so
a restart or a replay of the same input never mints a second id for the same trigger.

>>> from driftline.config import TriggerSettings
>>> policy = RetrainPolicy(TriggerSettings(drift_k=2, drift_n=3, cooldown_s=0), config_hash="abc")
>>> hour = 3_600_000
>>> [policy.on_drift_window("m", "1", t * hour, (t + 1) * hour, drifted, {}) is not None
...  for t, drifted in enumerate([True, False, False, True, True, True])]
[False, False, False, False, True, False]
>>> policy.on_drift_window("m", "1", 6 * hour, 7 * hour, False, {}) is None
True
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from driftline.config import TriggerSettings
from driftline.schemas.events import RetrainTrigger, TriggerReason

__all__ = ["EpisodeNote", "RetrainPolicy", "trigger_id"]

MAX_EPISODE_NOTES = 100  # episode events kept as a trigger's evidence (the newest)


def trigger_id(model_id: str, model_version: str, reason: str, window_start: int, window_end: int,
               note: str = "") -> str:
    """Deterministic id of a trigger: the same inputs give the same id in every process.

    ``note`` distinguishes manual triggers (their free-text reason) and estimated-performance
    ones ("estimated"); the policy leaves it empty otherwise.

    >>> trigger_id("m", "1", "drift", 0, 1000) == trigger_id("m", "1", "drift", 0, 1000)
    True
    >>> len(trigger_id("m", "1", "drift", 0, 1000))
    32
    """
    payload = orjson.dumps([model_id, model_version, str(reason), int(window_start), int(window_end), note])
    return hashlib.sha256(payload).hexdigest()[:32]


@dataclass(frozen=True)
class EpisodeNote:
    """A model-level drift episode event, as the retrain policy sees it."""

    episode_id: str
    feature: str
    kind: str  # opened | escalated | closed
    event_time: int
    magnitude: float
    unit: str

    def evidence(self) -> dict[str, Any]:
        return {"episode_id": self.episode_id, "feature": self.feature, "kind": self.kind,
                "event_time": self.event_time, "magnitude": self.magnitude, "unit": self.unit}


@dataclass
class _Window:
    start: int
    end: int
    drifted: bool
    evidence: dict[str, Any]


@dataclass
class _Family:
    """Hysteresis and cooldown of one trigger family."""

    armed: bool = True
    last_fired: int | None = None


@dataclass
class _DriftState(_Family):
    windows: deque[_Window] = field(default_factory=deque)
    open_episodes: dict[str, EpisodeNote] = field(default_factory=dict)  # episode_id -> latest event
    since_trigger: deque[EpisodeNote] = field(default_factory=lambda: deque(maxlen=MAX_EPISODE_NOTES))


@dataclass
class _PerformanceState:
    last_time: int | None = None
    degraded_since: int | None = None
    alarm_first: int | None = None
    alarm_last: int | None = None
    alarm_count: int = 0
    performance: _Family = field(default_factory=_Family)
    concept_drift: _Family = field(default_factory=_Family)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "performance" not in state:  # pickled when both reasons shared one family
            shared = _Family(state.pop("armed", True), state.pop("last_fired", None))
            state["performance"] = shared
            state["concept_drift"] = _Family(shared.armed, shared.last_fired)
        self.__dict__.update(state)


@dataclass
class _EstimatedState(_Family):
    last_start: int | None = None
    degraded_since: int | None = None


class RetrainPolicy:
    """Decides, per ``(model_id, model_version)``, when a model needs retraining.

    ``cfg`` holds the thresholds; ``config_hash`` (``Settings.config_hash()``) and ``run_id``
    ('' = live) are copied into every trigger. Raises ``ValueError`` when ``drift_k > drift_n``.
    ``drift_k = 1`` (every drifted window fires) is accepted when configured explicitly; the
    default is 3 of 4. ``episodes_count_as_drift``: a window during which a drift episode of the
    model was open counts as drifted.
    """

    def __init__(self, cfg: TriggerSettings, config_hash: str, run_id: str = "", *,
                 episodes_count_as_drift: bool = True) -> None:
        if cfg.drift_k > cfg.drift_n:
            raise ValueError(f"triggers.drift_k ({cfg.drift_k}) must be <= triggers.drift_n ({cfg.drift_n})")
        self.cfg = cfg
        self.config_hash = config_hash
        self.run_id = run_id
        self.episodes_count_as_drift = episodes_count_as_drift
        self._thresholds = cfg.model_dump(mode="json")
        self._drift: dict[tuple[str, str], _DriftState] = {}
        self._perf: dict[tuple[str, str], _PerformanceState] = {}
        self._estimated: dict[tuple[str, str], _EstimatedState] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_estimated", {})  # pickled before the estimated family
        self.__dict__.update(state)

    def configure(self, cfg: TriggerSettings, config_hash: str) -> None:
        """Apply other thresholds to the kept per-model state (a restored stage takes today's)."""
        if cfg.drift_k > cfg.drift_n:
            raise ValueError(f"triggers.drift_k ({cfg.drift_k}) must be <= triggers.drift_n ({cfg.drift_n})")
        self.cfg = cfg
        self.config_hash = config_hash
        self._thresholds = cfg.model_dump(mode="json")

    # -- drift family ------------------------------------------------------------------------

    def on_drift_window(self, model_id: str, model_version: str, window_start_ms: int, window_end_ms: int,
                        drifted: bool, evidence: dict[str, Any],
                        episodes: Sequence[EpisodeNote] = ()) -> RetrainTrigger | None:
        """Feed the model-level verdict of one closed window; returns a trigger when one fires.

        ``evidence`` describes the window (e.g. drifted features and their scores) and is copied
        into the trigger's evidence. ``episodes``: the model's drift episode events in this window
        (event time before its end, not fed before), in their order.
        """
        if window_end_ms <= window_start_ms:
            raise ValueError("window_end_ms must be after window_start_ms")
        state = self._drift.setdefault((model_id, model_version), _DriftState())
        if state.windows and window_start_ms <= state.windows[-1].start:
            return None  # replayed or out-of-order window
        size = window_end_ms - window_start_ms
        horizon = window_start_ms - self.cfg.drift_n * size
        had_episode = bool(state.open_episodes) or bool(episodes)
        grace_end = None if state.last_fired is None else state.last_fired + self.cfg.drift_n * size
        for note in episodes:
            if note.kind == "closed":
                state.open_episodes.pop(note.episode_id, None)
                continue
            state.open_episodes[note.episode_id] = note
            if grace_end is not None and note.event_time < grace_end:
                continue  # a straggler of the change the last trigger reported (grace period)
            state.since_trigger.append(note)
            state.armed = True  # a new change re-arms, whether or not the condition cleared
        drifted = drifted or (had_episode and self.episodes_count_as_drift)
        state.windows.append(_Window(window_start_ms, window_end_ms, drifted, dict(evidence)))
        while state.windows[0].start <= horizon:
            state.windows.popleft()
        drifted_windows = [w for w in state.windows if w.drifted]
        holds = len(drifted_windows) >= self.cfg.drift_k
        if not self._fires(state, holds, clear=True, now_ms=window_end_ms):
            return None
        start = drifted_windows[0].start
        message = (f"{len(drifted_windows)} of the last {self.cfg.drift_n} windows of {size // 1000}s "
                   f"drifted (threshold {self.cfg.drift_k})")
        details: dict[str, Any] = {
            "drifted_windows": len(drifted_windows),
            "windows": [{"window_start": w.start, "window_end": w.end, "drifted": w.drifted,
                         "evidence": w.evidence} for w in state.windows],
        }
        if state.open_episodes or state.since_trigger:
            details["episodes"] = sorted({*state.open_episodes, *(n.episode_id for n in state.since_trigger)})
            details["episode_events"] = [n.evidence() for n in state.since_trigger]
            message += f"; episodes: {len(details['episodes'])}"
        state.since_trigger.clear()
        return self._trigger(model_id, model_version, TriggerReason.DRIFT, start, window_end_ms,
                             window_end_ms, message, details)

    # -- performance family ------------------------------------------------------------------

    def on_performance(self, model_id: str, model_version: str, time_ms: int, value: float,
                       reference: float, higher_is_better: bool, alarm: bool,
                       evidence: dict[str, Any]) -> list[RetrainTrigger]:
        """Feed one performance observation (metric ``value`` vs ``reference``, detector ``alarm``);
        returns the triggers it fires (``performance`` first, then ``concept_drift``).

        ``evidence`` describes the observation that fired (e.g. metric name, outcome counts) and is
        copied into the trigger's evidence under ``observation``.
        """
        state = self._perf.setdefault((model_id, model_version), _PerformanceState())
        if state.last_time is not None and time_ms < state.last_time:
            return []  # replayed or out-of-order observation
        state.last_time = time_ms
        cfg = self.cfg
        persist_ms = cfg.alarm_persist_s * 1000

        worse_by = (reference - value) if higher_is_better else (value - reference)
        if worse_by >= cfg.performance_drop:
            if state.degraded_since is None:
                state.degraded_since = time_ms
        else:
            state.degraded_since = None

        if state.alarm_last is not None and time_ms - state.alarm_last > persist_ms:
            state.alarm_first, state.alarm_last, state.alarm_count = None, None, 0  # quiet gap: run over
        if alarm:
            if state.alarm_first is None:
                state.alarm_first = time_ms
            state.alarm_last = time_ms
            state.alarm_count += 1

        degraded = (state.degraded_since is not None
                    and time_ms - state.degraded_since >= cfg.performance_duration_s * 1000)
        persisting = state.alarm_first is not None and state.alarm_last is not None and (
            persist_ms == 0
            or (state.alarm_count >= 2 and state.alarm_last - state.alarm_first >= persist_ms))
        metric = {"value": value, "reference": reference, "higher_is_better": higher_is_better,
                  "worse_by": worse_by}
        alarms = {"first": state.alarm_first, "last": state.alarm_last, "count": state.alarm_count}
        details: dict[str, Any] = {"metric": metric, "alarms": alarms, "degraded_since": state.degraded_since,
                                   "observation": evidence}
        triggers = []
        if self._fires(state.performance, degraded, state.degraded_since is None, time_ms):
            assert state.degraded_since is not None
            start = state.degraded_since
            message = (f"metric {value:.4g} is {worse_by:.4g} worse than reference {reference:.4g} "
                       f"for {(time_ms - start) // 1000}s (thresholds {cfg.performance_drop} for "
                       f"{cfg.performance_duration_s}s)")
            triggers.append(self._trigger(model_id, model_version, TriggerReason.PERFORMANCE, start,
                                          time_ms, time_ms, message, details))
        if self._fires(state.concept_drift, persisting, state.alarm_first is None, time_ms):
            assert state.alarm_first is not None
            start = state.alarm_first
            message = (f"{state.alarm_count} concept-drift alarms over {(time_ms - start) // 1000}s "
                       f"(persistence threshold {cfg.alarm_persist_s}s)")
            triggers.append(self._trigger(model_id, model_version, TriggerReason.CONCEPT_DRIFT, start,
                                          time_ms, time_ms, message, details))
        return triggers

    # -- estimated performance (CBPE) ---------------------------------------------------------

    def on_estimated_performance(self, model_id: str, model_version: str, window_start_ms: int,
                                 window_end_ms: int, accuracy: float, baseline: float,
                                 evidence: dict[str, Any]) -> RetrainTrigger | None:
        """Feed one policy window's estimated accuracy against the baseline (the training
        profile's accuracy); fires ``performance`` once the estimate has stayed at least
        ``performance_drop`` below the baseline from the start of the first such window for
        ``performance_duration_s``. ``evidence`` (the window's figures) is copied under
        ``observation``.

        >>> from driftline.config import TriggerSettings
        >>> policy = RetrainPolicy(TriggerSettings(performance_duration_s=600), config_hash="abc")
        >>> minutes = 60_000
        >>> [policy.on_estimated_performance("m", "1", t * 5 * minutes, (t + 1) * 5 * minutes, acc, 0.9, {})
        ...  is not None for t, acc in enumerate([0.89, 0.75, 0.74, 0.72])]
        [False, False, True, False]
        >>> policy.on_estimated_performance("m", "1", 0, 1, 0.5, 0.9, {}) is None  # replayed window
        True
        """
        if window_end_ms <= window_start_ms:
            raise ValueError("window_end_ms must be after window_start_ms")
        state = self._estimated.setdefault((model_id, model_version), _EstimatedState())
        if state.last_start is not None and window_start_ms <= state.last_start:
            return None  # replayed or out-of-order window
        state.last_start = window_start_ms
        worse_by = baseline - accuracy
        if worse_by >= self.cfg.performance_drop:
            if state.degraded_since is None:
                state.degraded_since = window_start_ms
        else:
            state.degraded_since = None
        since = state.degraded_since
        degraded = since is not None and window_end_ms - since >= self.cfg.performance_duration_s * 1000
        if not self._fires(state, degraded, since is None, window_end_ms):
            return None
        assert since is not None
        message = (f"estimated accuracy {accuracy:.4g} is {worse_by:.4g} below baseline {baseline:.4g} "
                   f"for {(window_end_ms - since) // 1000}s, before labels (thresholds "
                   f"{self.cfg.performance_drop} for {self.cfg.performance_duration_s}s)")
        details: dict[str, Any] = {
            "source": "estimated",
            "metric": {"name": "accuracy", "value": accuracy, "reference": baseline, "higher_is_better": True,
                       "worse_by": worse_by},
            "degraded_since": since,
            "observation": evidence,
        }
        return self._trigger(model_id, model_version, TriggerReason.PERFORMANCE, since, window_end_ms,
                             window_end_ms, message, details, note="estimated")

    # -- comparison ---------------------------------------------------------------------------

    def on_comparison(self, model_id: str, champion: str, challenger: str, evidence_start_ms: int,
                      time_ms: int, better: bool, evidence: dict[str, Any]) -> RetrainTrigger:
        """The trigger of a champion/challenger decision reached at ``time_ms`` on evidence since
        ``evidence_start_ms``: the challenger is significantly ``better`` (promote it) or worse
        (roll it back). ``evidence`` (the comparison's figures) is copied into the trigger.

        >>> from driftline.config import TriggerSettings
        >>> policy = RetrainPolicy(TriggerSettings(), config_hash="abc")
        >>> t = policy.on_comparison("m", "1", "2", 0, 3_600_000, False, {"difference": -0.05})
        >>> t.reason.value, t.model_version, t.message
        ('comparison', '2', 'challenger m v2 is worse than champion v1: roll back v2')
        """
        verdict, action = ("better", "promote") if better else ("worse", "roll back")
        message = (f"challenger {model_id} v{challenger} is {verdict} than champion v{champion}: "
                   f"{action} v{challenger}")
        details = {**evidence, "champion": champion, "challenger": challenger,
                   "recommendation": "promote" if better else "roll_back"}
        return RetrainTrigger(
            trigger_id=trigger_id(model_id, challenger, TriggerReason.COMPARISON, evidence_start_ms, time_ms,
                                  note=f"champion {champion}"),
            model_id=model_id, model_version=challenger, reason=TriggerReason.COMPARISON, message=message,
            window_start=evidence_start_ms, window_end=time_ms, triggered_at=time_ms,
            evidence={**details, "config_hash": self.config_hash}, config_hash=self.config_hash,
            run_id=self.run_id,
        )

    def _fires(self, family: _Family, holds: bool, clear: bool, now_ms: int) -> bool:
        """Hysteresis and cooldown of one family: whether its condition fires now."""
        if not holds:
            if clear:
                family.armed = True
            return False
        if not family.armed or not self._cooled(family.last_fired, now_ms):
            return False
        family.armed = False
        family.last_fired = now_ms
        return True

    # -- helpers -----------------------------------------------------------------------------

    def _cooled(self, last_fired: int | None, now_ms: int) -> bool:
        return last_fired is None or now_ms - last_fired >= self.cfg.cooldown_s * 1000

    def _trigger(self, model_id: str, model_version: str, reason: TriggerReason, start: int, end: int,
                 at: int, message: str, details: dict[str, Any], note: str = "") -> RetrainTrigger:
        evidence = {**details, "thresholds": self._thresholds, "config_hash": self.config_hash}
        return RetrainTrigger(
            trigger_id=trigger_id(model_id, model_version, reason, start, end, note),
            model_id=model_id, model_version=model_version, reason=reason, message=message,
            window_start=start, window_end=end, triggered_at=at, evidence=evidence,
            config_hash=self.config_hash, run_id=self.run_id,
        )
