"""Drift episodes: a lasting shift is one episode (opened, escalated, closed), not a stream of alarms.

A sequential detector (:mod:`driftline.operators.sequential`) answers "has this stream left its
reference?" and, after an alarm, restarts and answers it again: under a shift that lasts it alarms
once per renewal, for as long as the shift lasts. :class:`EpisodeMonitor` wraps the calibrated
CUSUM banks to answer the questions a user has instead: *when did the stream leave the reference,
by how much, did it change again, and when did it come back?*

Lifecycle
---------
1. **Watching.** The *opener* is the calibrated bank against the training reference, built with a
   minimum effect of interest (below). Its alarm **opens** an episode (reason ``"alarm"``).
2. **Learning.** The next ``learning`` values (:data:`DEFAULT_LEARNING` = 2,000) are the new
   regime's sample. Nothing is tested while learning: one shift gives one event, however long it
   lasts. At the end the regime's magnitude against the training reference is measured on that
   sample; if it is back within the minimum effect the episode **closes** (``"back_to_reference"``;
   the sample as a whole and its latest half: a sample that ends in a stuck value can have the
   reference's mean and sd as a whole), otherwise the episode's magnitude (and the level a further
   change is measured from) is updated: the first learned sample of a change refines the estimate
   the event gave, it never escalates. (A learned sample after a regime alarm that was not
   confirmed, see 3, escalates when it moved further by at least the minimum effect, or changed
   sign: ``"larger"`` / ``"reversal"``; a numeric one also when it reads the change in a unit no
   learned sample of the episode read it in, clearly: ``"kind"``, e.g. a shift that then sticks.)
3. **Watching the regime.** A bank of the same kind is calibrated on the learned sample (same
   ``arl``, same minimum effect, its guarantee region sized by ``learning``) and watches for a
   *further* change against the regime. Its alarm re-enters learning; when the alarm's run shows
   a change away from the reference by at least the minimum effect, the values right after it are
   its **replicate**: if they too are larger than the episode's learned level by the minimum
   effect and by ``KAPPA`` standard errors, the change is an **escalation** (``"larger"``), with the
   alarm's own evidence (the CUSUM that fired, its statistic and threshold), at the replicate's
   last value. An escalation means a further change, not a better estimate of the first one: the
   run that fired a CUSUM is selected for being extreme (a burst that a calibrated bank still
   meets about once per ARL reads as a large change), a replicate is not. The replicate is sized
   so that the excess the run shows stands :data:`REPLICATE_SE` standard errors out (at least
   :data:`MIN_REPLICATE` values, at most half a learning period), which keeps the delay on a second
   change within twice that on a first one. A change the replicate does not confirm, and a change
   back towards the reference or across it, is judged at the end of that learning period against
   the learned level: closed when within the minimum effect, escalated when further from the
   reference by it or of the other sign, else the new level is learned silently. Meanwhile every
   block of ``learning`` values is measured too: the episode's magnitude follows it, and a block
   within the minimum effect closes the episode (a return too gradual for the regime bank). This
   is the reverse test; the gap between "opens beyond the minimum effect, with a calibrated
   false-alarm rate" and "closes when a whole sample is within it" is the hysteresis that keeps a
   wandering stream from churning.
   (Closing and escalating never ask for less than a learned sample resolves, ``KAPPA /
   sqrt(learning)`` = 0.045 sd at the default, so a monitor with ``min_effect=0`` behaves too.)

Serial dependence
-----------------
The banks are calibrated for independent values; real streams are autocorrelated (a feature that
follows a daily cycle, or is constant for an hour) and a CUSUM then alarms far more often than its
ARL says. Each learned sample measures it: the batch-means estimate (:data:`SERIAL_BATCHES` batches)
of every CUSUM's variance inflation ``phi = 1 + 2 sum_k rho_k`` of its increments, and a CUSUM whose
increments' long-run variance is ``phi`` times larger needs a ``phi`` times higher threshold for
the same ARL (diffusion approximation). The regime bank gets the inflation of its own sample; the
opener, at every close, that of the closing sample (the stream as it is within the reference),
kept as the running maximum, so a cycle that opened a spurious episode does not reopen one.
Estimates below :data:`SERIAL_MIN_INFLATION` are read as independence. Measured on elec2 (7
features, reference the first 5,000 rows): without this, the day-of-week feature alone opened
and closed 20 episodes, one per learning period; with it, one.

2,000 values is the smallest learning period whose guarantee region (``KAPPA / sqrt(2000)`` = 0.045
sd) keeps the 0.2 sd mean designs of the regime bank at per-feature ARLs up to ~1e8 (smaller
references drop designs they cannot resolve, see :mod:`~driftline.operators.sequential`), so a
second change is found about as fast as a first one of the same size, and it averages a daily
cycle of hourly or half-hourly data over weeks rather than hours.

Magnitude
---------
In units a user reads, always against the **training** reference: numeric features the mean of the
reference normal score (``unit="sd"``, a signed shift in reference standard deviations; exactly
that for a normal feature) when the change is in location, its spread (``unit="sd_ratio"``, the sd
ratio for a normal feature: 0 for a stuck sensor, ~3 for a tripled noise sd) when it is in scale
(the larger effect says which, see ``_shown``). A learned sample that reads a change in scale,
in an episode whose last event read one, escalates by its spread (``"larger"`` when the log of
its sd ratio is further from 0 by the minimum effect, ``"reversal"`` across 1: x2 -> x5 though
the mean did not move), and a regime bank's scale alarm away from the reference (wider in a wider
regime) is confirmed by a replicate as a shift is (its spread's log by :data:`SPREAD_SE`); every
other escalation is measured by the shift. A location episode whose spread changes too (+2 sd
and noisier, at once or later) tells the spread once, on the learned sample that reads it, as an
escalation in ``sd_ratio`` (``"kind"``, then ``"larger"`` / ``"reversal"`` from the spread told;
see ``_spread_untold``; a regime bank's scale alarm wider than told is confirmed by a replicate,
``_spread_grows``), while its state keeps reading the location;
categorical features the PSI of the category shares (``"psi"``); binary error streams the
error-rate ratio (``"rate_ratio"``). At an alarm it is measured on the run of the CUSUM that fired
(the values since it last left zero, at most ``learning`` of them: the CUSUM's own change-point
estimate); after a learning period on the learned sample.

Minimum effect
--------------
Shifts smaller than the minimum effect must not open episodes, so a 50,000-row reference does
not turn every 0.05 sd wobble into an alarm. The opener's designs are calibrated at the edge of an
indifference zone: a numeric mean design tests ``N(m + delta, 1)`` against ``N(m, 1)`` with
``m = max(KAPPA / sqrt(n), min_effect)`` (the scale designs likewise at an sd factor
``1 +- min_effect``), so the ARL holds for every shift up to the minimum effect. Defaults:
:data:`DEFAULT_MIN_EFFECT_SD` = 0.1 reference sd, the same floor as Evidently's default rule for
numeric columns (a normed Wasserstein distance of 0.1, i.e. 0.1 reference sd for a mean shift);
categorical :data:`DEFAULT_MIN_PSI` = 0.01 = 0.1**2, the PSI of a 0.1 sd normal mean shift (PSI is
a symmetrised KL divergence, ``delta**2`` there), applied per category indicator; binary
:data:`DEFAULT_MIN_RATE_RATIO` = 1.1, an error rate 10 % above the reference. The price is delay:
a shift ``d`` is detected at the evidence rate of ``d - min_effect``, so a 0.3 sd jump takes about
twice as long as with no minimum, and a slow ramp is seen only once it has passed the minimum.

Exactness
---------
Values are mapped once to the opener's symbols and everything downstream (CUSUMs in int64 fixed
point, learned samples, magnitudes) is a deterministic function of the symbol sequence, so
``update_many`` in any chunking equals ``update`` per value, in events and in state; the monitor
pickles mid-episode.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> monitor = EpisodeMonitor.from_reference(rng.normal(size=20_000), arl=1e6)
>>> monitor.update_many(rng.normal(size=30_000)), monitor.episode
([], None)
>>> opened = monitor.update_many(rng.normal(0.5, 1, 5_000))   # the mean moves by 0.5 sd, and stays
>>> [(e.kind, e.reason, e.index - 30_000 < 500, round(e.magnitude, 1)) for e in opened]
[('opened', 'alarm', True, 0.5)]
>>> escalated = monitor.update_many(rng.normal(1.0, 1, 5_000))   # a further change, to 1 sd
>>> [(e.kind, e.reason, e.index - 35_000 < 500, e.component) for e in escalated]
[('escalated', 'larger', True, 'mean+0.4')]
>>> episode = monitor.episode  # the new regime, measured on the 2,000 values after the alarm
>>> round(episode.magnitude, 1), episode.escalations, episode.n_seen
(1.0, 1, 9818)
>>> closed = monitor.update_many(rng.normal(size=10_000))   # back to the reference
>>> [(e.kind, e.reason, e.index - 40_000 < 2_500) for e in closed], monitor.episode
([('closed', 'back_to_reference', True)], None)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from driftline.operators import watch_native
from driftline.operators.drift import psi
from driftline.operators.sequential import (
    _ONE,
    KAPPA,
    Alarm,
    BinaryDetector,
    CategoricalDetector,
    FloatArray,
    IntArray,
    NumericDetector,
    SequentialDetector,
    set_state,
)
from driftline.operators.sequential import count_quiet as count_quiet_detectors

if TYPE_CHECKING:
    from driftline.operators.profile import FeatureProfile

EpisodeKind = Literal["opened", "escalated", "closed"]

DEFAULT_MIN_EFFECT_SD = 0.1
"""Smallest numeric mean shift of interest, in reference sd (Evidently's default Wasserstein floor)."""
DEFAULT_MIN_PSI = DEFAULT_MIN_EFFECT_SD**2
"""Smallest categorical change of interest: the PSI of a 0.1 sd normal mean shift."""
DEFAULT_MIN_RATE_RATIO = 1.1
"""Smallest error-rate increase of interest, as a ratio to the reference rate."""
DEFAULT_LEARNING = 2_000
"""Values a new regime is learned from after an opening or a further change (see above)."""

RING_FIRST = 32
"""Slots of a new monitor's ring of recent symbols (it doubles as values come, up to ``learning``)."""
DEFER_AT_MOST = 256
"""Largest batch a watching monitor first tries to defer (``defer_symbols``: no alarm possible, so
counted as they wait). Its bound grows by about the largest positive increment per value and
stays under a threshold for a few hundred values at most: on larger batches it only cost a
vectorised pass (it failed on 832 of 834 batches of ~650 values in bench_stages)."""


@dataclass(frozen=True)
class EpisodeEvent:
    """One change of an episode: opened, escalated or closed."""

    kind: EpisodeKind
    index: int
    """0-based position, among the values this monitor has counted, of the value that caused it."""
    magnitude: float
    """Effect against the training reference at that point, in :attr:`unit`."""
    unit: str
    """``"sd"`` (signed mean shift in reference sd), ``"sd_ratio"`` (the values' sd over the
    reference's: a numeric change in scale), ``"psi"`` or ``"rate_ratio"``."""
    component: str
    """The CUSUM that fired (``""`` for a decision at the end of a learning period)."""
    statistic: float
    """That CUSUM's statistic at the alarm, in nats (0.0 when not applicable)."""
    threshold: float
    """Its threshold, in nats (0.0 when not applicable)."""
    reason: str
    """opened: ``"alarm"``; escalated: ``"larger"`` | ``"reversal"`` | ``"kind"``; closed:
    ``"back_to_reference"`` or the reason given to :meth:`EpisodeMonitor.close`."""


@dataclass(frozen=True)
class EpisodeState:
    """An open episode, as seen now."""

    opened_index: int
    n_seen: int
    """Values counted since it opened (the opening value included)."""
    magnitude: float
    """Current estimate against the training reference, in :attr:`unit`."""
    peak_magnitude: float
    """Largest ``|magnitude|`` so far in that unit (signed as at the peak; a ratio by its log)."""
    escalations: int
    learning: bool
    """Whether the monitor is learning the current regime (no further change is tested meanwhile)."""
    unit: str = "sd"
    """What changed, as :attr:`EpisodeEvent.unit` says: for a numeric feature ``"sd"`` (location)
    or ``"sd_ratio"`` (scale), as its latest estimate shows."""


@dataclass
class _Open:
    opened_index: int
    level: float  # magnitude at the last opened/escalated event: what an escalation is measured from
    magnitude: float
    peak: float
    escalations: int = 0
    measured: bool = False  # whether a learned sample has measured the regime yet
    # What a user reads: the change's unit (numeric: "sd" a location shift, "sd_ratio" a scale
    # change) and its size in it. The location magnitude above is what escalations are measured
    # by. "" (a checkpoint from before): the monitor's unit, the location magnitude.
    unit: str = ""
    shown: float = 0.0
    shown_peak: float = 0.0
    # Units learned samples have read the change in: a further change of kind (a shift that then
    # sticks, a location change whose noise then triples) escalates once, never on a flip back.
    kinds: tuple[str, ...] = ()
    # The spread (log of the sd_ratio reading) at the last opened/escalated event when that event
    # read a change in scale: what a further change in scale is measured from (None: it read a
    # location shift, or a checkpoint from before).
    spread_level: float | None = None
    # The spread (log of the sd ratio) the episode's events last told a user, whatever the unit
    # the episode reads now (None: no event read the change in scale). A location episode whose
    # noise grows is measured against it: its row says "sd", its spread is told by an escalation.
    spread_told: float | None = None

    def saw(self, magnitude: float, learned: bool, shown: tuple[str, float]) -> None:
        """A new estimate; the peak follows learned samples (an alarm's run is a biased estimate).
        The shown peak restarts when the kind of change does (a peak is in one unit)."""
        measured = self.measured
        self.magnitude = magnitude
        if learned and (not self.measured or abs(magnitude) > abs(self.peak)):
            self.peak = magnitude
            self.measured = True
        unit, value = shown
        if unit != self.unit:
            self.unit, self.shown_peak = unit, value
        elif learned and (not measured or _size(unit, value) > _size(unit, self.shown_peak)):
            self.shown_peak = value
        self.shown = value

    def shown_as(self, default_unit: str) -> tuple[str, float, float]:
        """(unit, magnitude, peak) as a user reads them."""
        if not self.unit:
            return default_unit, self.magnitude, self.peak
        return self.unit, self.shown, self.shown_peak


def _size(unit: str, value: float) -> float:
    """How far ``value`` (in ``unit``) is from "as in the reference": a ratio by its log."""
    if unit == "sd_ratio":
        return abs(math.log(max(value, _TINY)))
    return abs(value)


class EpisodeMonitor:
    """Drift episodes of one stream (a feature, or a classifier's error stream) against its reference.

    ``update`` returns the :class:`EpisodeEvent` a value causes, if any; ``update_many`` the events
    of a batch (at most one per value); :attr:`episode` the open episode; :meth:`close` ends it
    (e.g. because a new reference profile applies). ``min_effect`` is in the monitor's
    :attr:`unit`: reference sd, PSI, or rate ratio.

    >>> mon = EpisodeMonitor.from_rate(0.10, arl=1e6, n_reference=50_000)
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> mon.update_many(rng.random(20_000) < 0.10)
    []
    >>> [(e.kind, e.unit, e.component) for e in mon.update_many(rng.random(5_000) < 0.3)]
    [('opened', 'rate_ratio', 'error rate x2')]
    >>> round(mon.episode.magnitude)   # the error rate tripled
    3
    >>> mon.close("new_profile").reason, mon.episode
    ('new_profile', None)
    """

    kind: str
    unit: str
    arl: float
    min_effect: float
    learning: int
    n: int
    """Values counted so far (None/NaN are skipped, as the detectors do)."""

    def __init__(self, opener: NumericDetector | CategoricalDetector | BinaryDetector, *,
                 min_effect: float, learning: int = DEFAULT_LEARNING) -> None:
        """Wrap an opener already built with the minimum effect (use the ``from_*`` constructors)."""
        if learning < 50:
            raise ValueError("learning must be at least 50 values")
        self.kind = opener.kind
        self.unit = {"numeric": "sd", "categorical": "psi", "binary": "rate_ratio"}[opener.kind]
        self.arl = opener.arl
        self.min_effect = float(min_effect)
        self.learning = int(learning)
        self.n = 0
        self._opener = opener
        self._opener_h = opener.thresholds_fixed  # as calibrated for independent values
        self._opener_inflation = np.ones(len(opener.components))  # for serial dependence (see above)
        self._regime: SequentialDetector | None = None
        self._map: IntArray | None = None  # opener symbol -> regime symbol
        symbols = opener._table.shape[0]  # the smallest type that holds them: memory and checkpoints
        small = np.uint8 if symbols <= 2**8 else np.int16 if symbols < 2**15 else np.int32
        # slot i % learning: symbol i (recent ones); grown as values come, up to ``learning`` slots
        # (a quiet model's monitors see a few values per shard: most never need 2,000)
        self._ring = np.zeros(min(RING_FIRST, self.learning), dtype=small)
        # during an episode, the regime's values; allocated when one opens (most monitors never do)
        self._learned: npt.NDArray[np.integer[Any]] | None = None
        self._filled = 0  # values so far: the learning sample, or the current block while watching
        self._refine = False  # the learning period follows an event: it refines that event's level
        self._open: _Open | None = None

    @property
    def _sample(self) -> npt.NDArray[np.integer[Any]]:
        """The regime's values so far (the first ``_filled``), empty while none is being learned."""
        return self._learned if self._learned is not None else np.zeros(0, dtype=self._ring.dtype)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_sample" in state:  # a checkpoint from before the buffer was allocated on first use
            state = dict(state)
            sample = state.pop("_sample")
            state["_learned"] = sample if state.get("_open") is not None else None
        set_state(self, state)  # compact: 1,000 models x 4 shards hold 100,000 monitors

    _pending: tuple[str, float, float, int] | None = None
    """A regime alarm away from the reference, awaiting its replicate: evidence, replicate size."""
    _regime_sd: float = 1.0
    _refine_spread: bool = False
    """The learning period follows a spread told by a replicate: it refines the spread told."""
    """Standard deviation of the learned regime's scores (numeric), in reference sd."""

    # -- constructors ---------------------------------------------------------------------------

    @classmethod
    def from_reference(cls, values: Iterable[Any], *, arl: float = 1_000_000.0,
                       min_effect: float = DEFAULT_MIN_EFFECT_SD,
                       learning: int = DEFAULT_LEARNING) -> EpisodeMonitor:
        """A numeric feature, from a reference sample."""
        det = NumericDetector.from_reference(values, arl=arl, min_effect=min_effect)
        return cls(det, min_effect=min_effect, learning=learning)

    @classmethod
    def from_categories(cls, values: Iterable[Any], *, arl: float = 1_000_000.0,
                        min_psi: float = DEFAULT_MIN_PSI, learning: int = DEFAULT_LEARNING,
                        max_categories: int = 50) -> EpisodeMonitor:
        """A categorical feature, from a reference sample."""
        det = CategoricalDetector.from_reference(values, arl=arl, max_categories=max_categories,
                                                 min_psi=min_psi)
        return cls(det, min_effect=min_psi, learning=learning)

    @classmethod
    def from_counts(cls, categories: Sequence[str], counts: Sequence[int], *, arl: float = 1_000_000.0,
                    min_psi: float = DEFAULT_MIN_PSI, learning: int = DEFAULT_LEARNING) -> EpisodeMonitor:
        """A categorical feature, from reference counts ("other" last, a profile's layout)."""
        det = CategoricalDetector.from_counts(categories, counts, arl=arl, min_psi=min_psi)
        return cls(det, min_effect=min_psi, learning=learning)

    @classmethod
    def from_rate(cls, p0: float, *, arl: float = 1_000_000.0, n_reference: int | None = None,
                  min_ratio: float = DEFAULT_MIN_RATE_RATIO,
                  learning: int = DEFAULT_LEARNING) -> EpisodeMonitor:
        """A binary error stream (1 = error) against the reference error rate ``p0``."""
        # the episode's own learning and regime banks stand in for tightening the reference
        det = BinaryDetector.from_rate(p0, arl=arl, n_reference=n_reference, min_ratio=min_ratio,
                                       tighten=False)
        return cls(det, min_effect=min_ratio, learning=learning)

    @classmethod
    def for_profile(cls, profile: FeatureProfile, *, arl: float, min_effect: float = DEFAULT_MIN_EFFECT_SD,
                    learning: int = DEFAULT_LEARNING, n_reference: int | None = None) -> EpisodeMonitor:
        """The monitor for one feature of a reference profile; ``min_effect`` in reference sd
        (a categorical feature gets ``min_psi = min_effect**2``, see the module docstring);
        ``n_reference``: what a numeric reference is worth if not its ``n`` values."""
        if profile.kind == "numeric":
            det: NumericDetector | CategoricalDetector = NumericDetector.from_sketch(
                profile.reference_sketch(), n_reference or profile.n, arl=arl, min_effect=min_effect)
            return cls(det, min_effect=min_effect, learning=learning)
        det = CategoricalDetector.from_counts(profile.categories, profile.ref_counts, arl=arl,
                                              min_psi=min_effect**2)
        return cls(det, min_effect=min_effect**2, learning=learning)

    # -- the River-style surface ----------------------------------------------------------------

    @property
    def episode(self) -> EpisodeState | None:
        """The open episode, or None."""
        ep = self._open
        if ep is None:
            return None
        unit, magnitude, peak = ep.shown_as(self.unit)
        return EpisodeState(ep.opened_index, self.n - ep.opened_index, magnitude, peak,
                            ep.escalations, self._regime is None, unit)

    def update(self, x: Any) -> EpisodeEvent | None:
        """Count one value (None/NaN skipped); the event it causes, if any."""
        sym = self._opener._symbol(x)
        if sym is None:
            return None
        return self._step(sym)

    def update_each(self, xs: Any) -> list[tuple[int, EpisodeEvent]]:
        """Count a few values one by one, as :meth:`update` does, in the same state after each;
        ``(position in xs, event)`` for each event. What a model with little traffic needs: the
        symbols found together on Python lists (no arrays), and while watching the reference the
        head of values on which no CUSUM can alarm counted in one loop of the opener's bound
        (:meth:`~driftline.operators.sequential.SequentialDetector.defer_each`), not a step each;
        that head in C where the install built ``_watch.c`` (the same steps: :meth:`_defer`)."""
        values, at = self._opener._symbol_list(xs)
        events: list[tuple[int, EpisodeEvent]] = []
        i, total = 0, len(values)
        while i < total:
            if self._open is None and self._map is None:
                # watching the reference: the values no CUSUM can alarm on only wait in the
                # opener, as _step would leave them one by one (the opener's bound, step for step)
                rest = values[i:] if i else values
                fast = watch_native.NATIVE
                counted = -1 if fast is None else fast.defer_few(self, self._opener, rest)
                i += self._defer(rest) if counted < 0 else counted  # (-1: the C path left it to Python)
                if i == total:
                    break
            event = self._step(values[i])  # at the bound: the opener settles (or it is an episode)
            if event is not None:
                events.append((i if at is None else at[i], event))
            i += 1
        return events

    def _defer(self, values: list[int]) -> int:
        """Count the head of ``values`` the opener only defers (see update_each); how many."""
        first = self._opener.defer_each(values)
        if first:
            n, learning, ring = self.n, self.learning, self._ring
            if n + first > ring.size < learning:
                while self._ring.size < min(n + first, learning):  # doubling, as _step grows it
                    self._ring_room(self._ring.size + 1)
                ring = self._ring
            at = n % learning
            for sym in values if first == len(values) else values[:first]:
                ring[at] = sym  # a slot each: cheaper than a slice from a list for a few
                at += 1
                if at == learning:
                    at = 0
            self.n = n + first
        return first

    def _step(self, sym: int) -> EpisodeEvent | None:
        # the scalar path of _count, step for step (a batch of one is ~10x slower)
        event: EpisodeEvent | None = None
        if self._open is not None and self._regime is None:
            event = self._collect(np.array([sym], dtype=np.int64), self.n)
        else:
            det = self._watching()
            alarm = det.update_symbol(sym if self._map is None else int(self._map[sym]))
            if alarm is not None:
                event = self._alarmed(alarm, det, self._recent(np.array([sym], dtype=np.int64)), self.n)
            elif self._open is not None:
                event = self._collect(np.array([sym], dtype=np.int64), self.n)
        if self.n >= self._ring.size < self.learning:
            self._ring_room(self.n + 1)
        self._ring[self.n % self.learning] = sym
        self.n += 1
        return event

    def update_many(self, xs: Any) -> list[EpisodeEvent]:
        """Count a batch in order; its events (indices global). Identical to ``update`` per value."""
        return self._count(self._opener._symbols(xs))

    def symbols(self, xs: Any) -> IntArray:
        """What :meth:`update_many` counts of ``xs`` (for :func:`count_quiet`)."""
        return self._opener._symbols(xs)

    def batch_edges(self) -> FloatArray | None:
        """Where each valid number's symbol (:meth:`symbols`) is its count of these sorted edges
        below it (see :meth:`~driftline.operators.sequential.SequentialDetector.batch_edges`)."""
        return self._opener.batch_edges()

    def close(self, reason: str) -> EpisodeEvent | None:
        """End the open episode (e.g. a new profile applies); its closing event, None if none is open."""
        if self._open is None:
            return None
        unit, magnitude, _ = self._open.shown_as(self.unit)
        event = EpisodeEvent("closed", self.n - 1, magnitude, unit, "", 0.0, 0.0, reason)
        self._watch_reference()
        return event

    def __repr__(self) -> str:
        ep = self.episode
        state = ("no episode" if ep is None
                 else f"episode since {ep.opened_index}, {ep.magnitude:+.3g} {ep.unit}")
        return f"EpisodeMonitor(kind={self.kind!r}, arl={self.arl:g}, n={self.n}, {state})"

    # -- internals ------------------------------------------------------------------------------

    def _count(self, syms: IntArray) -> list[EpisodeEvent]:
        events: list[EpisodeEvent] = []
        pos, total = 0, syms.size
        if (self._open is None and self._map is None and 0 < total <= DEFER_AT_MOST
                and self._opener.defer_symbols(syms)):
            pos = total  # watching, and no alarm can be among them: counted as they wait
        while pos < total:
            event = None
            if self._open is not None and self._regime is None:  # learning: nothing is tested
                end = self.learning if self._pending is None else self._pending[3]
                take = min(end - self._filled, total - pos)
                event = self._collect(syms[pos : pos + take], self.n + pos + take - 1)
                pos += take
            else:
                det = self._watching()
                # during an episode, at most to the end of the current block of the regime's values
                chunk = syms[pos:] if self._open is None else syms[pos : pos + self.learning - self._filled]
                alarms, used = det.run_symbols(chunk if self._map is None else self._map[chunk],
                                               first_only=True)
                pos += used
                if alarms:
                    event = self._alarmed(alarms[0], det, self._recent(syms[:pos]), self.n + pos - 1)
                elif self._open is not None:
                    event = self._collect(chunk[:used], self.n + pos - 1)
            if event is not None:
                events.append(event)
        self._ring_room(self.n + total)
        self._ring_put(syms[-self.learning :], self.n + total)
        self.n += total
        return events

    def _grow_ring(self, runs: Sequence[tuple[int, bool]] | None, total: int) -> None:
        """Grow the ring as counting ``total`` more symbols in ``runs`` would (see count_quiet)."""
        if runs is None:
            self._ring_room(self.n + total)
            return
        n = self.n
        for size, one_by_one in runs:
            if one_by_one:  # as _defer and _step grow it: doubling as the values come
                while self._ring.size < min(n + size, self.learning):
                    self._ring_room(self._ring.size + 1)
            else:
                self._ring_room(n + size)
            n += size

    def _ring_put(self, last: IntArray, count: int) -> None:
        """Put the last symbols of the first ``count`` in their slots (``i % learning`` for the
        ``i``-th): at most two slices, as the slots wrap around once at most."""
        at = (count - last.size) % self.learning
        head = min(last.size, self.learning - at)
        self._ring[at : at + head] = last[:head]
        self._ring[: last.size - head] = last[head:]

    def _ring_room(self, count: int) -> None:
        """Slots for the first ``count`` symbols (doubling, at most ``learning``). Below ``learning``
        slots every symbol so far sits at its own index, which is its slot in the full ring too."""
        size = self._ring.size
        if count <= size or size >= self.learning:
            return
        grown = np.zeros(min(self.learning, max(count, 2 * size)), dtype=self._ring.dtype)
        grown[:size] = self._ring
        self._ring = grown

    def _collect(self, syms: IntArray, index: int) -> EpisodeEvent | None:
        """Add values (ending at ``index``) to the regime's sample; when it is full, judge it."""
        if self._learned is None:
            self._learned = np.zeros(self.learning, dtype=self._ring.dtype)
        self._learned[self._filled : self._filled + syms.size] = syms
        self._filled += syms.size
        if self._pending is not None and self._filled == self._pending[3]:
            return self._replicated(self._learned[: self._filled].astype(np.int64), index)
        if self._filled < self.learning:
            return None
        sample, self._filled = self._learned.astype(np.int64), 0
        if self._regime is not None:  # a block while watching the regime: re-measure, may close
            return self._measured(sample, index, escalate=False)
        event = self._measured(sample, index, escalate=not self._refine, learned=True)
        if self._open is not None:
            try:
                self._regime, self._map = self._regime_bank(sample)
                self._regime.scale_thresholds(self._regime.thresholds_fixed,
                                              _inflation(self._regime, self._map[sample]))
            except ValueError:  # no change can be designed against this regime: learn it again
                self._regime, self._map = None, None
        return event

    def _watching(self) -> SequentialDetector:
        """The bank that tests now: the regime's during an episode, else the opener."""
        return self._regime if self._open is not None and self._regime is not None else self._opener

    def _recent(self, head: IntArray) -> IntArray:
        """The last ``learning`` symbols: those counted before this batch, then ``head``."""
        have = min(self.n, self.learning)
        older = self._ring[(self.n - have + np.arange(have)) % self.learning]
        return np.concatenate((older, head))[-self.learning :]

    def _alarmed(self, alarm: Alarm, det: SequentialDetector, recent: IntArray,
                 index: int) -> EpisodeEvent | None:
        """An alarm at ``index``: open, or escalate (or only re-learn); then learn the new regime."""
        mapped = recent if det is self._opener or self._map is None else self._map[recent]
        run = recent[-_run_length(det, alarm, mapped) :]
        magnitude = self._magnitude(run)
        # a mean CUSUM names a location change; a scale CUSUM also fires first on a large mean
        # shift (values far out in a tail), so its run's values say which
        shown = self._shown(run, magnitude, scale=None if alarm.component.startswith("scale") else False,
                            run=True)
        event: EpisodeEvent | None = None
        self._pending = None
        if self._open is None:
            self._open = _Open(index, magnitude, magnitude, magnitude)
            self._set_level(magnitude, shown)
            self._told(shown)
            self._open.saw(magnitude, learned=False, shown=shown)
            event = EpisodeEvent("opened", index, shown[1], shown[0], alarm.component, alarm.statistic,
                                 alarm.threshold, "alarm")
        else:
            # only a change away from the reference can escalate before a learned sample, and only
            # once the values after the alarm replicate it: the alarm's run is selected for being
            # extreme (a burst that a calibrated bank still meets once per ARL reads as a large
            # change), a replicate is not. Anything else (back towards the reference, across it, a
            # scale or category mix change) is judged on the learned sample.
            if self._away(alarm.component) and self._escalation(magnitude) == "larger":
                self._pending = (alarm.component, alarm.statistic, alarm.threshold,
                                 self._replicate_size(magnitude))
            elif (self._spread_away(alarm.component) and shown[0] == "sd_ratio"
                  and self._escalation(_log_ratio(shown[1]), self._open.spread_level) == "larger"):
                # the same for a scale change in an episode that reads one: its spread's log
                self._pending = (alarm.component, alarm.statistic, alarm.threshold,
                                 self._replicate_size(_log_ratio(shown[1]), spread=True))
            elif (spread := self._spread_grows(alarm.component, run)) is not None:
                # a location episode's noise grows: its replicate may tell the spread (_spread_untold)
                self._pending = (alarm.component, alarm.statistic, alarm.threshold,
                                 self._replicate_size(spread, spread=True))
            self._open.saw(magnitude, learned=False, shown=shown)
        self._regime, self._map = None, None
        self._filled = 0  # learn the regime after the change
        self._refine = event is not None
        return event

    def _told(self, shown: tuple[str, float]) -> None:
        """An event told a user ``shown`` (unit, reading): remember the spread when it read one."""
        assert self._open is not None
        if shown[0] == "sd_ratio":
            self._open.spread_told = _log_ratio(shown[1])

    def _set_level(self, magnitude: float, shown: tuple[str, float]) -> None:
        """What a further change is measured from: the location ``magnitude``, and the spread
        when the event's values read a change in scale (``shown``: their unit and reading)."""
        assert self._open is not None
        unit, value = shown
        self._open.level = magnitude
        self._open.spread_level = _log_ratio(value) if unit == "sd_ratio" else None

    def _replicate_size(self, magnitude: float, spread: bool = False) -> int:
        """Values after a regime alarm that must confirm it: enough that the excess over the level
        which the alarm's run shows stands :data:`REPLICATE_SE` standard errors out (so a real change
        even a quarter smaller than its run suggests passes the ``KAPPA``-se test of
        :meth:`_replicated` nearly always), at least :data:`MIN_REPLICATE`, at most half a learning
        period (the rest of which is learned as usual)."""
        assert self._open is not None
        if spread:  # ``magnitude`` is the log of a spread; one value's share of its se: SPREAD_SE
            level = self._open.spread_level
            if level is None:  # a location episode: from the spread it told, if any
                level = self._open.spread_told or 0.0
            excess, sd = abs(magnitude) - abs(level), SPREAD_SE
        else:
            excess, sd = abs(magnitude) - abs(self._open.level), self._sd_at_level()
        need = math.ceil((REPLICATE_SE * sd / max(excess, 1e-9)) ** 2)
        return min(max(need, MIN_REPLICATE), self.learning // 2)

    def _sd_at_level(self) -> float:
        """Standard deviation of one value at the episode's level, in the monitor's unit."""
        assert self._open is not None
        opener = self._opener
        if isinstance(opener, BinaryDetector):
            p = min(max(self._open.level * opener.p0, 1e-9), 1.0 - 1e-9)
            return math.sqrt(p * (1.0 - p)) / opener.p0
        return self._regime_sd

    def _replicated(self, sample: IntArray, index: int) -> EpisodeEvent | None:
        """The replicate after a regime alarm is complete (at ``index``): escalate if it confirms,
        i.e. is larger by the tolerance and stands ``KAPPA`` standard errors above the level."""
        assert self._open is not None and self._pending is not None
        component, statistic, threshold, _ = self._pending
        self._pending = None
        magnitude = self._magnitude(sample)
        unit, shown = self._shown(sample, magnitude)
        if component.startswith("scale*") and self._open.spread_level is None:
            # a location episode's noise grew (see _spread_grows): told as _measured tells it
            return self._spread_event(self._spread_untold(sample), index, component, statistic,
                                      threshold)
        if component.startswith("scale*"):  # a scale change, by its spread (see _alarmed)
            spread, level = _log_ratio(shown), self._open.spread_level
            if (unit != "sd_ratio" or level is None or self._escalation(spread, level) != "larger"
                    or abs(spread) - abs(level) < KAPPA * SPREAD_SE / math.sqrt(sample.size)):
                return None
        else:
            se = self._sd_at_level() / math.sqrt(sample.size)
            if self._escalation(magnitude) != "larger" or abs(magnitude) - abs(self._open.level) < KAPPA * se:
                return None  # not replicated: the learned sample judges the regime as usual
        self._open.saw(magnitude, learned=False, shown=(unit, shown))
        self._set_level(magnitude, (unit, shown))
        self._open.escalations += 1
        self._refine = True
        self._told((unit, shown))
        return EpisodeEvent("escalated", index, shown, unit, component, statistic, threshold, "larger")

    def _measured(self, sample: IntArray, index: int, escalate: bool,
                  learned: bool = False) -> EpisodeEvent | None:
        """A full sample of the current regime at ``index``: close, escalate or only update.
        ``learned``: the sample after an event or alarm (not a block re-measured while watching),
        whose spread a location episode also reports when no event told it (see _spread_told)."""
        assert self._open is not None
        magnitude = self._magnitude(sample)
        unit, shown = self._shown(sample, magnitude, keep=self._open.unit)
        if self._within_reference(sample, magnitude):
            # in the unit the episode was read in, so its last figure compares with its others
            unit, shown = self._shown(sample, magnitude, scale=self._open.unit == "sd_ratio")
            self._watch_reference()
            # the stream as it is when within the reference: its serial dependence raises the
            # opener's thresholds for good (only ever upwards), so the same cycle does not reopen
            np.maximum(self._opener_inflation, _inflation(self._opener, sample), out=self._opener_inflation)
            self._opener.scale_thresholds(self._opener_h, self._opener_inflation)
            return EpisodeEvent("closed", index, shown, unit, "", 0.0, 0.0, "back_to_reference")
        reason = ""
        if escalate:
            # a change in scale, in an episode whose last event read one, is measured by its
            # spread (x2 -> x5 is a larger change though the mean did not move); else by location
            spread_level = self._open.spread_level
            if unit == "sd_ratio" and spread_level is not None:
                reason = self._escalation(_log_ratio(shown), spread_level)
            else:
                reason = self._escalation(magnitude)
            if not reason and self._new_kind(unit, shown):
                reason = "kind"
        told = None
        if learned and self._refine_spread:
            # the learned sample after a spread told by a replicate: the same change, measured on
            # its own sample (the replicate's tens of values read x3 as 1.9-3.7), never a further one
            self._refine_spread = False
            self._open.spread_told = self._spread_read(sample)[0]
        elif learned and not reason and unit == "sd":
            told = self._spread_untold(sample)
        if unit not in self._open.kinds:
            self._open.kinds = (*self._open.kinds, unit)
        self._open.saw(magnitude, learned=True, shown=(unit, shown))
        if self._refine:  # the same change, measured on its own sample rather than the alarm's run
            self._set_level(magnitude, (unit, shown))
            self._refine = False
        if told is not None:
            # the location is still the larger change (the row reads it), the spread is news
            return self._spread_event(told, index)
        if not reason:
            return None
        self._set_level(magnitude, (unit, shown))
        self._open.escalations += 1
        self._told((unit, shown))
        return EpisodeEvent("escalated", index, shown, unit, "", 0.0, 0.0, reason)

    def _spread_event(self, told: tuple[str, float] | None, index: int, component: str = "",
                      statistic: float = 0.0, threshold: float = 0.0) -> EpisodeEvent | None:
        """The escalation that tells a location episode's spread (``told``: reason, sd ratio)."""
        assert self._open is not None
        if told is None:
            return None
        reason, ratio = told
        self._open.spread_told = _log_ratio(ratio)
        if "sd_ratio" not in self._open.kinds:
            self._open.kinds = (*self._open.kinds, "sd_ratio")
        self._open.escalations += 1
        if component:  # after a replicate: the learned sample that follows refines, as after a shift's
            self._refine = self._refine_spread = True
        return EpisodeEvent("escalated", index, ratio, "sd_ratio", component, statistic, threshold, reason)

    def _spread_grows(self, component: str, run: IntArray) -> float | None:
        """The log of the spread of a regime alarm's ``run`` (by their sd) when the alarm is a
        scale CUSUM's in a location episode and the run reads the spread further from the one told
        (1 if none) by the minimum effect, in the CUSUM's direction; else None."""
        assert self._open is not None
        opener = self._opener
        if (not isinstance(opener, NumericDetector) or self._open.spread_level is not None
                or not component.startswith("scale*")):
            return None
        base = self._open.spread_told or 0.0
        spread = _log_ratio(float(np.std(opener._u[run])))
        wider = float(component.partition("*")[2]) > 1.0
        if (spread - base if wider else base - spread) < self._tolerance():
            return None
        return spread

    def _spread_untold(self, sample: IntArray) -> tuple[str, float] | None:
        """(reason, sd ratio) when a learned sample of a location episode reads a spread its
        events have not told: further from the spread last told (the reference's, 1, when none
        was) by the minimum effect and by ``KAPPA`` standard errors, in its log (``"kind"`` the
        first time, then ``"larger"`` / ``"reversal"``). A shift of +2 sd whose noise triples, at
        once or later, is a mean shift *and* a noisier sensor; acting on the shift alone is the
        wrong diagnosis. Read by quartiles as :meth:`_shown` does, but judged on what the
        reference's cells allow: a quartile's symbol places its value anywhere between its
        neighbours' scores (the reference's cells hold ~1/512 of it each, ~0.2 sd wide at 2.7 sd,
        and the symbol past an end is unbounded), so the test takes the end of that interval
        nearest the spread told. A pure shift of 3 sd, whose upper quartile sits in the coarse
        tail, read 0.5-1.25 at the point and must not report a spread."""
        assert self._open is not None
        opener = self._opener
        if not isinstance(opener, NumericDetector):
            return None
        point, low, high = self._spread_read(sample)
        told = self._open.spread_told
        base = 0.0 if told is None else told
        if low >= base:
            spread = low
        elif high <= base:
            spread = high
        else:
            return None  # the cells cannot tell it from the spread told
        if abs(spread - base) < KAPPA * self._spread_se(opener._u[sample]):
            return None
        if told is None:
            reason = "kind" if abs(spread) >= self._tolerance() else ""
        else:
            reason = self._escalation(spread, told)
        return (reason, math.exp(point)) if reason else None

    def _spread_read(self, sample: IntArray) -> tuple[float, float, float]:
        """The log of a sample's spread by its quartiles' scores, and the lowest and highest it can
        be given their cells (see :meth:`_spread_untold`)."""
        opener = self._opener
        assert isinstance(opener, NumericDetector)
        u, last = opener._u, opener._u.size - 1
        s1, s3 = (int(q) for q in np.quantile(sample, (0.25, 0.75), method="inverted_cdf"))
        lowest = max(float(u[max(s3 - 1, 0)] - u[min(s1 + 1, last)]), 0.0)
        highest = math.inf if s1 == 0 or s3 == last else float(u[s3 + 1] - u[s1 - 1])
        point = _log_ratio(float(u[s3] - u[s1]) / NORMAL_IQR)
        return point, _log_ratio(lowest / NORMAL_IQR), math.log(highest / NORMAL_IQR)

    @staticmethod
    def _spread_se(scores: FloatArray) -> float:
        """Standard error of the log of the spread of ``scores`` (a learned sample's), read by
        quartiles: :data:`SPREAD_SE` over the root of their count for independent values, or the
        batch-means estimate (:data:`SERIAL_BATCHES` batches' log spreads) if larger. A real
        stream's spread wanders with its cycles: NOAA's feat_4, a location episode, read 15 %
        wider than its reference on one shard's learned sample, ~6 iid standard errors, and
        within a few of the batch-means one."""
        iid = SPREAD_SE / math.sqrt(scores.size)
        size = scores.size // SERIAL_BATCHES
        if size < MIN_REPLICATE:  # batches too small to read quartiles from
            return iid
        batches = scores[: size * SERIAL_BATCHES].reshape(SERIAL_BATCHES, size)
        q1, q3 = np.quantile(batches, (0.25, 0.75), axis=1)
        logs = np.log(np.maximum((q3 - q1) / NORMAL_IQR, _TINY))
        return max(iid, float(np.std(logs, ddof=1)) / math.sqrt(SERIAL_BATCHES))

    def _new_kind(self, unit: str, shown: float) -> bool:
        """Whether a learned sample reads the change in a unit no learned sample of the episode
        has, clearly (by the minimum effect in that unit): a numeric episode's location shift that
        becomes a stuck sensor or a noisier one is a further change, though its mean moved little."""
        assert self._open is not None
        return (self.kind == "numeric" and bool(self._open.kinds) and unit not in self._open.kinds
                and _size(unit, shown) >= self._tolerance())

    def _watch_reference(self) -> None:
        self._open, self._regime, self._map, self._filled, self._pending = None, None, None, 0, None
        self._learned, self._refine_spread = None, False
        self._opener.reset()

    def _spread_away(self, component: str) -> bool:
        """Whether a regime bank's alarm is a scale change away from the reference (wider in a
        wider regime, narrower in a narrower one) in an episode whose last event read one."""
        assert self._open is not None
        level = self._open.spread_level
        if self.kind != "numeric" or level is None or not component.startswith("scale*"):
            return False
        factor = float(component.partition("*")[2])
        return (factor > 1.0 and level > 0.0) or (factor < 1.0 and level < 0.0)

    def _away(self, component: str) -> bool:
        """Whether a regime bank's alarm is a mean change away from the reference."""
        assert self._open is not None
        if self.kind == "categorical":
            return False
        if self.kind == "binary":
            return True  # the regime's bank tests increases only
        up = component.startswith("mean+")
        return (up and self._open.level > 0) or (component.startswith("mean-") and self._open.level < 0)

    def _escalation(self, magnitude: float, level: float | None = None) -> str:
        """``"larger"`` / ``"reversal"`` when ``magnitude`` escalates the episode, else ``""``;
        against ``level`` (a numeric spread's log) if given, else the episode's level."""
        assert self._open is not None
        step = self._tolerance()
        if level is None:
            level = self._open.level
        if self.kind == "numeric":
            if magnitude * level < 0 and abs(magnitude) >= step:
                return "reversal"
            return "larger" if abs(magnitude) >= abs(level) + step else ""
        if self.kind == "binary":
            return "larger" if magnitude >= level * step else ""
        return "larger" if magnitude >= level + step else ""

    def _tolerance(self, size: int | None = None) -> float:
        """The smallest effect the monitor reports: the minimum effect, or what a sample of
        ``size`` values (default: a learned sample) resolves (``KAPPA`` standard errors; a sample's
        PSI against its own population is about ``categories / size``) if larger, so a monitor
        with no minimum effect closes too."""
        size = self.learning if size is None else size
        resolution = KAPPA / math.sqrt(size)
        opener = self._opener
        if isinstance(opener, NumericDetector):
            return max(self.min_effect, resolution)
        if isinstance(opener, BinaryDetector):
            return max(self.min_effect, 1.0 + resolution * math.sqrt((1.0 - opener.p0) / opener.p0))
        assert isinstance(opener, CategoricalDetector)
        return self.min_effect + len(opener.categories) / size

    def _magnitude(self, syms: IntArray) -> float:
        """Effect of the values ``syms`` (opener symbols) against the training reference."""
        opener = self._opener
        if isinstance(opener, NumericDetector):
            return float(np.mean(opener._u[syms]))
        if isinstance(opener, BinaryDetector):
            return float(np.mean(syms)) / opener.p0
        assert isinstance(opener, CategoricalDetector)
        k = len(opener.categories) + 1
        return psi(opener.reference_shares, np.bincount(syms, minlength=k))

    def _within_reference(self, sample: IntArray, magnitude: float) -> bool:
        """The reverse test on a learned sample: back within the tolerance of the reference, the
        sample as a whole and its latest half. A whole sample can look like the reference while
        its end is nothing like it: a feature drifting across its reference's range, then stuck
        at a value near the reference's middle, gave a sample of the right mean and sd; an
        episode must not close ``back_to_reference`` on it."""
        latest = sample[sample.size // 2 :]
        return (self._within(sample, magnitude, self._tolerance())
                and self._within(latest, self._magnitude(latest), self._tolerance(latest.size)))

    def _within(self, sample: IntArray, magnitude: float, tolerance: float) -> bool:
        if isinstance(self._opener, NumericDetector):
            sd = float(np.std(self._opener._u[sample]))
            return abs(magnitude) < tolerance and abs(sd - 1.0) < tolerance
        return magnitude < tolerance

    def _shown(self, syms: IntArray, magnitude: float, scale: bool | None = None,
               run: bool = False, keep: str = "") -> tuple[str, float]:
        """(unit, magnitude) a user reads for the values ``syms`` whose location effect is
        ``magnitude``. A numeric change is in location (``"sd"``: the mean shift in reference sd)
        or in scale (``"sd_ratio"``: the values' spread over the reference's; the sd ratio for a
        normal feature, 0 for a stuck sensor). ``scale`` says which when known (``False`` at a
        mean CUSUM's alarm); else the larger effect does, a shift ``d`` against a spread factor
        ``exp(d)`` (the designs' own scale: means ``+- m`` and sd factors ``1 +- m``). An alarm's
        ``run`` (tens of values) is read by its mean and sd; a learned sample by its median and
        quartiles (interquartile range over a normal's): scores saturate past the reference's
        ends, so a tripled sd read 2.45 by the scores' sd and reads 2.98 by their quartiles. Values
        mostly past one of the reference's ends have a location only, and a few equal values (a
        run of one far out in a tail) measure no spread. ``keep``: the unit the episode reads now
        (a learned sample's): the other effect must be larger by the minimum effect to change it,
        so a change about as much in location as in spread does not flip between the two from
        one learning period to the next (elec2's nswdemand: 0.007 sd against x1.03, -0.53 sd
        against x0.73, 0.007 sd against x1.09 on one shard; each flip a row's unit changing with
        no event)."""
        opener = self._opener
        if not isinstance(opener, NumericDetector):
            return self.unit, magnitude
        u = opener._u[syms]
        centre, spread = self._centre_spread(u, magnitude, run)
        if scale is None:
            beyond = max(float(np.mean(u <= opener._u.min())), float(np.mean(u >= opener._u.max())))
            # the margin by which the spread must exceed the location: the minimum effect when
            # that moves the unit off the one kept, against it when it moves the unit back to it
            margin = {"sd": 1.0, "sd_ratio": -1.0}.get(keep, 0.0) * self._tolerance()
            scale = (_size("sd_ratio", spread) > abs(centre) + margin and beyond < 0.5
                     and (spread > 0 or syms.size >= MIN_REPLICATE))
        return ("sd_ratio", spread) if scale else ("sd", magnitude)

    @staticmethod
    def _centre_spread(u: FloatArray, magnitude: float, run: bool) -> tuple[float, float]:
        """Location and spread of the scores ``u`` (see :meth:`_shown`): an alarm's run by their
        mean (``magnitude``) and sd, a learned sample by their median and quartiles."""
        if run:
            return magnitude, float(np.std(u))
        q1, centre, q3 = (float(q) for q in np.quantile(u, (0.25, 0.5, 0.75)))
        return centre, (q3 - q1) / NORMAL_IQR

    def _regime_bank(self, sample: IntArray) -> tuple[SequentialDetector, IntArray]:
        """The bank that watches the learned regime, and the map from opener symbols to its own."""
        opener = self._opener
        if isinstance(opener, CategoricalDetector):
            counts = np.bincount(sample, minlength=len(opener.categories) + 1)
            cat = CategoricalDetector.from_counts(opener.categories, counts.tolist(), arl=self.arl,
                                                  min_psi=self.min_effect)
            return cat, cat._symbols([*opener.categories, _OTHER])
        if isinstance(opener, BinaryDetector):
            # the Bernoulli test the opener uses, against the learned rate as an estimate from the
            # sample (a normal-score bank fits a two-point sample badly: its short bursts alarmed);
            # a return downwards is left to the block re-measurements (the reverse test)
            p = min(max(float(np.mean(sample)), 1.0 / sample.size), 1.0 - 1.0 / sample.size)
            rate = BinaryDetector.from_rate(p, arl=self.arl, n_reference=sample.size,
                                            min_ratio=self.min_effect, tighten=False)
            return rate, np.arange(2, dtype=np.int64)
        scores = opener._u[sample]
        self._regime_sd = max(float(np.std(scores)), 1e-9)
        effect = min(self.min_effect / self._regime_sd, 0.5)
        num = NumericDetector.from_reference(scores, arl=self.arl, min_effect=effect)
        return num, num._symbols(opener._u)


_OTHER = "__other__"
_TINY = 1e-12
"""Floor of a spread before its log (a stuck value's is 0)."""
SPREAD_SE = 1.165
"""Standard error of the log of a spread read by quartiles, times the root of the values' count
(a normal sample's interquartile range: ``sqrt(2 (0.1875 - 0.0625)) / phi(0.674) / 1.349``)."""


def count_quiet(monitors: Sequence[EpisodeMonitor], symbols: Sequence[IntArray],
                runs: Sequence[Sequence[tuple[int, bool]] | None] | None = None) -> list[bool]:
    """Count each monitor's :meth:`~EpisodeMonitor.symbols` at once where it watches the reference
    and none of them raises an alarm (:func:`~driftline.operators.sequential.count_quiet`): the
    state :meth:`~EpisodeMonitor.update_many` leaves, without an event. Per monitor whether it
    did; the others are unchanged (count them with ``update_many``).

    ``runs``: per monitor, the parts the caller would have counted them in, in order (``(size,
    one by one)``: :meth:`~EpisodeMonitor.update_each` or ``update_many``; None: one call of
    ``update_many``). The state is the same whichever, but for how far the ring of recent symbols
    has grown (see ``_ring_room``), which is grown as those calls would have.

    >>> import numpy as np
    >>> from driftline.operators.sequential import NumericDetector
    >>> rng = np.random.default_rng(4)
    >>> a, b = (EpisodeMonitor(NumericDetector.from_reference(rng.normal(size=5_000), arl=1e5),
    ...                        min_effect=0.1) for _ in range(2))
    >>> values = rng.normal(size=400)
    >>> count_quiet([a, b], [a.symbols(values), b.symbols(values + 3.0)]), a.n, b.n
    ([True, False], 400, 0)
    """
    watching = [i for i, monitor in enumerate(monitors) if monitor._open is None and monitor._map is None]
    counted = [False] * len(monitors)
    done = count_quiet_detectors([monitors[i]._opener for i in watching], [symbols[i] for i in watching])
    for i, ok in zip(watching, done, strict=True):
        if ok:  # the rest of _count after its opener ran them
            monitor, syms = monitors[i], symbols[i]
            monitor._grow_ring(runs[i] if runs is not None else None, syms.size)
            monitor._ring_put(syms[-monitor.learning :], monitor.n + syms.size)
            monitor.n += syms.size
            counted[i] = True
    return counted


def _log_ratio(spread: float) -> float:
    return math.log(max(spread, _TINY))
NORMAL_IQR = 1.3489795003921634
"""Interquartile range of a standard normal."""
MIN_REPLICATE = 20
REPLICATE_SE = 3 * KAPPA
"""Fewest values after a regime alarm that can confirm it as an escalation."""
SERIAL_BATCHES = 20
"""Batches of a learned sample for the batch-means estimate of serial dependence."""
SERIAL_MIN_INFLATION = 2.0
"""Estimated variance inflations below this are read as independence (the estimate's own noise,
with 20 batches, has a relative sd of ~0.3)."""


def _inflation(det: SequentialDetector, syms: IntArray) -> FloatArray:
    """Threshold factors for ``det`` from a no-drift sample: its CUSUMs' variance inflation."""
    phi = det.serial_dependence(syms, SERIAL_BATCHES)
    return np.where(phi >= SERIAL_MIN_INFLATION, np.minimum(phi, syms.size // SERIAL_BATCHES), 1.0)


def _run_length(det: SequentialDetector, alarm: Alarm, mapped: IntArray) -> int:
    """Values since the alarming CUSUM last left zero (its change-point estimate), at most all given.

    Walks back from the alarm statistic through that CUSUM's integer increments: while the CUSUM
    is positive ``S_{t-1} = S_t - z_t`` exactly, and the run starts where that reaches 0.
    """
    j = det.components.index(alarm.component)
    steps = det._table[mapped[::-1], j]
    before = round(alarm.statistic * _ONE) - np.cumsum(steps, dtype=np.int64)
    start = np.flatnonzero(before <= 0)
    return int(start[0]) + 1 if start.size else int(mapped.size)
