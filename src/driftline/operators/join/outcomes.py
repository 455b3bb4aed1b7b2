"""Outcomes: a joined prediction and its label as one row of the ``outcomes`` table, decoded
from the pending record the label closed (a batch of them at once)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from driftline.operators.join.features import _Shape
from driftline.operators.join.outputs import _BINARY, _label_value, normalise_label
from driftline.operators.join.records import (
    _AFTER_KEY,
    _DOUBLE,
    _HAS_SCORE,
    _HAS_VALUE,
    _NO_LABEL,
    _NO_SHAPE,
    _REROUTED,
)
from driftline.operators.window_stats import MAX_ABS_VALUE


@dataclass(slots=True)
class JoinedOutcome:
    """A prediction with its label: one row of the ``outcomes`` table."""

    prediction_id: str
    model_id: str
    model_version: str
    segment: str
    prediction_time: int
    label_time: int
    label_delay_ms: int
    predicted_label: str
    predicted_score: float | None
    predicted_value: float | None
    label: str
    label_value: float | None
    correct: int | None
    abs_error: float | None
    features_json: str
    rerouted: int = 0
    """Which side reached the join through re-routing: ``REROUTED_PREDICTION | REROUTED_LABEL`` bits."""


REROUTED_PREDICTION, REROUTED_LABEL = 1, 2
# A label that joined a pending record: (prediction id, bytes holding the record, where its body
# starts and the record ends in them, label time, label, whether the label was re-routed)
_Joined = tuple[str, bytes, int, int, int, bool | int | float | str, bool]


def _outcomes(joined: Sequence[_Joined], ctxs: list[tuple[str, str, str]], shapes: list[_Shape],
              native: Any = None) -> list[JoinedOutcome]:
    """The outcomes of labels that joined pending records (:meth:`LabelJoin._label`), in order;
    ``ctxs`` and ``shapes``: the join's interned contexts and feature layouts. Each distinct
    label's text and value are found once, the features' JSON of the batch at once
    (:func:`_features_jsons`). ``native``: the join's C extension, which reads the records and
    makes the outcomes as the loop below does."""
    if native is not None:
        made, ids, encoded = native.outcome_rows(
            joined if type(joined) is list else list(joined), ctxs, {}, _label_info, _BINARY, MAX_ABS_VALUE,
            JoinedOutcome)
        for outcome, features_json in zip(made, _features_jsons(shapes, ids, encoded), strict=True):
            outcome.features_json = features_json
        return cast(list[JoinedOutcome], made)
    labels: dict[tuple[type, bool | int | float | str], tuple[str, float | None]] = {}
    after_key, double, payload_at = _AFTER_KEY.unpack_from, _DOUBLE.unpack_from, _AFTER_KEY.size
    outcomes = []
    shape_ids: list[int] = []
    features: list[bytes] = []
    for pid, data, start, end, label_ts, label, rerouted in joined:
        pred_ts, flags, ctx_id, shape_id, label_len = after_key(data, start)
        offset = start + payload_at
        score = value = None
        if flags & _HAS_SCORE:
            score = double(data, offset)[0]
            offset += 8
        if flags & _HAS_VALUE:
            value = double(data, offset)[0]
            offset += 8
        text = None
        if label_len != _NO_LABEL:
            text = data[offset : offset + label_len].decode()
            offset += label_len
        shape_ids.append(shape_id)
        features.append(data[offset:end])
        seen = labels.get((label.__class__, label))
        if seen is None:
            seen = labels[(label.__class__, label)] = (normalise_label(label), _label_value(label))
        label_text, label_value = seen
        # _outcome, inline (a call per label); the features' JSON is set below, for the batch at once
        regression = value is not None and text is None
        correct = abs_error = None
        if text is not None:
            correct = int(text == label_text)
        elif score is not None and label_text in _BINARY:
            positive, negative = _BINARY[label_text]
            text = positive if score >= 0.5 else negative
            correct = int(text == label_text)
        if (value is not None and label_value is not None
                and max(abs(value), abs(label_value)) <= MAX_ABS_VALUE):
            abs_error = abs(value - label_value)
        model_id, model_version, segment = ctxs[ctx_id]
        bits = (REROUTED_PREDICTION if flags & _REROUTED else 0) | (REROUTED_LABEL if rerouted else 0)
        outcomes.append(JoinedOutcome(
            pid, model_id, model_version, segment, pred_ts, label_ts, label_ts - pred_ts, text or "",
            score, value, "" if regression else label_text, label_value if regression else None, correct,
            abs_error, "", bits))
    for outcome, features_json in zip(outcomes, _features_jsons(shapes, shape_ids, features), strict=True):
        outcome.features_json = features_json
    return outcomes


def _label_info(label: bool | int | float | str) -> tuple[str, float | None]:
    """A label's text and value, as outcomes hold them (each distinct label's found once a batch)."""
    return normalise_label(label), _label_value(label)


def _features_jsons(shapes: list[_Shape], shape_ids: list[int], features: list[bytes]) -> list[str]:
    """The features' JSON text of each record (its features as encoded in shape ``shape_ids[i]``),
    each shape's records at once (:meth:`_Shape.jsons`)."""
    distinct = set(shape_ids)
    if len(distinct) == 1:
        (only,) = distinct
        if only == _NO_SHAPE:
            return list(map(bytes.decode, features))
        return shapes[only].jsons(features)
    out = [""] * len(features)
    for shape_id in distinct:
        at = [i for i, s in enumerate(shape_ids) if s == shape_id]
        mine = [features[i] for i in at]
        texts = list(map(bytes.decode, mine)) if shape_id == _NO_SHAPE else shapes[shape_id].jsons(mine)
        for i, text in zip(at, texts, strict=True):
            out[i] = text
    return out


def _outcome(
    pid: str,
    ctx: tuple[str, str, str],
    pred_ts: int,
    predicted: str | None,
    score: float | None,
    value: float | None,
    features_json: str,
    label_ts: int,
    label_text: str,
    label_value: float | None,
) -> JoinedOutcome:
    """The outcome of a prediction with a label (``label_text``: :func:`normalise_label` of it,
    ``label_value``: :func:`_label_value`)."""
    # A value and no class: regression. The outcomes table keeps a regression's truth in
    # label_value only and a class in label only (label is LowCardinality: no float texts there).
    regression = value is not None and predicted is None
    correct = None
    if predicted is not None:
        correct = int(predicted == label_text)
    elif score is not None and label_text in _BINARY:
        positive, negative = _BINARY[label_text]
        predicted = positive if score >= 0.5 else negative
        correct = int(predicted == label_text)
    abs_error = None
    if value is not None and label_value is not None and max(abs(value), abs(label_value)) <= MAX_ABS_VALUE:
        abs_error = abs(value - label_value)  # an invalid value (beyond the bound) measures no error
    model_id, model_version, segment = ctx
    # positional, in field order (pid, model, version, segment, times, delay, prediction, label, ...)
    return JoinedOutcome(pid, model_id, model_version, segment, pred_ts, label_ts, label_ts - pred_ts,
                         predicted or "", score, value, "" if regression else label_text,
                         label_value if regression else None, correct, abs_error, features_json)
