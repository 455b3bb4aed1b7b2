"""What a scenario does, as JSON: which features drift when, when the concept changes, and the
accuracy each model version should show before and after, for comparing detections against."""

from __future__ import annotations

from typing import Any

from driftline.simulate.scenario import Scenario
from driftline.simulate.traffic import Model


def _expected_accuracy(model: Model) -> dict[str, dict[str, float]]:
    spec = model.spec
    flip = spec.concept_drift.magnitude if spec.concept_drift is not None else 0.0
    binary = len(model.source.classes) == 2
    # Labels flip in a share `flip` of the traffic: the champion's right answers there become wrong
    # and, for two classes, its wrong answers become right.
    after = spec.accuracy * (1 - flip) + ((1 - spec.accuracy) * flip if binary else 0.0)
    out = {spec.version: {"before": spec.accuracy, "after": after}}
    if spec.challenger:
        out[spec.challenger_version] = {"before": spec.challenger_accuracy, "after": spec.challenger_accuracy}
    return {version: {k: round(v, 4) for k, v in acc.items()} for version, acc in out.items()}


def _model_truth(model: Model, start_ms: int) -> dict[str, Any]:
    spec, ref = model.spec, model.reference

    def at(seconds: float) -> int:
        return start_ms + int(seconds * 1000)

    covariate = []
    for drift, kind, (values, weights) in model.drifts.covariate:
        entry: dict[str, Any] = {"feature": drift.feature, "kind": kind, "start_ms": at(drift.at_s),
                                 "full_ms": at(drift.at_s + drift.ramp_s), "magnitude": drift.magnitude}
        if kind == "numeric":
            mean, std = ref.mean[drift.feature], ref.std[drift.feature]
            entry.update(reference_mean=mean, reference_std=std,
                         expected_mean_after=mean + drift.magnitude * std)
        else:
            entry.update(reference_frequencies=ref.frequencies[drift.feature],
                         redrawn_from=dict(zip(values, weights, strict=True)))
        covariate.append(entry)
    concept = model.drifts.concept
    return {
        "source": spec.source,
        "champion": spec.version,
        "challenger": spec.challenger_version if spec.challenger else None,
        "traffic_share": spec.traffic_share,
        "features": model.source.feature_kinds,
        "classes": model.source.classes,
        "covariate_drift": covariate,
        "concept_drift": None if concept is None else {
            "start_ms": at(concept.at_s), "full_ms": at(concept.at_s + concept.ramp_s),
            "flip_fraction": concept.magnitude, "region_feature": model.drifts.concept_feature,
            "region_threshold": model.drifts.concept_threshold,
        },
        "expected_accuracy": _expected_accuracy(model),
    }


def ground_truth(scenario: Scenario) -> dict[str, Any]:
    """JSON-ready description of the scenario's drift, in absolute event time (epoch ms)."""
    start_ms = scenario.start_ms()
    models = [Model(spec, scenario.seed, i) for i, spec in enumerate(scenario.models)]
    return {
        "seed": scenario.seed,
        "id_namespace": scenario.namespace,
        "start_ms": start_ms,
        "end_ms": start_ms + int(scenario.duration_s * 1000),
        "rate": scenario.rate,
        "n_requests": scenario.n_requests,
        "label_delay": scenario.label_delay.model_dump(),
        "label_coverage": scenario.label_coverage,
        "malformed_rate": scenario.malformed_rate,
        "malformed_kinds": scenario.malformed_kinds,
        "models": {m.spec.model_id: _model_truth(m, start_ms) for m in models},
    }
