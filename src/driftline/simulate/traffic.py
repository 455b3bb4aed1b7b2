"""The traffic generator: a scenario -> an ordered stream of keyed Kafka records.

Request ``i`` happens at event time ``start + i / rate``. Each request goes to one model (by
traffic share); the champion scores it and, if configured, the challenger scores the same
features under its own prediction id (``{model}-{namespace}-{request}-v{version}``, the namespace
being the seed unless the scenario names one). Labels (one per prediction id,
the same truth and delay for both versions) are emitted once the event time reaches their label
timestamp, so the stream is in event-time order throughout. Malformed prediction messages are
inserted at the configured share.

The champion is right with probability ``accuracy`` about the concept it was trained on (the
label function before the concept drift); the challenger is right with ``challenger_accuracy``
about the current concept: slightly worse before the concept drift, much better after it.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import orjson

from driftline.schemas.events import SCHEMA_VERSION
from driftline.simulate.malformed import malformed_value
from driftline.simulate.scenario import ConceptDrift, CovariateDrift, LabelDelay, ModelSpec, Scenario
from driftline.simulate.sources import Reference, Source, make_source, reference_of

EventKind = Literal["predictions", "labels", "malformed-predictions"]


class SimEvent(NamedTuple):
    kind: EventKind
    key: bytes
    value: bytes
    timestamp_ms: int


def ramp(t_s: float, at_s: float, ramp_s: float) -> float:
    """0 before ``at_s``, then linearly up to 1 over ``ramp_s`` seconds."""
    if t_s < at_s:
        return 0.0
    return 1.0 if ramp_s <= 0 else min(1.0, (t_s - at_s) / ramp_s)


class _Drifts:
    """One model's covariate and concept drift, resolved against its reference statistics."""

    def __init__(self, spec: ModelSpec, source: Source, ref: Reference) -> None:
        kinds = source.feature_kinds
        for drift in spec.covariate_drift:
            if drift.feature not in kinds:
                raise ValueError(f"model {spec.model_id}: covariate drift on unknown feature "
                                 f"{drift.feature!r} (features: {sorted(kinds)})")
        self.covariate = [(d, kinds[d.feature], self._redraw_weights(d, ref)) for d in spec.covariate_drift]
        self.concept: ConceptDrift | None = spec.concept_drift
        self.concept_feature = ""
        self.concept_threshold = math.inf
        if self.concept is not None:
            numeric = [n for n, k in kinds.items() if k == "numeric"]
            feature = self.concept.feature or (numeric[0] if numeric else "")
            if feature not in numeric:
                raise ValueError(f"model {spec.model_id}: concept drift needs a numeric feature, "
                                 f"got {feature!r}")
            self.concept_feature = feature
            self.concept_threshold = ref.quantile(feature, 1 - self.concept.magnitude)

    @staticmethod
    def _redraw_weights(drift: CovariateDrift, ref: Reference) -> tuple[list[str], list[float]]:
        freqs = ref.frequencies.get(drift.feature)
        if freqs is None:
            return [], []
        weights = drift.categories or {min(freqs, key=lambda k: (freqs[k], k)): 1.0}
        return list(weights), list(weights.values())


class Model:
    """One simulated model: its feature source, reference statistics, drifts and versions."""

    def __init__(self, spec: ModelSpec, seed: int, index: int) -> None:
        self.spec = spec
        self.source = make_source(spec, seed * 1000 + index)
        self.reference = reference_of(make_source(spec, seed * 1000 + index))
        self.drifts = _Drifts(spec, self.source, self.reference)
        self.rows = self.source.rows()
        self.rng = random.Random(f"{seed}/{index}/model")
        self.versions = [(spec.version, spec.accuracy, False)]
        if spec.challenger:
            self.versions.append((spec.challenger_version, spec.challenger_accuracy, True))

    def features_at(self, t_s: float) -> tuple[dict[str, Any], Any, Any]:
        """Features, the label of the learned (pre-concept-drift) concept and the current label."""
        x, y_source = next(self.rows)
        for drift, kind, (values, weights) in self.drifts.covariate:
            factor = ramp(t_s, drift.at_s, drift.ramp_s)
            if not factor:
                continue
            if kind == "numeric":
                x[drift.feature] = round(x[drift.feature] + factor * drift.magnitude
                                         * self.reference.std[drift.feature], 4)
            elif self.rng.random() < factor * drift.magnitude:
                x[drift.feature] = self.rng.choices(values, weights)[0]
        learned = self.source.relabel(x, y_source)
        current = learned
        concept = self.drifts.concept
        if concept is not None and x[self.drifts.concept_feature] > self.drifts.concept_threshold:
            factor = ramp(t_s, concept.at_s, concept.ramp_s)
            if factor and (factor >= 1 or self.rng.random() < factor):
                current = self._other(learned)
        return x, learned, current

    def _other(self, label: Any) -> Any:
        classes = self.source.classes
        others = [c for c in classes if c != label] or classes
        return others[0] if len(others) == 1 else self.rng.choice(others)

    def predict(self, learned: Any, current: Any, accuracy: float, follows_current: bool) -> dict[str, Any]:
        truth = current if follows_current else learned
        correct = self.rng.random() < accuracy
        label = truth if correct else self._other(truth)
        confidence = 0.5 + 0.5 * self.rng.random() ** (0.5 if correct else 2.0)
        classes = self.source.classes
        if self.spec.score == "positive" and len(classes) == 2 and label != classes[1]:
            confidence = 1.0 - confidence
        return {"label": label, "score": round(confidence, 4)}


def _delay_s(spec: LabelDelay, rng: random.Random) -> float:
    if spec.distribution == "fixed":
        delay = spec.median_s
    elif spec.distribution == "exponential":
        delay = rng.expovariate(math.log(2) / spec.median_s) if spec.median_s > 0 else 0.0
    else:
        delay = spec.median_s * math.exp(rng.gauss(0.0, spec.sigma))
    return min(delay, spec.max_s) if spec.max_s is not None else delay


def _segment(segments: dict[str, dict[str, float]], rng: random.Random) -> dict[str, str]:
    return {tag: rng.choices(list(values), list(values.values()))[0] for tag, values in segments.items()}


def generate(scenario: Scenario) -> Iterator[SimEvent]:
    """The scenario's records in event-time order; identical bytes for identical scenarios.

    Pass a scenario with ``start`` set (``resolved``) when the output is compared across runs.
    """
    start_ms = scenario.start_ms()
    models = [Model(spec, scenario.seed, i) for i, spec in enumerate(scenario.models)]
    shares = [m.traffic_share for m in scenario.models]
    rng = random.Random(f"{scenario.seed}/traffic")
    extra_malformed = scenario.malformed_rate / (1 - scenario.malformed_rate)
    pending: list[tuple[int, int, bytes, bytes]] = []
    seq = 0
    for i in range(scenario.n_requests):
        ts = start_ms + int(i * 1000 / scenario.rate)
        while pending and pending[0][0] <= ts:
            label_ts, _, key, value = heapq.heappop(pending)
            yield SimEvent("labels", key, value, label_ts)
        model = models[rng.choices(range(len(models)), shares)[0] if len(models) > 1 else 0]
        t_s = (ts - start_ms) / 1000
        x, learned, current = model.features_at(t_s)
        segment = _segment(scenario.segments, rng)
        labelled = rng.random() < scenario.label_coverage
        label_ts = ts + int(_delay_s(scenario.label_delay, rng) * 1000) if labelled else 0
        request_id = f"{model.spec.model_id}-{scenario.namespace}-{i}"
        for version, accuracy, follows_current in model.versions:
            pid = f"{request_id}-v{version}"
            doc: dict[str, Any] = {
                "schema_version": SCHEMA_VERSION, "prediction_id": pid, "model_id": model.spec.model_id,
                "model_version": version, "timestamp": ts, "features": x,
                "prediction": model.predict(learned, current, accuracy, follows_current),
                "latency_ms": round(model.spec.latency_median_ms * math.exp(rng.gauss(0.0, 0.4)), 2),
                "segment": segment,
            }
            key = pid.encode()
            yield SimEvent("predictions", key, orjson.dumps(doc), ts)
            if extra_malformed and rng.random() < extra_malformed:
                kind = rng.choice(scenario.malformed_kinds)
                yield SimEvent("malformed-predictions", key + b"-bad", malformed_value(kind, doc), ts)
            if labelled:
                label = {"schema_version": SCHEMA_VERSION, "prediction_id": pid, "label": current,
                         "timestamp": label_ts, "model_id": model.spec.model_id}
                heapq.heappush(pending, (label_ts, seq, key, orjson.dumps(label)))
                seq += 1
    while pending:
        label_ts, _, key, value = heapq.heappop(pending)
        yield SimEvent("labels", key, value, label_ts)
