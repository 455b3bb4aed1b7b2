"""Stage 2: shard-level drift episode reports merged into one episode per (model, version, feature).

Stage-1 shards each watch a disjoint part of a model's traffic with their own episode monitors
(:mod:`driftline.operators.episodes`), so one lasting shift opens an episode on every shard. The
:class:`EpisodeMerger` turns their reports into ONE model-level episode:

* it **opens** at the first shard's ``opened`` (in canonical order, below);
* a shard that opens while it is open joins it (the same change, seen in another part of the
  traffic); the episode **escalates** when a shard reports its k-th escalation *in a unit* (a
  further change, tested by the shard's monitor against the regime it learned: larger by the
  minimum effect, or a reversal, or a change of kind; its unit says what changed: the location,
  ``sd``, or the spread, ``sd_ratio``) and the episode has fewer than k escalations in that unit.
  Every shard sees the same further change, each with its own noisy estimate of it: counting
  changes rather than comparing estimates makes a change one escalation, not one per shard (or
  per shard whose estimate happened to be higher). Counting them by unit keeps one shard's
  escalation of one kind from standing for another shard's of another kind (NOAA feat_4 during
  development: one shard's spurious spread, x1.15 on a cycle, stood for the fault's growing
  shift on the others); within a unit, a shard's k-th escalation that no other shard sees still
  stands for the others' k-th (the row has told an escalation in that unit already). A shard
  that closed and opens again while the episode is open, on a change of a kind (unit) the
  episode was neither opened nor escalated in (by any shard), escalates it too (reason ``kind``: a sensor that
  sticks in part of the traffic while other shards still read the old shift);
* it **closes** when every shard that joined it has closed (``back_to_reference``), or at once
  when a shard switched to a newer training profile (``new_profile``: a shard's report of that
  close, or any report from the newer profile; reports from the older one are ignored from then
  on);
* ``status`` reports (a shard's open episode sampled on the event-time grid) keep ``last_seen``,
  ``events_seen`` and ``magnitude`` current. A numeric feature's change is in location (unit
  ``sd``) or in scale (``sd_ratio``, e.g. 0 for a stuck sensor), as each shard's state reads it:
  its opening, statuses and closing, and its escalations in the unit its state reads. An
  escalation in another unit tells that change (a location episode telling its spread: its
  ``drift_alerts`` row reads x3 in ``sd_ratio``) but is not the shard's state, which still reads
  the location (if the state did change kind, the shard's next status says so). The row keeps
  the unit it showed until another unit holds a clear majority of the open shards' weight (values
  seen in the episode): more than ``UNIT_MAJORITY`` (1.5) times the weight reading the shown unit
  (all of it when no open shard reads the shown unit any more), judged against the unit the row
  showed at the end of the previous bucket; it opens in its first shard's unit. Two shards of
  four in each unit, their weights a few values apart, would otherwise move the row back and
  forth with every status; a user reads one unit until most of the traffic reads another. (A
  shard's own reading keeps its unit too, see ``EpisodeMonitor._shown``.) Its magnitude is the
  weighted mean of the readings in that unit; its peak the furthest from "as in the reference"
  any shard read in that unit during the episode (kept per unit, so a row whose shards' weights
  move it between units and back loses no peak). All three are functions of the shards'
  readings and the unit shown before the bucket, not of the order the bucket's reports came in.

Determinism: reports are buffered and applied in the order ``(event_time, feature, shard, count,
kind)`` only once the clock (every shard's progress) has passed the end of their grid bucket, and
an episode's row is written once per bucket in which it changed, with the bucket's end as the
row version (a ReplacingMergeTree keeps the latest). Rows and events are therefore a function of
the reports alone, not of how they interleave or are batched; a report re-sent by a restarted
shard is recognised by its key or by its time (already applied) and ignored.

>>> merger = EpisodeMerger(grid_ms=1000, source="features")
>>> def report(shard, kind, t, count, magnitude, reason=""):
...     return {"shard": shard, "model_id": "m", "model_version": "1", "feature": "x",
...             "feature_kind": "numeric", "unit": "sd", "kind": kind, "reason": reason,
...             "event_time": t, "count": count, "magnitude": magnitude, "peak_magnitude": magnitude,
...             "component": "mean+0.5", "statistic": 14.0, "threshold": 13.8, "prediction_id": "p",
...             "reference_id": "r1", "reference_from": 0, "arl": 1e6}
>>> for r in [report(0, "opened", 100, 50, 0.5), report(1, "opened", 300, 40, 0.6),
...           report(0, "escalated", 1500, 900, 1.5, "larger"),
...           report(1, "escalated", 1600, 800, 1.4, "larger"),
...           report(0, "closed", 2100, 2000, 0.0, "back_to_reference")]:
...     merger.add(r)
>>> out = merger.advance(3000)
>>> [(e["event_kind"], e["shard"], e["reason"]) for e in out.events]
[('opened', 0, 'alarm'), ('escalated', 0, 'larger')]
>>> [(r["status"], r["escalations"], r["shards"], r["version"]) for r in out.rows]
[('open', 0, [0, 1], 1000), ('open', 1, [0, 1], 2000), ('open', 1, [0, 1], 3000)]
>>> merger.add(report(1, "closed", 3200, 1800, 0.0, "back_to_reference"))
>>> closed = merger.advance(4000)
>>> closed.rows[0]["status"], closed.rows[0]["closed_at"], closed.events[0]["event_kind"]
('closed', 3200, 'closed')
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from driftline.pipeline.to_rows import EpisodeRowContext, drift_alert_row, drift_episode_row

# Report kinds in the order they apply when everything else ties: an event before the status
# sampled after it.
_KIND_ORDER = {"opened": 0, "escalated": 1, "closed": 2, "status": 3}
# The value of each unit that means "as in the reference"; ratios compare by their log.
_NEUTRAL = {"sd": 0.0, "sd_ratio": 1.0, "rate_ratio": 1.0, "psi": 0.0}
_RATIOS = {"sd_ratio"}
# A row's unit changes only when another unit's weight is more than this many times the shown
# unit's (60 % of the two): hysteresis against shards whose weights are about even (2 of 4
# shards in each unit: kept; 3 of 4, or 2 of 3: changed).
UNIT_MAJORITY = 1.5

ModelKey = tuple[str, str]
EpisodeKey = tuple[str, str, str]  # model_id, model_version, feature


def report_key(r: Mapping[str, Any]) -> tuple[Any, ...]:
    """Identity of a shard-level report: a re-sent report has the same key."""
    return (int(r["shard"]), r["feature"], r["reference_id"], int(r["count"]), r["kind"])


def _order(r: Mapping[str, Any]) -> tuple[Any, ...]:
    return (int(r["event_time"]), r["feature"], int(r["shard"]), int(r["count"]), _KIND_ORDER[r["kind"]])


def _hash(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


@dataclass
class _ShardPart:
    """One shard's share of a model-level episode."""

    open: bool
    opened_count: int  # the shard's count at its (latest) opening
    seen_before: int  # values seen in earlier openings of this shard within the episode
    count: int  # the shard's count at its latest report
    magnitude: float  # the shard's latest reading of the change (its state), in ``unit``
    escalations: int = 0  # the shard's own escalations within the episode, in any unit
    unit: str = ""  # of magnitude; "" (a checkpoint from before units could change): the episode's
    # the shard's own escalations by the unit they read the change in (None: a checkpoint from
    # before escalations were counted by unit; see escalated)
    by_unit: dict[str, int] | None = None

    @property
    def seen(self) -> int:
        return self.seen_before + self.count - self.opened_count + 1

    def escalated(self, unit: str) -> dict[str, int]:
        """The shard's escalations by unit (an old checkpoint's count read as in ``unit``)."""
        if self.by_unit is None:
            self.by_unit = {unit: self.escalations} if self.escalations else {}
        return self.by_unit


@dataclass
class Episode:
    """A model-level drift episode (one row of ``drift_episodes``)."""

    episode_id: str
    model_id: str
    model_version: str
    feature: str
    feature_kind: str
    unit: str
    reference_id: str
    reference_from: int
    arl: float
    opened_at: int
    opening: dict[str, Any]
    last_seen: int = 0
    magnitude: float = 0.0
    peak_magnitude: float = 0.0
    escalations: int = 0
    escalation: dict[str, Any] = field(default_factory=dict)
    closed_at: int | None = None
    close_reason: str = ""
    n_events: int = 0  # events logged for this episode (numbers their ids)
    parts: dict[int, _ShardPart] = field(default_factory=dict)
    # Units the change was opened or escalated in: a shard back in the episode reading another is
    # a change of kind (empty: a checkpoint from before; then the row's unit).
    kinds: tuple[str, ...] = ()
    # The episode's escalations by the unit they read the change in: in each, the most any one
    # shard reported (None: a checkpoint from before; see escalated).
    by_unit: dict[str, int] | None = None
    # The largest reading any shard reported in each unit (a ratio's by its log): the row's
    # peak is its unit's (None: a checkpoint from before; see peaks).
    peak_by_unit: dict[str, float] | None = None
    # The unit of the row written at the end of the previous bucket: the unit a reading must hold
    # a clear majority against to change the row's ("": a checkpoint from before; then its unit).
    shown_unit: str = ""

    def escalated(self) -> dict[str, int]:
        """Escalations by unit (an old checkpoint's read as in the unit it opened in)."""
        if self.by_unit is None:
            self.by_unit = {self.opened_unit: self.escalations} if self.escalations else {}
        return self.by_unit

    def peaks(self) -> dict[str, float]:
        """Peak readings by unit (an old checkpoint's row peak read as in its row's unit)."""
        if self.peak_by_unit is None:
            self.peak_by_unit = {self.unit: self.peak_magnitude}
        return self.peak_by_unit

    @property
    def opened_unit(self) -> str:
        return self.kinds[0] if self.kinds else self.unit


@dataclass
class MergeOutput:
    """What applying reports produced: ``drift_episodes`` rows, ``drift_alerts`` rows (the
    episode events opened / escalated / closed), in order."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: MergeOutput) -> None:
        self.rows.extend(other.rows)
        self.events.extend(other.events)


class EpisodeMerger:
    """Model-level drift episodes from shard-level reports (see module docstring).

    ``grid_ms``: the event-time grid on which reports are applied and rows written (stage 2's
    window grid for features, its outcome interval for the error stream). ``source``:
    ``features`` or ``errors`` (copied to rows).
    """

    def __init__(self, grid_ms: int, source: str, run_id: str = "",
                 config_hash: str = "") -> None:
        if grid_ms <= 0:
            raise ValueError("grid_ms must be positive")
        self.grid_ms = grid_ms
        self.source = source
        self.run_id = run_id
        self.config_hash = config_hash
        self.pending: dict[ModelKey, dict[tuple[Any, ...], dict[str, Any]]] = defaultdict(dict)
        self.applied_until: dict[ModelKey, int] = {}
        self.floor = -(2**62)  # applied_until of every model (the clock of advance without a model)
        self.open: dict[EpisodeKey, Episode] = {}
        self.reference: dict[ModelKey, tuple[int, str]] = {}  # newest (effective_from, id) reported
        self.retired: set[tuple[ModelKey, tuple[int, str]]] = set()  # replaced by a newer profile
        self.duplicates = 0
        self.stale = 0  # reports from a training profile that a newer one replaced

    # -- input -------------------------------------------------------------------------------

    def add(self, report: Mapping[str, Any]) -> None:
        """Buffer one shard-level report until the clock passes its bucket."""
        model = (str(report["model_id"]), str(report["model_version"]))
        if int(report["event_time"]) < self._until(model):
            self.duplicates += 1  # re-sent by a restarted shard after it was applied
            return
        pending = self.pending[model]
        key = report_key(report)
        if key in pending:
            self.duplicates += 1
            return
        pending[key] = dict(report)

    def _until(self, model: ModelKey) -> int:
        return max(self.floor, self.applied_until.get(model, self.floor))

    def is_open(self, model_id: str, model_version: str, feature: str) -> bool:
        return (model_id, model_version, feature) in self.open

    def open_count(self) -> int:
        return len(self.open)

    # -- the clock ---------------------------------------------------------------------------

    def advance(self, until: int, model: ModelKey | None = None) -> MergeOutput:
        """Apply the buffered reports of every grid bucket that ends at or before ``until`` (of
        one model, or of all); returns the rows and events, bucket by bucket."""
        boundary = until - until % self.grid_ms
        out = MergeOutput()
        models = [model] if model is not None else sorted(self.pending)
        for m in models:
            pending = self.pending.get(m)
            if not pending:
                continue
            due = sorted((r for r in pending.values() if int(r["event_time"]) < boundary), key=_order)
            if not due:
                continue
            for key in [report_key(r) for r in due]:
                del pending[key]
            bucket_end: int | None = None
            changed: dict[str, Episode] = {}  # by episode id: one closes, the next opens
            for r in due:
                t = int(r["event_time"])
                end = t - t % self.grid_ms + self.grid_ms
                if end != bucket_end:
                    if bucket_end is not None:
                        out.rows.extend(self._rows(changed, bucket_end))
                    bucket_end, changed = end, {}
                self._apply(r, changed, out)
            if bucket_end is not None:
                out.rows.extend(self._rows(changed, bucket_end))
        if model is None:
            self.floor = max(self.floor, boundary)
        else:
            self.applied_until[model] = max(self._until(model), boundary)
        return out

    def _rows(self, changed: dict[str, Episode], version: int) -> list[dict[str, Any]]:
        rows = []
        for episode in sorted(changed.values(), key=lambda e: (e.feature, e.opened_at, e.episode_id)):
            rows.append(self._row(episode, version))
            episode.shown_unit = episode.unit
            key = (episode.model_id, episode.model_version, episode.feature)
            if episode.closed_at is not None and self.open.get(key) is episode:
                del self.open[key]
        return rows

    # -- applying one report -----------------------------------------------------------------

    def _apply(self, r: dict[str, Any], changed: dict[str, Episode], out: MergeOutput) -> None:
        model = (str(r["model_id"]), str(r["model_version"]))
        key = (*model, str(r["feature"]))
        reference = (int(r["reference_from"]), str(r["reference_id"]))
        newest = self.reference.get(model)
        if (newest is not None and reference < newest) or (model, reference) in self.retired:
            self.stale += 1
            return
        self.reference[model] = reference
        episode = self.open.get(key)
        if episode is not None and episode.closed_at is None and (
                (episode.reference_from, episode.reference_id) < reference):
            self._close(episode, r, "new_profile", out)
            changed[episode.episode_id] = episode
            episode = None
        if episode is not None and episode.closed_at is not None:
            episode = None  # closed earlier in this bucket; its row is still to be written
        kind = r["kind"]
        shard = int(r["shard"])
        count = int(r["count"])
        magnitude = float(r["magnitude"])
        if episode is None:
            if kind != "opened":
                return  # a shard's report on an episode the model-level one no longer covers
            unit = str(r["unit"])
            episode = Episode(
                episode_id=_hash(self.source, *key, r["reference_id"], shard, count, r["event_time"]),
                model_id=model[0], model_version=model[1], feature=key[2],
                feature_kind=str(r["feature_kind"]), unit=unit,
                reference_id=str(r["reference_id"]), reference_from=int(r["reference_from"]),
                arl=float(r["arl"]), opened_at=int(r["event_time"]), opening=_evidence(r),
                magnitude=magnitude, peak_magnitude=magnitude, kinds=(unit,), by_unit={},
                peak_by_unit={}, shown_unit=unit,
            )
            self.open[key] = episode
            changed[episode.episode_id] = episode
            episode.parts[shard] = _ShardPart(True, count, 0, count, magnitude, unit=unit, by_unit={})
            episode.last_seen = int(r["event_time"])
            self._saw(episode, unit, r)
            self._event(episode, "opened", r, "alarm", out)
            return
        changed[episode.episode_id] = episode
        episode.last_seen = max(episode.last_seen, int(r["event_time"]))
        part = episode.parts.get(shard)
        unit = str(r.get("unit") or episode.unit)
        kinds = episode.kinds or (episode.unit,)
        changed_in = _changed_in(r, unit)
        if kind == "opened":
            if part is None:
                part = episode.parts[shard] = _ShardPart(True, count, 0, count, magnitude, unit=unit,
                                                         by_unit={})
            elif not part.open:
                part.seen_before, part.open, part.opened_count = part.seen, True, count
                if unit not in kinds:
                    # the shard was back to the reference and opens again on a change of another
                    # kind while others hold the episode open (NOAA feat_1: a shard's spurious
                    # shift closed, then the sensor stuck): a further change, not the same one;
                    # the shard's count in that unit starts from the episode's, so it is one
                    kind, r, changed_in = "escalated", {**r, "reason": "kind"}, unit
                    own = part.escalated(episode.opened_unit)
                    own[unit] = max(own.get(unit, 0), episode.escalated().get(unit, 0))
        if part is None or not part.open:
            return  # the shard's own episode closed, or was opened under the previous one
        part.count = count
        if r["kind"] != "escalated" or unit == (part.unit or episode.unit):
            # the shard's state: its opening, status and closing read it, and so does an escalation
            # in the unit it reads. An escalation in another unit tells that change (a location
            # episode telling its spread, x3) while the shard's state still reads the location; if
            # its state did change kind (a shift that then sticks), its next status says so.
            part.magnitude, part.unit = magnitude, unit
        self._saw(episode, unit, r)
        if kind == "closed":
            part.open = False
            if r["reason"] == "new_profile" or not any(p.open for p in episode.parts.values()):
                if r["reason"] != "new_profile":
                    # the closed row reads its shards' closing estimates, not the last status of
                    # the shards that were open before (NOAA feat_3 closed back_to_reference at
                    # +1.56 sd)
                    self._read(episode)
                self._close(episode, r, str(r["reason"]), out)
            return
        self._read(episode)
        if kind == "escalated":
            # counted by what changed (_changed_in): every shard sees the same further change, so
            # in each the episode has escalated as often as the shard that escalated most in it;
            # one shard's escalation of one (its spread told) does not stand for another's of
            # another (the shift growing)
            own = part.escalated(episode.opened_unit)  # before the total moves (old checkpoints)
            part.escalations += 1
            own[changed_in] = own.get(changed_in, 0) + 1
            escalated = episode.escalated()
            if own[changed_in] > escalated.get(changed_in, 0):
                escalated[changed_in] = own[changed_in]
                reason = str(r["reason"])
                # any reason: a change escalated in a unit is a kind of change the episode has
                # told (by reason "kind" only, which of two shards' escalations in one unit came
                # first decided whether it was)
                if changed_in not in kinds:
                    episode.kinds = (*kinds, changed_in)
                episode.escalations += 1
                episode.escalation = {"at": int(r["event_time"]), "reason": reason, **_evidence(r)}
                self._event(episode, "escalated", r, reason, out)

    @staticmethod
    def _saw(episode: Episode, unit: str, r: Mapping[str, Any]) -> None:
        """A shard's report's readings (its magnitude and its own peak) in ``unit``: the episode's
        peak in that unit is the furthest from "as in the reference" any shard read."""
        peaks = episode.peaks()
        for value in (float(r["magnitude"]), float(r.get("peak_magnitude", r["magnitude"]))):
            if math.isfinite(value) and (unit not in peaks or _size(unit, value) > _size(unit, peaks[unit])):
                peaks[unit] = value
        episode.peak_magnitude = peaks.get(episode.unit, episode.magnitude)

    @staticmethod
    def _read(episode: Episode) -> None:
        """The row's unit, magnitude and peak from its shards' readings: the unit it showed at the
        end of the previous bucket unless another holds a clear majority of the open shards'
        weight (the heaviest other; the one the episode opened in on a tie), their weighted mean
        in it, and the furthest reading any shard gave in it. A function of the readings and the
        unit shown before the bucket, not of the order the bucket's reports came in."""
        parts = [p for p in episode.parts.values() if p.open] or list(episode.parts.values())
        by_unit: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for p in parts:
            by_unit[p.unit or episode.unit].append((max(p.count - p.opened_count + 1, 1), p.magnitude))
        if not episode.shown_unit:
            episode.shown_unit = episode.unit  # a checkpoint from before: its row's unit
        unit = _majority_unit({u: sum(w for w, _ in ws) for u, ws in by_unit.items()},
                              episode.shown_unit, episode.opened_unit)
        weighted = by_unit[unit]
        # fsum: exactly rounded, so the same whatever order the shards joined in
        episode.unit = unit
        episode.magnitude = math.fsum(w * m for w, m in weighted) / sum(w for w, _ in weighted)
        episode.peak_magnitude = episode.peaks().get(unit, episode.magnitude)

    def _close(self, episode: Episode, r: Mapping[str, Any], reason: str, out: MergeOutput) -> None:
        if reason == "new_profile":
            model = (episode.model_id, episode.model_version)
            self.retired.add((model, (episode.reference_from, episode.reference_id)))
        for part in episode.parts.values():
            part.open = False
        episode.closed_at = int(r["event_time"])
        episode.last_seen = max(episode.last_seen, episode.closed_at)
        episode.close_reason = reason
        self._event(episode, "closed", r, reason, out)

    def _event(self, episode: Episode, kind: str, r: Mapping[str, Any], reason: str,
               out: MergeOutput) -> None:
        episode.n_events += 1
        alert_id = _hash(episode.episode_id, episode.n_events)
        out.events.append(drift_alert_row(self._row_context(), alert_id, episode, kind, reason, r))

    def _row(self, e: Episode, version: int) -> dict[str, Any]:
        return drift_episode_row(self._row_context(), e, version)

    def _row_context(self) -> EpisodeRowContext:
        return EpisodeRowContext(self.run_id, self.source, self.config_hash)


def _majority_unit(weights: Mapping[str, int], shown: str, opened: str) -> str:
    """The unit a row reads given each unit's weight: ``shown`` until the heaviest other unit
    (``opened`` first, then by name, on a tie) weighs more than ``UNIT_MAJORITY`` times it.

    >>> _majority_unit({"sd": 100, "sd_ratio": 140}, "sd", "sd")  # about even: kept
    'sd'
    >>> _majority_unit({"sd": 100, "sd_ratio": 200}, "sd", "sd")  # a clear majority
    'sd_ratio'
    >>> _majority_unit({"sd_ratio": 5}, "sd", "sd")  # no open shard reads the shown unit
    'sd_ratio'
    """
    others = sorted(u for u in weights if u != shown)
    if not others:
        return shown
    heaviest = max(others, key=lambda u: (weights[u], u == opened))
    return heaviest if weights[heaviest] > UNIT_MAJORITY * weights.get(shown, 0) else shown


def _size(unit: str, value: float) -> float:
    """How far ``value`` is from "as in the reference" in ``unit`` (a ratio by its log)."""
    if unit in _RATIOS:
        return abs(math.log(max(value, 1e-12)))
    return abs(value - _NEUTRAL.get(unit, 0.0))


def _changed_in(r: Mapping[str, Any], unit: str) -> str:
    """What a shard's escalation says changed, as a unit: a numeric feature's location (``sd``)
    or spread (``sd_ratio``), else the report's unit. The CUSUM confirmed by a replicate says
    which (a mean CUSUM's escalation is measured by the shift even when its values read in
    ``sd_ratio``: elec2's nswprice, a scale episode, escalated on one drop in price as -1.72 sd on
    one shard and x2.44 on another); a change of kind, and a learned sample's escalation (no
    component), by the unit it reads."""
    if unit not in ("sd", "sd_ratio") or r.get("reason") == "kind":
        return unit
    component = str(r.get("component", ""))
    if component.startswith("mean"):
        return "sd"
    if component.startswith("scale"):
        return "sd_ratio"
    return unit


def _evidence(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"shard": int(r["shard"]), "component": str(r["component"]), "statistic": float(r["statistic"]),
            "threshold": float(r["threshold"]), "prediction_id": str(r["prediction_id"])}
