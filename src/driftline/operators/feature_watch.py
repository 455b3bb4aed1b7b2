"""Drift episode monitors wired to reference profiles: one bank per (model, version) and stream.

:class:`FeatureWatch` keeps, for every model a stream (a stage-1 shard) sees, one
:class:`~driftline.operators.episodes.EpisodeMonitor` per profiled feature and turns what they
see into *episode reports*: the monitors' events (``opened`` / ``escalated`` / ``closed``) and,
while an episode is open, a ``status`` report each time the stream's event time crosses the
``status_grid_ms`` grid (the episode's values seen and current magnitude), so the episode's row is
kept current while the shift persists. :class:`ErrorWatch` does the same for a classifier's error
stream. Stage 2 merges the reports of all shards into one episode per (model, version, feature)
(:mod:`driftline.pipeline.episodes`).

False alarms are budgeted per model: ``false_alarms_per_million`` over *all* of the model's
features, so each feature's monitor gets the run length ``feature_arl(10**6 / rate, F)``
(Bonferroni over features). Shards see disjoint parts of a model's traffic, so splitting the
stream over shards does not change the budget: the alarm rate is per event, wherever it is
watched. A lasting shift is one episode, so reports are bounded by construction: per feature and
shard, one event per change and one status per grid interval while an episode is open.

A report's ``event_time`` is the largest event time the model's stream has shown on this shard up
to the value it reports on (events may arrive slightly out of order): it never decreases along the
stream, so stage 2 can order reports by time without reordering one shard's reports, and it is
never before the shard's watermark (so never behind the progress the shard already announced). A
status is timed by the event that crossed the grid line and reports the values before it.

Which profile applies: the newest *training* profile whose ``effective_from_ms`` is at or before
the event time. A model's bank only ever moves forward to a newer profile (an event slightly out
of order does not switch back); switching closes the open episodes (reason ``new_profile``) and
starts fresh monitors. Events before any profile is effective are not watched. All of this is a
function of the order events are observed in, never of how they are batched, so a restored shard
reproduces the same reports.

>>> from driftline.operators.profile import build_profile
>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> profile = build_profile("m", "1", {"x": rng.normal(size=5000)}, label_column=None,
...                         prediction_column=None, bins=10, top_k=5, created_at_ms=0)
>>> watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000)
>>> watch.add_profile(profile)
True
>>> quiet = [{"x": float(v)} for v in rng.normal(size=2000)]
>>> watch.observe("m", "1", list(range(2000)), [f"p{i}" for i in range(2000)], quiet)
[]
>>> shifted = [{"x": float(v)} for v in rng.normal(1.0, 1.0, size=4000)]
>>> reports = watch.observe("m", "1", list(range(2000, 6000)), [f"q{i}" for i in range(4000)], shifted)
>>> [(r["kind"], r["event_time"]) for r in reports if r["kind"] != "status"][0][0]
'opened'
>>> opened = reports[0]
>>> opened["event_time"] < 2200, round(opened["magnitude"]), opened["unit"]
(True, 1, 'sd')
>>> [r["event_time"] for r in reports if r["kind"] == "status"]   # once a second while open
[3000, 4000, 5000]
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import pickle
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, pairwise
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from driftline.operators import watch_native
from driftline.operators.episodes import (
    DEFAULT_LEARNING,
    DEFAULT_MIN_EFFECT_SD,
    DEFAULT_MIN_RATE_RATIO,
    EpisodeEvent,
    EpisodeMonitor,
    count_quiet,
)
from driftline.operators.feature_rows import FeatureRows, positions
from driftline.operators.float_block import FloatBlock
from driftline.operators.profile import FeatureProfile, ReferenceProfile
from driftline.operators.seasonal import reference_size, standardise
from driftline.operators.sequential import feature_arl
from driftline.operators.window_stats import MAX_ABS_VALUE, valid_numbers

ERROR_FEATURE = "__error__"
_T = TypeVar("_T")
log = logging.getLogger(__name__)
NO_TIME = -(2**62)
PER_VALUE_BELOW = 8
"""Runs of fewer values are fed value by value: a batch call costs ~25 us whatever its size, a
value ~3 us (measured), and with many models most runs are a model's one or two events. The
monitors' results do not depend on how a stream is chunked."""
HELD_PER_VALUE_BELOW = 24
"""A model's held events are fed value by value below this many (a quiet model's at a grid line's
flush), as a batch from it. Its monitors wait on most of its values (deferred, see
:meth:`~driftline.operators.sequential.SequentialDetector.defer_each`), and a bank's batch first
settles what each waits for, so a 25-feature bank's batch costs ~700-900 CPU-us at any size up
to ~30 events, value by value ~200 plus ~30 an event (docs/scaling.md, "Held events value by
value"). The state is the same either way: a run this short grows a monitor's ring of recent
symbols by one doubling at most, as a batch grows it (it is below the ring's first size,
:data:`~driftline.operators.episodes.RING_FIRST`)."""
BATCH_EVENTS = 256
"""What a stage-1 shard's watch holds of a model before feeding it (``batch_events``): a model's
few events of a shard batch wait, in stream order, until this many make one vectorised batch (or
a flush point comes, :meth:`FeatureWatch.flush_due`). A bank's batch costs ~450-700 CPU-us
whatever its size up to a few hundred events when its objects are cold, as with many models they
are (the ``--shard`` run's last line below), so the busier models' batches are made large; what
a model holds is bounded by its traffic between two grid lines either way, and nothing it holds
is reported later than the grid line.
``bench/bench_feature_watch_groups.py --shard 300 64 128 256``: 11.91 / 10.51 / 9.12 CPU-us an
event against one model's 1.70 (docs/detectors.md, Per-value speed)."""


_PROFILES: weakref.WeakValueDictionary[tuple[str, int, tuple[str, ...]], ReferenceProfile] = \
    weakref.WeakValueDictionary()


def shared_profile(profile: ReferenceProfile) -> ReferenceProfile:
    """The process's one live copy of a profile equal to ``profile`` (``profile`` itself if none).

    A parsed 25-feature profile holds ~135 KB of Python objects, and every stage-1 shard, stage 2
    and a restore each parse their own: with 1,000 models that alone is ~0.7 GB. Profiles are
    never changed in place (a different one is a copy), so equal ones are held once.

    >>> from driftline.operators.profile import build_profile
    >>> a = build_profile("m", "1", {"x": [1.0, 2.0, 3.0]}, label_column=None,
    ...                   prediction_column=None, bins=2, top_k=2, created_at_ms=0)
    >>> b = a.model_copy(deep=True)
    >>> shared_profile(a) is a, shared_profile(b) is a
    (True, True)
    """
    # the id hashes everything else; the names tell the multivariate watch's copy (same id, its one
    # feature) from the profile, so neither displaces the other
    key = (profile.profile_id, profile.created_at_ms, tuple(profile.features))
    known = _PROFILES.get(key)
    if known is not None and known == profile:
        return known
    _PROFILES[key] = profile
    return profile


def episode_report(
    feature: str,
    feature_kind: str,
    monitor: EpisodeMonitor,
    event: EpisodeEvent | None,
    event_time: int,
    prediction_id: str,
    reference_id: str,
    reference_from: int,
) -> dict[str, Any]:
    """One report for stage 2: a monitor's event, or (``event`` None) its open episode's status."""
    kind: str
    if event is not None:
        kind, reason, count = event.kind, event.reason, event.index + 1
        magnitude = peak = event.magnitude
        unit = event.unit  # a numeric change reads as a location (sd) or a scale (sd_ratio) one
        component, statistic, threshold = event.component, event.statistic, event.threshold
    else:
        state = monitor.episode
        assert state is not None
        kind, reason, count = "status", "", monitor.n
        magnitude, peak, unit = state.magnitude, state.peak_magnitude, state.unit
        component, statistic, threshold = "", 0.0, 0.0
    return {
        "kind": kind,
        "reason": reason,
        "feature": feature,
        "feature_kind": feature_kind,
        "unit": unit,
        "event_time": int(event_time),
        "count": int(count),
        "magnitude": float(magnitude),
        "peak_magnitude": float(peak),
        "component": component,
        "statistic": float(statistic),
        "threshold": float(threshold),
        "prediction_id": prediction_id,
        "reference_id": reference_id,
        "reference_from": int(reference_from),
        "arl": float(monitor.arl),
    }


@dataclass
class ProfileMonitors:
    """The episode monitors of one model's active profile, one per feature (by name)."""

    profile_index: int
    """Position of the profile among the model's known profiles (they only move forward)."""
    profile: ReferenceProfile
    monitors: dict[str, EpisodeMonitor]

    @functools.cached_property
    def numeric(self) -> list[str]:
        """The features whose monitors read numbers, in the monitors' order: asked for at every
        group of a model's events held or fed (with many models, several times a prediction)."""
        return [name for name, monitor in self.monitors.items() if monitor.kind == "numeric"]

    @functools.cached_property
    def others(self) -> list[str]:
        """The features whose monitors read values as they are (categorical, rates), in the
        monitors' order: asked for as often as :attr:`numeric`."""
        return [name for name, monitor in self.monitors.items() if monitor.kind != "numeric"]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("numeric", None)  # derived: checkpoints hold the monitors only, as before
        state.pop("others", None)
        return state


_Bank = ProfileMonitors  # its name in checkpoints written before it was public


@dataclass(frozen=True, slots=True)
class _FreshBank:
    features: Mapping[str, Any]  # the profile's features the monitors were built from
    monitors: bytes  # the new bank's monitors, pickled


FRESH_BANKS = 32
"""New banks kept (pickled) per process, the most recently used: every shard of a worker builds a
model's bank when the model's first events reach it (~10 ms for 25 features: the per-feature
designs), a copy of the first costs ~1 ms. A copy is what a restore from a checkpoint would give,
so the monitors behave alike."""
_FRESH_BANKS: OrderedDict[tuple[str, tuple[str, ...], float, float, int], _FreshBank] = OrderedDict()
TEMPLATE_PROTOCOL = 4
"""Pickle protocol of the new banks kept: protocol 5 loads each array as a view on a buffer of its
own (~650 bytes for a CUSUM bank's 6 thresholds, against ~170 owning its data under 4), and a
monitor holds 5 such arrays: a copied 25-feature bank is ~139 KB live under 5, ~78 KB under 4 (and
loads ~15 % faster), once per shard and model."""


RUN_EVENTS = 32_768
"""Events of the grouped batches a watch's held runs may point into (see
:meth:`FeatureWatch.observe_grouped`) before every run is copied out: the runs keep their batches'
columns alive, ~10 MB at 25 features, and the copy costs about one hold per model holding runs."""


class GroupedEvents:
    """A stage-1 batch's events of many models as one set of columns, each model's events a run of
    rows in stream order (run ``g`` of ``keys[g]`` is rows ``starts[g]:starts[g + 1]``): what
    :meth:`FeatureWatch.observe_grouped` reads. ``floats``: the features whose values are all
    floats, one row each (None without any); ``values``: every other feature's values (and those
    of a float feature some event lacks). A feature in neither is absent from every event.

    >>> grouped = GroupedEvents([("m", "1"), ("n", "1")], [0, 1, 3], [5, 6, 7], ["a", "b", "c"],
    ...                         FloatBlock(("x",), np.array([[1.0, 2.0, 3.0]])), {"c": ["u", "v", "w"]})
    >>> floats, values = grouped.columns(1, 3)
    >>> floats["x"].tolist(), values
    ([2.0, 3.0], {'c': ['v', 'w']})
    """

    __slots__ = ("floats", "ids", "keys", "starts", "times", "values")

    def __init__(self, keys: Sequence[tuple[str, str]], starts: Sequence[int], times: list[int],
                 ids: list[str], floats: FloatBlock | None, values: Mapping[str, list[Any]]) -> None:
        self.keys, self.starts, self.times, self.ids = keys, starts, times, ids
        self.floats, self.values = floats, values

    def columns(self, lo: int,
                hi: int) -> tuple[Mapping[str, npt.NDArray[np.float64]], dict[str, Sequence[Any]]]:
        """Rows ``lo:hi``'s float block and value lists, as :meth:`FeatureWatch.observe` takes them."""
        return run_columns(self.floats, self.values, lo, hi)

    def same_layout(self, other: GroupedEvents) -> bool:
        """Whether runs of both join as one block: the same float features, the same others."""
        mine, theirs = self.floats, other.floats
        return other is self or ((mine.names if mine else None) == (theirs.names if theirs else None)
                                 and list(self.values) == list(other.values))


def _monitored_reference(profile: ReferenceProfile, name: str) -> tuple[FeatureProfile, int | None]:
    """What feature ``name``'s monitor is built from, and the reference size it counts as (None:
    the profile's own ``n``): a seasonal feature's monitor watches its standardised values against
    their residual profile."""
    season = profile.season
    if season is not None and name in season.features:
        return season.features[name].residual, reference_size(season, season.features[name])
    return profile.features[name], None


def run_columns(floats: FloatBlock | None, values: Mapping[str, Sequence[Any]], lo: int,
                hi: int) -> tuple[Mapping[str, npt.NDArray[np.float64]], dict[str, Sequence[Any]]]:
    """Events ``lo:hi`` of a batch's float block (a block of their own: a copy, so a model's part
    does not keep the batch's matrix) and of its value lists (slices)."""
    block: Mapping[str, npt.NDArray[np.float64]] = {} if floats is None else \
        FloatBlock(floats.names, floats.matrix[:, lo:hi])
    return block, {name: column[lo:hi] for name, column in values.items()}


@dataclass
class _Held:
    """A model's events held back for one batch, in stream order: what its bank's monitors read
    of them (numeric features as float64 columns, a :class:`FloatBlock` or a dict of them; the
    others' values), a part per call; then ``runs``, the rows of grouped batches held since, not
    yet copied out (:meth:`settle`; a pickle holds them settled)."""

    since: int
    """Running time of the first event held: no report on these events is timed earlier."""
    times: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    numbers: list[Mapping[str, npt.NDArray[np.float64]]] = field(default_factory=list)
    values: list[Mapping[str, list[Any]]] = field(default_factory=list)
    runs: list[tuple[GroupedEvents, int, int]] = field(default_factory=list)
    run_rows: int = 0
    """Events of ``runs``: their times and ids join ``times`` and ``ids`` when the runs settle (a
    copy per run as each was held cost more than the gather :func:`settle_together` makes)."""
    reads: tuple[list[str], list[str]] = ([], [])
    """The bank's numeric and other features (what the runs are read for: the bank is the same
    while events are held); the bank's own lists, never changed in place."""

    def settle(self) -> None:
        """The runs' values as :meth:`FeatureWatch._hold` keeps a part's: consecutive runs of one
        layout joined first (one copy of their floats), so a model's runs of many batches become
        a part or a few."""
        runs, self.runs, self.run_rows = self.runs, [], 0
        for batch, lo, hi in runs:
            self.times.extend(batch.times[lo:hi])
            self.ids.extend(batch.ids[lo:hi])
        start = 0
        while start < len(runs):
            first = runs[start][0]
            stop = start + 1
            while stop < len(runs) and runs[stop][0].same_layout(first):
                stop += 1
            joined = runs[start:stop]
            floats: Mapping[str, npt.NDArray[np.float64]] = {} if first.floats is None else FloatBlock(
                first.floats.names,
                np.concatenate([g.floats.matrix[:, lo:hi] for g, lo, hi in joined], axis=1)  # type: ignore[union-attr]
                if len(joined) > 1 else first.floats.matrix[:, joined[0][1]:joined[0][2]])
            values = {name: list(chain.from_iterable([g.values[name][lo:hi] for g, lo, hi in joined]))
                      for name in first.values}
            self.add_part(floats, values, sum(hi - lo for _, lo, hi in joined))
            start = stop

    def add_part(self, floats: Mapping[str, npt.NDArray[np.float64]], values: dict[str, list[Any]],
                 n: int) -> None:
        """``n`` events' float block and value lists (fresh lists: kept, not copied) as a held part."""
        numeric, others = self.reads
        self.numbers.append(_held_floats([_NO_FEATURES] * n, numeric, floats, values))
        # as _raw reads them (the lists fresh here, not copied again)
        self.values.append({name: values[name] if name in values else [None] * n for name in others})

    def join_parts(self) -> None:
        """Consecutive parts of one layout as one part (the same values in the same order): what
        is held pickles the same whenever runs were settled."""
        numbers: list[Mapping[str, npt.NDArray[np.float64]]] = []
        values: list[Mapping[str, list[Any]]] = []
        for floats, others in zip(self.numbers, self.values, strict=True):
            last = numbers[-1] if numbers else None
            if last is not None and _same_part(last, floats) and values[-1].keys() == others.keys():
                numbers[-1] = FloatBlock.joined([last, floats]) \
                    if isinstance(last, FloatBlock) and isinstance(floats, FloatBlock) else \
                    {name: np.concatenate([last[name], floats[name]]) for name in floats}
                values[-1] = {name: [*values[-1][name], *others[name]] for name in others}
            else:
                numbers.append(floats)
                values.append(others)
        self.numbers, self.values = numbers, values

    def __getstate__(self) -> dict[str, Any]:
        self.settle()  # a pickle holds the values, not the batches they are rows of
        self.join_parts()
        return {k: v for k, v in self.__dict__.items() if k not in ("runs", "run_rows", "reads")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.runs, self.run_rows, self.reads = [], 0, ([], [])

    @property
    def count(self) -> int:
        """Events held."""
        return len(self.times) + self.run_rows


def settle_together(helds: Sequence[_Held]) -> None:
    """:meth:`_Held.settle` of every one of ``helds``, the same parts: where all their runs' batches
    share one layout, each one's runs are taken out of the batches' joined columns by one
    gather for all (with many models a batch holds a run of each of hundreds, a model's runs are a
    few events each, ~50 batches of them at a time, and copied out one by one they cost ~3-4 us a
    run with the model's share; ``bench/bench_stage_steps.py``, "held runs copied out": 33 -> 18
    CPU-ms a round of 991 models' 10,819 runs)."""
    first_rows: dict[GroupedEvents, int] = {}  # each batch (hashed by identity) -> its first row joined
    total = 0
    starts: list[int] = []
    lengths: list[int] = []
    for held in helds:
        for batch, lo, hi in held.runs:
            at = first_rows.get(batch)
            if at is None:
                at = first_rows[batch] = total
                total += len(batch.times)
            starts.append(at + lo)
            lengths.append(hi - lo)
    joined = list(first_rows)  # in their rows' order
    if len(helds) < 2 or not joined or not all(b.same_layout(joined[0]) for b in joined[1:]):
        for held in helds:
            held.settle()
        return
    first = joined[0]
    runs = np.asarray(lengths, dtype=np.int64)
    ends = np.cumsum(runs)
    rows = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - runs), runs) + np.arange(ends[-1])
    matrix = None if first.floats is None else \
        np.concatenate([b.floats.matrix for b in joined], axis=1)[:, rows]  # type: ignore[union-attr]
    order = rows.tolist()
    values = {name: [column[i] for i in order]
              for name, column in ((name, list(chain.from_iterable(b.values[name] for b in joined)))
                                   for name in first.values)}
    joined_times = list(chain.from_iterable(b.times for b in joined))
    joined_ids = list(chain.from_iterable(b.ids for b in joined))
    times, ids = [joined_times[i] for i in order], [joined_ids[i] for i in order]
    run = lo = 0
    for held in helds:
        count = len(held.runs)
        hi = int(ends[run + count - 1]) if count else lo
        run += count
        held.runs, held.run_rows = [], 0
        if hi == lo:
            continue
        held.times.extend(times[lo:hi])
        held.ids.extend(ids[lo:hi])
        floats: Mapping[str, npt.NDArray[np.float64]] = {} if matrix is None else \
            FloatBlock(first.floats.names, matrix[:, lo:hi].copy())  # type: ignore[union-attr]
        held.add_part(floats, {name: column[lo:hi] for name, column in values.items()}, hi - lo)
        lo = hi


def _same_part(a: Mapping[str, npt.NDArray[np.float64]], b: Mapping[str, npt.NDArray[np.float64]]) -> bool:
    """Whether two held parts' numbers join: blocks of the same names, or dicts of the same keys."""
    if isinstance(a, FloatBlock) or isinstance(b, FloatBlock):
        return isinstance(a, FloatBlock) and isinstance(b, FloatBlock) and a.names == b.names
    return list(a) == list(b)


@dataclass
class _ModelWatch:
    profiles: list[ReferenceProfile] = field(default_factory=list)
    bank: ProfileMonitors | None = None
    last_time: int = NO_TIME  # largest event time of the model fed to its bank so far
    held: _Held | None = None  # events observed, not yet fed (a class default: older pickles lack it)


class FeatureWatch:
    """Per-model banks of feature episode monitors for one stream (see module docstring)."""

    def __init__(self, false_alarms_per_million: float, *, status_grid_ms: int,
                 min_effect_sd: float = DEFAULT_MIN_EFFECT_SD, learning: int = DEFAULT_LEARNING,
                 batch_events: int = 0) -> None:
        if status_grid_ms <= 0:
            raise ValueError("status_grid_ms must be positive")
        self.model_arl = 1_000_000.0 / false_alarms_per_million
        self.status_grid_ms = status_grid_ms
        self.min_effect_sd = min_effect_sd
        self.learning = learning
        self.batch_events = batch_events
        """0: every observed event is fed at once; n: a model's events are held until n make a
        batch or :meth:`flush_due` / :meth:`flush` feeds them (see :meth:`observe`)."""
        self._models: dict[tuple[str, str], _ModelWatch] = {}
        self._holding: dict[tuple[str, str], int] | None = {}  # model -> its held events' since
        self._earliest = NO_TIME  # at most every held model's since (a bound: may be below)
        self._with_runs: dict[tuple[str, str], _Held] = {}  # models holding runs of grouped batches
        self._run_batch: GroupedEvents | None = None  # the last grouped batch a run was held of
        self._run_events = 0  # events of the grouped batches runs were held of since all settled

    _TRANSIENT = ("_holding", "_earliest", "_with_runs", "_run_batch", "_run_events")

    def __getstate__(self) -> dict[str, Any]:
        # what is held is in the models' own state (runs settled as each is pickled); the index of
        # it is rebuilt when needed (a delta checkpoint restores the models' dict after this object)
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {**state, "_holding": None, "_earliest": NO_TIME, "_with_runs": {}, "_run_batch": None,
                 "_run_events": 0}
        state.setdefault("batch_events", 0)  # a checkpoint from before held events
        if "status_grid_ms" not in state:
            # A checkpoint from before episodes (bare detectors, alarms rate-limited per interval):
            # its profiles are kept, monitors start afresh with the next event.
            for watch in state["_models"].values():
                watch.__dict__.pop("last_alert", None)
                watch.bank, watch.last_time = None, NO_TIME
            state = {"model_arl": state["model_arl"], "status_grid_ms": state["alert_interval_ms"],
                     "min_effect_sd": DEFAULT_MIN_EFFECT_SD, "learning": DEFAULT_LEARNING,
                     "_models": state["_models"], "batch_events": 0, "_holding": None,
                     "_earliest": NO_TIME, "_with_runs": {}, "_run_batch": None, "_run_events": 0}
        for watch in state["_models"].values():  # every restored shard parsed its own copies
            watch.profiles = [shared_profile(p) for p in watch.profiles]
            if watch.bank is not None:
                watch.bank.profile = shared_profile(watch.bank.profile)
        self.__dict__.update(state)

    def add_profile(self, profile: ReferenceProfile) -> bool:
        """Register a training profile; False for one already known or not from training."""
        if profile.source != "training" or not profile.features:
            return False
        watch = self._models.setdefault((profile.model_id, profile.model_version), _ModelWatch())
        if any(p.profile_id == profile.profile_id for p in watch.profiles):
            return False
        # Profiles are only appended in (effective_from, id) order after the active one, so the
        # active bank's index stays valid; an older profile arriving late never becomes active.
        active = watch.bank.profile_index if watch.bank is not None else -1
        key = (profile.effective_from_ms, profile.profile_id)
        position = bisect.bisect([(p.effective_from_ms, p.profile_id) for p in watch.profiles], key)
        if position <= active:
            return False
        # Events held (see observe) were all before the next profile's effective_from when they
        # came, so they belong to the active bank whatever arrives now, as they would have fed:
        # they stay held (a flush feeds them to that bank, never to one this profile makes).
        watch.profiles.insert(position, shared_profile(profile))
        return True

    @property
    def models(self) -> list[tuple[str, str]]:
        return sorted(k for k, w in self._models.items() if w.profiles)

    def watches_any(self) -> bool:
        """Whether any model has a profile to watch against (a shard asks every batch: not the
        sorted list of :attr:`models`, ~1,000 of them with many models)."""
        return any(w.profiles for w in self._models.values())

    def monitor_count(self) -> int:
        return sum(len(w.bank.monitors) for w in self._models.values() if w.bank is not None)

    def open_episodes(self) -> int:
        return sum(
            1 for w in self._models.values() if w.bank is not None
            for m in w.bank.monitors.values() if m.episode is not None
        )

    def observe(
        self,
        model_id: str,
        model_version: str,
        times: Sequence[int],
        prediction_ids: Sequence[str],
        features: Sequence[dict[str, Any]],
        columns: Mapping[str, npt.NDArray[np.float64]] | None = None,
        values: Mapping[str, Sequence[Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Feed one model's events in stream order; returns the episode reports, in stream order
        per feature (features in name order). ``columns``: numeric features as float64 columns
        the caller already has (a value per event), left out of ``features``; ``values``: other
        features' values per event the caller already has (a categorical feature reads them
        instead of each event's map).

        With ``batch_events`` set, events that all belong to the model's active bank (no newer
        profile is effective at any of their times) are held instead, and fed with the model's
        next ones as one batch once ``batch_events`` are held, or by :meth:`flush_due` /
        :meth:`flush`; anything else feeds what is held first. The reports are the same, in the
        same order per feature, only returned later: the monitors' results do not depend on how
        a stream is chunked, and a report's time and id are the event's, not the call's."""
        key = (model_id, model_version)
        watch = self._models.get(key)
        if watch is None or not watch.profiles or not times:
            return []
        bank = watch.bank
        if bank is not None and self._holds(watch, bank, times):
            held = self._hold(key, watch, bank, times, prediction_ids, features, columns, values)
            return self._feed_held(key, watch) if held.count >= self.batch_events else []
        reports = self._feed_held(key, watch) if watch.held is not None else []
        reports.extend(self._observe_now(watch, times, prediction_ids, features, columns, values))
        return reports

    def observe_grouped(self, grouped: GroupedEvents) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """:meth:`observe` of each model's run of ``grouped``, models in key order: the reports per
        model (every model of the batch a key). A run held is kept as the batch's rows (nothing
        copied per model; at most :data:`RUN_EVENTS` events of batches are kept so before every
        held run is copied out), anything else is fed as :meth:`observe` feeds it.

        >>> from driftline.operators.profile import build_profile
        >>> rng = np.random.default_rng(1)
        >>> watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000, batch_events=4)
        >>> for m in ("m", "n"):
        ...     _ = watch.add_profile(build_profile(m, "1", {"x": rng.normal(size=500)}, label_column=None,
        ...                                         prediction_column=None, bins=5, top_k=2, created_at_ms=0))
        >>> grouped = GroupedEvents([("m", "1"), ("n", "1")], [0, 1, 3], [5, 6, 7], ["a", "b", "c"],
        ...                         FloatBlock(("x",), np.array([[0.1, 0.2, 0.3]])), {})
        >>> watch.observe_grouped(grouped), watch.held_events()   # their banks made, fed at once
        ({('m', '1'): [], ('n', '1'): []}, 0)
        >>> watch.observe_grouped(grouped), watch.held_events()   # now held, as rows of the batch
        ({('m', '1'): [], ('n', '1'): []}, 3)
        >>> sorted(watch.flush()), watch.held_events()
        ([('m', '1'), ('n', '1')], 0)
        """
        out: dict[tuple[str, str], list[dict[str, Any]]] = {}
        keys, starts, times, ids = grouped.keys, grouped.starts, grouped.times, grouped.ids
        models, batch_events, with_runs = self._models, self.batch_events, self._with_runs
        kept = False  # whether the batch is kept for its runs (_keep_runs_of)
        # _holds' test and a held run's steps inline: with many models this loop runs for hundreds of
        # groups of a few events a batch, and their calls were most of its cost
        for g in sorted(range(len(keys)), key=keys.__getitem__):
            key, lo, hi = keys[g], starts[g], starts[g + 1]
            watch = models.get(key)
            if watch is None or not watch.profiles or lo == hi:
                out[key] = []
                continue
            bank, held = watch.bank, watch.held
            if bank is not None and batch_events and (held is not None or hi - lo < batch_events):
                following = bank.profile_index + 1  # the next profile, if any: these wait if before it
                profiles = watch.profiles
                if following == len(profiles) or max(times[lo:hi]) < profiles[following].effective_from_ms:
                    if not kept:
                        self._keep_runs_of(grouped)
                        kept = True
                    if held is None:
                        held = self._held(key, watch, times[lo])
                    if not held.runs:
                        held.reads = (bank.numeric, bank.others)
                        with_runs[key] = held
                    held.runs.append((grouped, lo, hi))
                    held.run_rows += hi - lo
                    out[key] = self._feed_held(key, watch) \
                        if len(held.times) + held.run_rows >= batch_events else []
                    continue
            floats, values = grouped.columns(lo, hi)
            out[key] = self.observe(key[0], key[1], times[lo:hi], ids[lo:hi], [_NO_FEATURES] * (hi - lo),
                                    floats, values)
        return out

    def _holds(self, watch: _ModelWatch, bank: ProfileMonitors, times: Sequence[int]) -> bool:
        """Whether a model's events at ``times`` are held: events are, with ``batch_events`` set,
        when something is held already or they are fewer, and no newer profile applies to any."""
        # a group of batch_events or more with nothing held before it is a batch already
        if not self.batch_events or (watch.held is None and len(times) >= self.batch_events):
            return False
        following = bank.profile_index + 1  # the next profile, if any: these wait if before it
        return following == len(watch.profiles) or max(times) < watch.profiles[following].effective_from_ms

    def flush_due(self, watermark: int) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Feed every model's held events whose reports stage 2 could otherwise miss: those held
        since before ``watermark``'s grid line (stage 2 applies a model's reports up to the grid
        line before the shards' progress and takes a later one for a re-sent duplicate; a window
        closes on a grid line). A shard calls this before it announces ``watermark`` as its
        progress, so a report comes before the progress past it, and so before its window's
        close. The reports per model fed (a model fed may have none)."""
        boundary = watermark - watermark % self.status_grid_ms
        if boundary <= self._earliest:
            return {}
        holding = self._held_models()
        due = sorted(key for key, since in holding.items() if since < boundary)
        out = {key: self._feed_held(key, self._models[key]) for key in due}
        self._earliest = min(holding.values(), default=boundary)
        return out

    def flush(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Feed every model's held events (the end of a bounded stream); the reports per model fed."""
        return {key: self._feed_held(key, self._models[key]) for key in sorted(self._held_models())}

    def held_events(self) -> int:
        return sum(w.held.count for w in self._models.values() if w.held is not None)

    def _held_models(self) -> dict[tuple[str, str], int]:
        holding = self._holding
        if holding is None:  # unpickled: rebuilt from the models' own state
            holding = self._holding = {key: w.held.since for key, w in self._models.items()
                                       if w.held is not None}
            self._earliest = min(holding.values(), default=NO_TIME)
        return holding

    def _hold(
        self,
        key: tuple[str, str],
        watch: _ModelWatch,
        bank: ProfileMonitors,
        times: Sequence[int],
        prediction_ids: Sequence[str],
        features: Sequence[dict[str, Any]],
        columns: Mapping[str, npt.NDArray[np.float64]] | None,
        values: Mapping[str, Sequence[Any]] | None,
    ) -> _Held:
        """Keep these events, as the bank's monitors will read them (as :meth:`_feed` reads a
        value: each numeric one converted alone, so the columns of parts concatenate exactly)."""
        held = self._held(key, watch, times[0])
        if held.runs:  # (parts in stream order)
            held.settle()
            self._with_runs.pop(key, None)
        numeric = bank.numeric
        others = {name: _raw(features, name, values) for name in bank.others}
        numbers = _held_floats(features, numeric, columns, values)
        held.times.extend(times)
        held.ids.extend(prediction_ids)
        held.numbers.append(numbers)
        held.values.append(others)
        return held

    def _held(self, key: tuple[str, str], watch: _ModelWatch, first_time: int) -> _Held:
        """The model's held events, a new hold from an event at ``first_time`` if none."""
        held = watch.held
        if held is None:
            since = max(watch.last_time, first_time)
            held = watch.held = _Held(since)
            holding = self._held_models()
            holding[key] = since
            self._earliest = min(self._earliest, since)
        return held

    def _keep_runs_of(self, grouped: GroupedEvents) -> None:
        """Keep ``grouped`` alive for the runs held of it (rows of it, not copies), first copying
        every held run out of the batches kept so far once they hold :data:`RUN_EVENTS` events."""
        if grouped is self._run_batch:
            return
        if self._run_events >= RUN_EVENTS:
            settle_together(list(self._with_runs.values()))
            self._with_runs.clear()
            self._run_events = 0
        self._run_batch = grouped
        self._run_events += len(grouped.times)

    def _feed_held(self, key: tuple[str, str], watch: _ModelWatch) -> list[dict[str, Any]]:
        """Feed a model's held events to the bank they belong to (see :meth:`add_profile`), as
        :meth:`_observe_now` would have fed them to it, in one call."""
        held, bank = watch.held, watch.bank
        watch.held = None
        if self._holding is not None:
            self._holding.pop(key, None)
        if held is None:
            return []
        assert bank is not None, "events are held for a model's bank only"
        if held.runs:
            held.settle()
            self._with_runs.pop(key, None)
        grid = self.status_grid_ms
        running: list[int] = []
        crossings: list[int] = []
        latest = watch.last_time
        for row, stamp in enumerate(held.times):
            time = stamp if stamp > latest else latest
            if time // grid > latest // grid:
                crossings.append(row)
            running.append(time)
            latest = time
        watch.last_time = latest
        count = len(running)
        rows = [_NO_FEATURES] * count  # every value the monitors read is in numbers and values
        groups = held.numbers
        numbers: Mapping[str, npt.NDArray[np.float64]]
        if len(groups) == 1:  # one group held (most quiet models at a grid line): as it is
            numbers, values = groups[0], held.values[0]
        else:
            values = {name: list(chain.from_iterable(parts)) for name, parts in _by_name(held.values).items()}
            blocks = [group for group in groups if isinstance(group, FloatBlock)]
            if len(blocks) == len(groups) and all(block.names == blocks[0].names for block in blocks):
                numbers = FloatBlock.joined(blocks)  # the groups of one batch layout: one concatenate
            elif count < HELD_PER_VALUE_BELOW:  # read value by value: the groups joined as lists (an
                # array per feature first cost ~2 us a feature, 3 groups of 1-2 events)
                listed = {name: list(chain.from_iterable([group[name].tolist() for group in groups]))
                          for name in bank.numeric}
                return self._feed_few(bank, running, crossings, held.ids, rows, None, values, listed)
            else:
                numbers = {name: np.concatenate([group[name] for group in groups]) for name in bank.numeric}
        if count < HELD_PER_VALUE_BELOW:
            if isinstance(numbers, FloatBlock):  # listed in one call, not a tolist per feature
                listed = numbers.listed()
                return self._feed_few(bank, running, crossings, held.ids, rows, None, values, listed)
            return self._feed_few(bank, running, crossings, held.ids, rows, numbers, values)
        return self._feed(bank, np.asarray(running, dtype=np.int64), np.asarray(crossings, dtype=np.int64),
                          held.ids, rows, numbers, values)

    def _observe_now(
        self,
        watch: _ModelWatch,
        times: Sequence[int],
        prediction_ids: Sequence[str],
        features: Sequence[dict[str, Any]],
        columns: Mapping[str, npt.NDArray[np.float64]] | None,
        values: Mapping[str, Sequence[Any]] | None,
    ) -> list[dict[str, Any]]:
        """:meth:`observe` of events fed at once (nothing held before them)."""
        floor = watch.bank.profile_index if watch.bank is not None else -1
        if len(times) < PER_VALUE_BELOW:
            return self._observe_few(watch, floor, times, prediction_ids, features, columns, values)
        stamps = np.asarray(times, dtype=np.int64)
        running = np.maximum.accumulate(np.maximum(stamps, watch.last_time))
        previous = np.concatenate(([watch.last_time], running[:-1]))
        grid = self.status_grid_ms
        crossings = np.flatnonzero(running // grid > previous // grid)  # rows that cross the grid
        watch.last_time = int(running[-1])
        effective = np.asarray([p.effective_from_ms for p in watch.profiles], dtype=np.int64)
        wanted = np.searchsorted(effective, stamps, side="right") - 1
        wanted = np.maximum.accumulate(np.maximum(wanted, floor))  # never move back
        reports: list[dict[str, Any]] = []
        first, last = int(wanted[0]), int(wanted[-1])  # never decreasing: one profile unless these differ
        for index in [first] if first == last else np.unique(wanted).tolist():
            if index < 0:
                continue
            if first == last:
                lo, hi = 0, len(wanted)
            else:
                rows = np.flatnonzero(wanted == index)
                lo, hi = int(rows[0]), int(rows[-1]) + 1
            if watch.bank is None or watch.bank.profile_index != index:
                if watch.bank is not None:
                    reports.extend(self._close_bank(watch.bank, int(running[lo]), prediction_ids[lo]))
                watch.bank = self._bank(watch.profiles[index], index)
            cuts = crossings[(crossings >= lo) & (crossings < hi)] - lo
            whole = lo == 0 and hi == len(wanted)  # (a block stays a block)
            part = columns if columns is None or whole else {n: c[lo:hi] for n, c in columns.items()}
            given = None if values is None else {name: column[lo:hi] for name, column in values.items()}
            reports.extend(self._feed(watch.bank, running[lo:hi], cuts, prediction_ids[lo:hi],
                                      features[lo:hi], part, given))
        return reports

    def _observe_few(
        self,
        watch: _ModelWatch,
        floor: int,
        times: Sequence[int],
        prediction_ids: Sequence[str],
        features: Sequence[dict[str, Any]],
        columns: Mapping[str, npt.NDArray[np.float64]] | None,
        values: Mapping[str, Sequence[Any]] | None,
    ) -> list[dict[str, Any]]:
        """:meth:`observe` for a model's few events (most groups with many models), step for step
        on Python ints and lists: its dozen numpy calls on arrays of one or two values cost more
        than the values themselves."""
        grid = self.status_grid_ms
        effective = [p.effective_from_ms for p in watch.profiles]
        running: list[int] = []
        crossings: list[int] = []  # rows that cross the grid
        wanted: list[int] = []  # the profile each row wants, never moving back
        latest, index = watch.last_time, floor
        for row, stamp in enumerate(times):
            time = stamp if stamp > latest else latest
            if time // grid > latest // grid:
                crossings.append(row)
            running.append(time)
            latest = time
            index = max(index, bisect.bisect_right(effective, stamp) - 1)
            wanted.append(index)
        watch.last_time = latest
        reports: list[dict[str, Any]] = []
        lo = 0
        while lo < len(wanted):
            index = wanted[lo]
            hi = lo + 1
            while hi < len(wanted) and wanted[hi] == index:
                hi += 1
            if index >= 0:
                if watch.bank is None or watch.bank.profile_index != index:
                    if watch.bank is not None:
                        reports.extend(self._close_bank(watch.bank, running[lo], prediction_ids[lo]))
                    watch.bank = self._bank(watch.profiles[index], index)
                part, given = columns, values  # one profile for every event: no slices
                if hi - lo < len(wanted):
                    part = None if columns is None else {n: c[lo:hi] for n, c in columns.items()}
                    given = None if values is None else {n: v[lo:hi] for n, v in values.items()}
                cuts = [c - lo for c in crossings if lo <= c < hi]
                reports.extend(self._feed_few(watch.bank, running[lo:hi], cuts, prediction_ids[lo:hi],
                                              features[lo:hi], part, given))
            lo = hi
        return reports

    def _feed_few(
        self,
        bank: ProfileMonitors,
        running: list[int],
        cuts: list[int],
        prediction_ids: Sequence[str],
        features: Sequence[dict[str, Any]],
        given: Mapping[str, npt.NDArray[np.float64]] | None,
        given_values: Mapping[str, Sequence[Any]] | None,
        listed: Mapping[str, list[float]] | None = None,
    ) -> list[dict[str, Any]]:
        """:meth:`_feed` for a few events (fewer than :data:`PER_VALUE_BELOW` observed, or than
        :data:`HELD_PER_VALUE_BELOW` held; every run value by value), on lists: the same values
        counted, the same reports and state. ``listed``: every numeric feature's values as a list
        of floats (what ``given``'s columns would list), in place of ``given``."""
        reports: list[dict[str, Any]] = []
        numeric = bank.numeric
        columns = _float_features(features, numeric, given, given_values) if listed is None else {}
        count = len(features)
        every = list(range(count))
        season = bank.profile.season
        # the common few in one C call a monitor (floats or strings, all watched, while it watches
        # its reference): symbols found and the head no CUSUM can alarm on deferred, as update_each
        # does; what it did not count goes on below, the same steps in Python
        fast = watch_native.NATIVE
        for name, monitor in bank.monitors.items():
            positions: list[int]
            first = -1  # values the C path counted (-1: it took none and changed nothing)
            if monitor.kind == "numeric":
                numbers = columns[name].tolist() if listed is None else listed[name]
                seasonal = season is not None and name in season.features
                if fast is not None and not seasonal:
                    first = fast.defer_values(monitor, numbers, MAX_ABS_VALUE)
                # as valid_numbers: NaN, inf and beyond the bound are not watched (C took only valid
                # values); the common few pass without a Python loop
                if first >= 0 or all(map(MAX_ABS_VALUE.__ge__, map(abs, numbers))):
                    positions, kept = every, numbers
                else:
                    positions = [i for i, v in enumerate(numbers) if abs(v) <= MAX_ABS_VALUE]
                    kept = [numbers[i] for i in positions]
                if season is not None and seasonal:
                    kept = standardise(season, name, kept, [running[i] for i in positions]).tolist()
            else:
                raw = _raw(features, name, given_values)
                if fast is not None:
                    first = fast.defer_values(monitor, raw, MAX_ABS_VALUE)
                if first >= 0 or set(map(type, raw)) <= _CATEGORY_TYPES:
                    positions, kept = every, raw
                else:
                    positions = [i for i, v in enumerate(raw) if isinstance(v, str | int | bool)]
                    kept = [raw[i] for i in positions]
            start = max(first, 0)
            if not cuts:  # the common few events: no grid line among them, one run
                for i, one in monitor.update_each(kept[start:]) if len(kept) > start else ():
                    at = positions[start + i]
                    reports.append(self._report(bank, name, monitor, one, running[at], prediction_ids[at]))
                continue
            # a grid line before an event C counted found no episode open (it counts only while the
            # monitor watches its reference, and opens none): no status there, as in Python
            for cut in [*cuts, None]:
                stop = len(positions) if cut is None else bisect.bisect_left(positions, cut)
                if stop > start:
                    for i, one in monitor.update_each(kept[start:stop]):
                        at = positions[start + i]
                        reports.append(self._report(bank, name, monitor, one, running[at],
                                                    prediction_ids[at]))
                start = max(start, stop)
                if cut is not None and monitor.episode is not None:
                    reports.append(self._report(bank, name, monitor, None, running[cut], ""))
        return reports

    def _bank(self, profile: ReferenceProfile, index: int) -> ProfileMonitors:
        arl = feature_arl(self.model_arl, len(profile.features))
        key = (profile.profile_id, tuple(profile.features), arl, self.min_effect_sd, self.learning)
        template = _FRESH_BANKS.get(key)
        if template is not None and (template.features is profile.features
                                     or template.features == profile.features):
            _FRESH_BANKS.move_to_end(key)
            return ProfileMonitors(index, profile, pickle.loads(template.monitors))
        monitors: dict[str, EpisodeMonitor] = {}
        for name in sorted(profile.features):
            try:
                monitors[name] = self._monitor(profile, name, arl)
            except ValueError as err:
                # A reference too small for any sequential design (a training column with one
                # value, or a few equal ones): the feature keeps its windows' drift scores, no
                # episode monitor (a monitor that cannot be built stopped the shard at every restart).
                log.warning("profile %s: feature %r gets no sequential monitor: %s",
                            profile.profile_id, name, err)
        _FRESH_BANKS[key] = _FreshBank(profile.features, pickle.dumps(monitors, TEMPLATE_PROTOCOL))
        _FRESH_BANKS.move_to_end(key)
        if len(_FRESH_BANKS) > FRESH_BANKS:
            _FRESH_BANKS.popitem(last=False)
        return ProfileMonitors(index, profile, monitors)

    def _monitor(self, profile: ReferenceProfile, name: str, arl: float) -> EpisodeMonitor:
        """Feature ``name``'s monitor; ValueError when its reference is too small for any design."""
        reference, n_reference = _monitored_reference(profile, name)
        return EpisodeMonitor.for_profile(reference, arl=arl, min_effect=self.min_effect_sd,
                                          learning=self.learning, n_reference=n_reference)

    def unmonitored(self, profile: ReferenceProfile) -> dict[str, str]:
        """The features of ``profile`` that get no sequential monitor, with the reason (their
        windows still get drift scores): what ``driftline profile build`` tells. Only the
        references found to fail are built (fewer than 2 values, or one distinct value: building
        every feature's monitor calibrates its designs, which costs seconds a profile).

        >>> from driftline.operators.profile import build_profile
        >>> p = build_profile("m", "1", {"x": [1.0] + [None] * 9, "y": [float(i) for i in range(10)]},
        ...                   label_column=None, prediction_column=None, bins=4, top_k=3, created_at_ms=0)
        >>> FeatureWatch(1.0, status_grid_ms=60_000).unmonitored(p)
        {'x': 'a numeric reference needs at least 2 values'}
        """
        arl = feature_arl(self.model_arl, len(profile.features))
        found = {}
        for name in sorted(profile.features):
            reference, _ = _monitored_reference(profile, name)
            if reference.n >= 2 and (reference.kind != "numeric" or reference.min != reference.max):
                continue
            try:
                self._monitor(profile, name, arl)
            except ValueError as err:
                found[name] = str(err)
        return found

    def _close_bank(self, bank: ProfileMonitors, at: int, prediction_id: str) -> list[dict[str, Any]]:
        """A newer profile applies: the open episodes of the old bank end here."""
        reports = []
        for name, monitor in bank.monitors.items():
            event = monitor.close("new_profile")
            if event is not None:
                reports.append(self._report(bank, name, monitor, event, at, prediction_id))
        return reports

    def _report(self, bank: ProfileMonitors, name: str, monitor: EpisodeMonitor, event: EpisodeEvent | None,
                at: int, prediction_id: str) -> dict[str, Any]:
        return episode_report(name, monitor.kind, monitor, event, at, prediction_id,
                              bank.profile.profile_id, bank.profile.effective_from_ms)

    def _feed(
        self,
        bank: ProfileMonitors,
        running: npt.NDArray[np.int64],
        cuts: npt.NDArray[np.int64],
        prediction_ids: Sequence[str],
        features: Sequence[dict[str, Any]],
        given: Mapping[str, npt.NDArray[np.float64]] | None,
        given_values: Mapping[str, Sequence[Any]] | None = None,
    ) -> list[dict[str, Any]]:
        reports = []
        numeric = bank.numeric
        columns = _float_features(features, numeric, given, given_values)
        season = bank.profile.season
        every = np.arange(len(features))
        # which of a block's rows are all valid numbers, in one pass (not two numpy calls a feature:
        # with many models, a held batch of 64 events)
        block = given if isinstance(given, FloatBlock) else None
        all_valid = _all_valid(block) if block is not None else {}
        block_rows: dict[str, int] = {}  # features whose values are a whole row of the block, as read
        runs: list[tuple[str, EpisodeMonitor, npt.NDArray[np.int64], Any]] = []
        for name, monitor in bank.monitors.items():
            values: Any
            if monitor.kind == "numeric":
                numbers = columns[name]
                if block is not None and all_valid.get(name):
                    positions, values = every, numbers
                    if season is None or name not in season.features:
                        block_rows[name] = block.index[name]
                else:
                    valid = valid_numbers(numbers)  # NaN, inf and beyond the bound: invalid, not watched
                    positions = every if valid.all() else np.flatnonzero(valid)
                    values = numbers if positions is every else numbers[positions]
                if season is not None and name in season.features:
                    values = standardise(season, name, values, running[positions])
            else:
                # Missing values and values no category can be (numbers with a fraction, objects)
                # are not watched: windows count them as missing/invalid.
                raw = _raw(features, name, given_values)
                if set(map(type, raw)) <= _CATEGORY_TYPES:  # the common batch: every value counts
                    positions, values = every, raw
                else:
                    kept = [(i, v) for i, v in enumerate(raw) if isinstance(v, str | int | bool)]
                    positions = np.asarray([i for i, _ in kept], dtype=np.int64)
                    values = [v for _, v in kept]  # the monitor maps them with category_key
            runs.append((name, monitor, positions, values))
        quiet = _count_quiet(runs, cuts, block, block_rows)
        for name, monitor, positions, values in runs:
            if name in quiet:  # counted, no alarm: no event, and no episode for a status
                continue
            # Values before each grid crossing, then the open episode's status as of the crossing.
            start = 0
            for cut in [*cuts.tolist(), None]:
                stop = len(positions) if cut is None else int(np.searchsorted(positions, cut))
                if stop - start >= PER_VALUE_BELOW:
                    before = monitor.n
                    for event in monitor.update_many(values[start:stop]):
                        at = int(positions[start + event.index - before])
                        reports.append(self._report(bank, name, monitor, event, int(running[at]),
                                                    prediction_ids[at]))
                elif stop > start:  # a few values (a model with little traffic): one by one
                    for i, one in monitor.update_each(values[start:stop]):
                        at = int(positions[start + i])
                        reports.append(self._report(bank, name, monitor, one, int(running[at]),
                                                    prediction_ids[at]))
                start = stop
                if cut is not None and monitor.episode is not None:
                    reports.append(self._report(bank, name, monitor, None, int(running[cut]), ""))
        return reports


def _all_valid(block: FloatBlock) -> dict[str, bool]:
    """Per name of ``block``, whether every value of its row is valid (:func:`valid_numbers`).

    >>> _all_valid(FloatBlock(("a", "b"), np.array([[1.0, 2.0], [3.0, np.nan]])))
    {'a': True, 'b': False}
    """
    fine = valid_numbers(block.matrix).all(axis=1)
    return dict(zip(block.names, cast(list[bool], fine.tolist()), strict=True))


def _count_quiet(runs: Sequence[tuple[str, EpisodeMonitor, npt.NDArray[np.int64], Any]],
                 cuts: npt.NDArray[np.int64], block: FloatBlock | None = None,
                 block_rows: Mapping[str, int] | None = None) -> set[str]:
    """The features whose monitors counted all of their values at once, with no alarm among them
    (:func:`~driftline.operators.episodes.count_quiet`; a bank's usual batch). Their reports would
    be none: no event, and no status, as no episode opens. Fed in one call, not a call per part
    between grid crossings (a detector's results do not depend on how its stream is chunked; the
    monitor's ring grows as the parts would have grown it)."""
    watching = [run for run in runs if len(run[2]) >= PER_VALUE_BELOW and run[1].episode is None]
    if len(watching) < 2:  # one monitor (the multivariate watch's): the batch step costs the same
        return set()
    searched = _block_symbols(watching, block, block_rows) if block is not None and block_rows else {}
    chosen = [(name, monitor, positions, searched[name] if name in searched else monitor.symbols(values))
              for name, monitor, positions, values in watching]
    parts: list[list[tuple[int, bool]] | None] = [None] * len(chosen)
    if cuts.size:  # the parts _feed would count, value by value if fewer than PER_VALUE_BELOW
        found: dict[int, list[tuple[int, bool]]] = {}  # by positions: most monitors share `every`
        for i, (_, _, positions, _) in enumerate(chosen):
            part = found.get(id(positions))
            if part is None:
                bounds = [0, *np.searchsorted(positions, cuts).tolist(), len(positions)]
                part = found[id(positions)] = [(b - a, b - a < PER_VALUE_BELOW)
                                               for a, b in pairwise(bounds) if b > a]
            parts[i] = part
    counted = count_quiet([monitor for _, monitor, _, _ in chosen], [syms for *_, syms in chosen], parts)
    return {name for (name, *_), ok in zip(chosen, counted, strict=True) if ok}


def _block_symbols(watching: Sequence[tuple[str, EpisodeMonitor, npt.NDArray[np.int64], Any]],
                   block: FloatBlock, rows: Mapping[str, int]) -> dict[str, npt.NDArray[np.int64]]:
    """:meth:`~EpisodeMonitor.symbols` of the monitors whose values are a whole row of ``block``
    (``rows``: each one's row; every value valid) and which find them by their edges, in one C call
    (``cells_rows``) instead of a numpy path each; {} where there are not two or the C path refuses."""
    fast = watch_native.NATIVE
    if fast is None:
        return {}
    names: list[str] = []
    edges: list[npt.NDArray[np.float64]] = []
    at: list[int] = []
    for name, monitor, _, _ in watching:
        row = rows.get(name)
        found = monitor.batch_edges() if row is not None else None
        if row is not None and found is not None:
            names.append(name)
            edges.append(found)
            at.append(row)
    if len(names) < 2:
        return {}
    out = np.empty((len(names), block.matrix.shape[1]), dtype=np.int64)
    if not fast.cells_rows(edges, block.matrix, at, out):
        return {}
    return dict(zip(names, out, strict=True))


_NO_FEATURES: dict[str, Any] = {}  # an event's map when its values come as columns


def _by_name(parts: Sequence[Mapping[str, _T]]) -> dict[str, list[_T]]:
    """Each name's items over ``parts`` (every part holds every name), in order."""
    return {name: [part[name] for part in parts] for name in parts[0]} if parts else {}


_CATEGORY_TYPES = frozenset({str, int, bool})
"""The value types a categorical feature's detector counts (others are missing or invalid)."""
_NUMBER_OR_NONE = frozenset({int, float, type(None)})
"""The value types a numeric feature's detector reads as numbers (None: missing, as NaN)."""


def _float_features(features: Sequence[dict[str, Any]], names: list[str],
                    given: Mapping[str, npt.NDArray[np.float64]] | None,
                    given_values: Mapping[str, Sequence[Any]] | None) -> dict[str, npt.NDArray[np.float64]]:
    """The numeric features ``names`` as float64 columns: the caller's columns where it has them,
    the others read as :func:`_raw` reads them and converted in one call (a model's few events
    otherwise pay a conversion per feature), or each alone by :func:`_floats` when a value does
    not convert as a number (the same floats either way)."""
    out: dict[str, npt.NDArray[np.float64]] = {}
    missing: list[str] = []
    for name in names:
        column = given.get(name) if given else None
        if column is None:
            missing.append(name)
        else:
            out[name] = column
    if missing:
        raw = [_raw(features, name, given_values) for name in missing]
        grid = _float_grid(raw)
        out.update(zip(missing, grid if grid is not None else map(_floats, raw), strict=True))
    return out


def _held_floats(features: Sequence[dict[str, Any]], names: list[str],
                 given: Mapping[str, npt.NDArray[np.float64]] | None,
                 given_values: Mapping[str, Sequence[Any]] | None) -> Mapping[str, npt.NDArray[np.float64]]:
    """:func:`_float_features` as a group is held: a caller's :class:`FloatBlock` stays one block
    (the names it lacks read as there and added as rows), so a model's held groups join in one
    call; anything else the dict of columns."""
    if not isinstance(given, FloatBlock):
        return _float_features(features, names, given, given_values)
    missing = given.lacking(names)
    if not missing:
        return given
    extra = _float_features(features, missing, None, given_values)
    return FloatBlock((*given.names, *missing), np.vstack([given.matrix, *(extra[name] for name in missing)]))


def _raw(features: Sequence[dict[str, Any]], name: str,
         values: Mapping[str, Sequence[Any]] | None) -> list[Any]:
    """A feature's value per event: the caller's list if it has one, else each event's map's (read
    from a batch's value rows without a map per event: a missing name is None, as ``get`` says)."""
    if values and name in values:
        return list(values[name])
    if isinstance(features, FeatureRows):
        at = positions(features.names).get(name)
        return [None] * len(features) if at is None else [row[at] for row in features.rows]
    return [f.get(name) for f in features]


def _float_grid(raw: list[list[Any]]) -> npt.NDArray[np.float64] | None:
    """Value lists of equal length as the rows of one float64 array, all converted in one call;
    None when a value does not convert as a number (then :func:`_floats` converts each list)."""
    # numpy would read "3.5" and True as numbers; the window statistics count them as invalid
    if not set(map(type, chain.from_iterable(raw))) <= _NUMBER_OR_NONE:
        return None
    try:
        grid = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    return grid if grid.shape == (len(raw), len(raw[0])) else None


def _floats(raw: list[Any]) -> npt.NDArray[np.float64]:
    """Numbers as float64; None and anything non-numeric (an invalid value: a string, a bool, an
    object) become NaN.

    >>> _floats([1, 2.5, None, "3.5", True]).tolist()
    [1.0, 2.5, nan, nan, nan]
    """
    try:
        if set(map(type, raw)) <= _NUMBER_OR_NONE:
            return np.asarray(raw, dtype=np.float64)
    except OverflowError:  # a JSON integer beyond a float's range: handled one by one below
        pass
    out = np.full(len(raw), np.nan)
    for i, v in enumerate(raw):
        if isinstance(v, int | float) and not isinstance(v, bool):
            try:
                out[i] = float(v)
            except OverflowError:  # a JSON integer beyond a float's range: as wild as inf
                out[i] = math.inf if v > 0 else -math.inf
    return out


class ErrorWatch:
    """Episode monitor on one classifier's error stream (1 = wrong), fed in label-time order.

    The reference error rate is ``1 - baseline accuracy`` of the training profile when there is
    one; otherwise the first ``warmup`` outcomes are the reference sample (they are watched from
    then on, never scored against themselves).

    A baseline is an estimate from ``baseline_n`` training outcomes: the monitor treats it as such
    (the thresholds hold for every rate inside its confidence region, see
    :mod:`driftline.operators.sequential`); without ``baseline_n`` the rate is taken as exact.
    :meth:`observe` returns episode reports like :class:`FeatureWatch`'s (feature ``__error__``,
    unit ``rate_ratio``), with a status as of ``as_of`` when an episode is open.

    >>> watch = ErrorWatch(arl=1_000_000.0, warmup=1000, baseline_error=0.1, baseline_n=20_000)
    >>> rng = np.random.default_rng(3)
    >>> ids = [f"p{i}" for i in range(10_000)]
    >>> watch.observe(rng.random(5000) < 0.1, range(5000), ids[:5000], as_of=4999)
    []
    >>> reports = watch.observe(rng.random(5000) < 0.3, range(5000, 10_000), ids[5000:], as_of=9999)
    >>> reports[0]["kind"], reports[0]["event_time"] < 5500, reports[0]["unit"]
    ('opened', True, 'rate_ratio')
    >>> reports[-1]["kind"], reports[-1]["event_time"], round(reports[-1]["magnitude"])  # 0.3 / 0.1
    ('status', 9999, 3)
    """

    def __init__(self, arl: float, warmup: int, baseline_error: float | None, *,
                 baseline_n: int | None = None, min_ratio: float = DEFAULT_MIN_RATE_RATIO,
                 learning: int = DEFAULT_LEARNING) -> None:
        self.arl = arl
        self.warmup = warmup
        self.min_ratio = min_ratio
        self.learning = learning
        self.monitor: EpisodeMonitor | None = None
        self.reference_source = ""
        self._sample: list[int] = []
        if baseline_error is not None:
            self._start(baseline_error, baseline_n, "baseline")

    def _start(self, rate: float, n_reference: int | None, source: str) -> None:
        self.monitor = EpisodeMonitor.from_rate(min(max(rate, 1e-4), 0.9), arl=self.arl,
                                                n_reference=n_reference, min_ratio=self.min_ratio,
                                                learning=self.learning)
        self.reference_source = source

    def observe(self, errors: npt.ArrayLike, times: Sequence[int], prediction_ids: Sequence[str], *,
                as_of: int) -> list[dict[str, Any]]:
        """Feed errors (0/1) with their label times and prediction ids, in order; returns the
        episode reports, then the open episode's status as of ``as_of``."""
        values = np.asarray(errors, dtype=np.int64)
        start = 0
        if self.monitor is None:
            start = min(self.warmup - len(self._sample), len(values))
            self._sample.extend(values[:start].tolist())
            if len(self._sample) < self.warmup:
                return []
            self._start(float(np.mean(self._sample)), len(self._sample), "warmup")
            self._sample = []
        assert self.monitor is not None
        monitor = self.monitor
        rest = values[start:]
        reports = []
        if len(rest):
            before = monitor.n
            for event in monitor.update_many(rest):
                position = start + event.index - before
                reports.append(episode_report(ERROR_FEATURE, "binary", monitor, event, int(times[position]),
                                              prediction_ids[position], self.reference_source, 0))
        if monitor.episode is not None:
            reports.append(episode_report(ERROR_FEATURE, "binary", monitor, None, as_of, "",
                                          self.reference_source, 0))
        return reports
