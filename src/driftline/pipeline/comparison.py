"""Champion/challenger comparison of model versions on stage 2's label clock.

Which versions are compared comes from ``comparison`` settings: explicit ``pairs`` (model,
champion, challenger, mode), and ``champions`` (model -> champion version: every other version of
the model that has outcomes is compared to it). Nothing is compared, and nothing is kept, without
either.

When the label clock closes the outcome buckets of an interval, each version's per-outcome losses
(0/1 errors for a classifier, absolute errors for a regressor) in canonical ``(label_time,
prediction_id)`` order are handed to :meth:`VersionComparisons.close_interval`. Per pair and
segment it gives a ``version_comparison`` row: each version's accuracy or MAE, their difference
with a 95 % interval (:func:`~driftline.operators.comparison.compare_window`) and the state of the
pair's always-valid sequential test (:class:`~driftline.operators.comparison.SequentialComparison`).

Pairing: events carry no request id, and the join keys on ``prediction_id``, so two versions
scoring one request send two predictions with two ids. With ``request_separator`` set, a shadow
pair's prediction ids read ``<request id><separator><anything>`` (e.g. ``r42#v2``) and the
outcomes of one request pair up within the interval (a request only one version has an outcome for
is counted in ``n_unpaired``); otherwise, and for canary pairs, the two versions are independent
samples (Welch).

Once the test decides, it starts afresh on the following intervals: a challenger that later turns
(better after a concept drift the champion does not follow, say) is a decision of its own, while
the same verdict reached again only confirms the standing one (``decision`` stays, nothing is
decided anew). A new decision on all traffic (segment ``''``) is a ``comparison`` retrain trigger
when ``comparison.triggers`` is on: one per decision, never a stream of them. The state (the
tests, the versions seen) pickles with the stage-2 checkpoint.

>>> from driftline.config import ComparisonSettings, TriggerSettings
>>> from driftline.operators.triggers import RetrainPolicy
>>> book = VersionComparisons()
>>> book.configure(ComparisonSettings(champions={"m": "1"}, min_events=2, triggers=True), 60_000)
>>> losses = {"1": [("a", "", 1.0), ("b", "", 1.0), ("c", "", 0.0)],
...           "2": [("d", "", 0.0), ("e", "", 0.0), ("f", "", 1.0)]}
>>> policy = RetrainPolicy(TriggerSettings(), "abc")
>>> rows, triggers = book.close_interval("", "m", 0, "accuracy", losses, policy)
>>> [(r["challenger_version"], round(r["champion_value"], 3), round(r["challenger_value"], 3),
...   round(r["difference"], 3), r["decision"]) for r in rows]
[('2', 0.333, 0.667, 0.333, '')]
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftline.config import ComparisonSettings
from driftline.operators.comparison import SequentialComparison, compare_window
from driftline.operators.triggers import RetrainPolicy
from driftline.pipeline.records import window_segments
from driftline.pipeline.to_rows import ComparisonRowContext, version_comparison_row
from driftline.schemas.events import RetrainTrigger

# One version's outcomes of an interval: (prediction_id, segment tags, loss), canonical order.
Losses = list[tuple[str, str, float]]
PairKey = tuple[str, str, str, str]  # model_id, champion, challenger, segment


@dataclass(frozen=True)
class Pair:
    """A comparison to make: ``challenger`` against ``champion`` of ``model_id``."""

    model_id: str
    champion: str
    challenger: str
    mode: str  # shadow | canary


@dataclass
class PairTest:
    """The sequential test of one pair in one segment: when its evidence began, and the pair's
    latest decision."""

    test: SequentialComparison
    first_time: int  # start of the first interval fed since the comparison began or last decided
    decision: str = ""
    decided_at: int | None = None


class VersionComparisons:
    """Comparisons of one stage-2 shard's models (module docstring)."""

    def __init__(self) -> None:
        self.tests: dict[PairKey, PairTest] = {}
        self.versions: dict[str, set[str]] = defaultdict(set)  # versions with outcomes, per model
        self.settings = ComparisonSettings()
        self.interval_ms = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["settings"]  # today's settings come back with configure()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.settings = ComparisonSettings()

    def configure(self, settings: ComparisonSettings, interval_ms: int) -> None:
        """Today's settings; kept tests take today's effect, alpha and minimum."""
        self.settings = settings
        self.interval_ms = interval_ms
        for kept in self.tests.values():
            kept.test.effect, kept.test.alpha = settings.effect, settings.alpha
            kept.test.min_events = settings.min_events

    @property
    def active(self) -> bool:
        return bool(self.settings.pairs or self.settings.champions)

    def pairs(self, model_id: str) -> list[Pair]:
        """The comparisons of ``model_id``: explicit pairs first, then the champion's, each once."""
        found = [Pair(p.model_id, p.champion, p.challenger, p.mode)
                 for p in self.settings.pairs if p.model_id == model_id]
        champion = self.settings.champions.get(model_id)
        if champion is not None:
            named = {(p.champion, p.challenger) for p in found}
            found += [Pair(model_id, champion, version, self.settings.champions_mode)
                      for version in sorted(self.versions[model_id])
                      if version != champion and (champion, version) not in named]
        return found

    def close_interval(self, run_id: str, model_id: str, start: int, metric: str,
                       losses: dict[str, Losses], policy: RetrainPolicy,
                       ) -> tuple[list[dict[str, Any]], list[RetrainTrigger]]:
        """Rows and triggers of the interval starting at ``start`` of ``model_id``, given each
        version's losses there (``metric``: 'accuracy' for 0/1 losses, 'mae')."""
        self.versions[model_id].update(v for v, outcomes in losses.items() if outcomes)
        rows: list[dict[str, Any]] = []
        triggers: list[RetrainTrigger] = []
        end = start + self.interval_ms
        separator = self.settings.request_separator
        for pair in self.pairs(model_id):
            champion, challenger = losses.get(pair.champion, []), losses.get(pair.challenger, [])
            if not champion and not challenger:
                continue
            paired = pair.mode == "shadow" and bool(separator)
            context = ComparisonRowContext(run_id, model_id, pair.champion, pair.challenger, pair.mode,
                                           paired, self.interval_ms // 1000)
            by_segment_a, by_segment_b = _by_segment(champion), _by_segment(challenger)
            for segment in sorted(by_segment_a.keys() | by_segment_b.keys()):
                a, b = by_segment_a.get(segment, []), by_segment_b.get(segment, [])
                if paired:
                    a_losses, b_losses, n_unpaired = _pair_up(a, b, separator)
                else:
                    a_losses = np.array([loss for _, loss in a])
                    b_losses = np.array([loss for _, loss in b])
                    n_unpaired = 0
                key = (model_id, pair.champion, pair.challenger, segment)
                kept = self.tests.get(key)
                if kept is None or kept.test.paired != paired:  # new, or its pairing was reconfigured
                    kept = self.tests[key] = PairTest(self._new_test(paired), start)
                reached = kept.test.update(a_losses, b_losses)
                decided_now = reached is not None and reached != kept.decision
                if decided_now:
                    kept.decision, kept.decided_at = str(reached), end
                window = compare_window(a_losses, b_losses, paired=paired)
                row = version_comparison_row(context, segment, end, metric, window, n_unpaired, kept.test,
                                             kept.decision, decided_now, kept.decided_at)
                rows.append(row)
                evidence_start = kept.first_time
                if reached is not None:  # test afresh: a later reversal is a decision of its own
                    kept.test.reset()
                    kept.first_time = end
                if decided_now and segment == "" and self.settings.triggers:
                    evidence = {k: row[k] for k in (
                        "mode", "paired", "metric", "n_tested", "cumulative_difference", "p_value",
                        "likelihood_ratio", "difference", "difference_low", "difference_high")}
                    evidence["effect"], evidence["alpha"] = kept.test.effect, kept.test.alpha
                    better = reached == "challenger_better"
                    triggers.append(policy.on_comparison(model_id, pair.champion, pair.challenger,
                                                         evidence_start, end, better, evidence))
        return rows, triggers

    def _new_test(self, paired: bool) -> SequentialComparison:
        cfg = self.settings
        return SequentialComparison(paired=paired, effect=cfg.effect, alpha=cfg.alpha,
                                    min_events=cfg.min_events)


def _by_segment(losses: Losses) -> dict[str, list[tuple[str, float]]]:
    """(prediction_id, loss) per segment (overall and per tag), in the input's order."""
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for pid, tags, loss in losses:
        for segment in window_segments(tags):
            out[segment].append((pid, loss))
    return out


def _pair_up(a: list[tuple[str, float]], b: list[tuple[str, float]], separator: str,
             ) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]], int]:
    """The losses of requests both versions have an outcome for (in request-id order; a request's
    first outcome per version counts), and how many requests only one has."""
    def by_request(outcomes: list[tuple[str, float]]) -> dict[str, float]:
        found: dict[str, float] = {}
        for pid, loss in outcomes:
            found.setdefault(pid.rsplit(separator, 1)[0], loss)
        return found

    ra, rb = by_request(a), by_request(b)
    common = sorted(ra.keys() & rb.keys())
    return (np.array([ra[r] for r in common], dtype=np.float64),
            np.array([rb[r] for r in common], dtype=np.float64), len(ra.keys() ^ rb.keys()))
