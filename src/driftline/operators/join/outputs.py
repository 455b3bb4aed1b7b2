"""What a pending record keeps of a prediction's output (flags, score, value, class text), and
the text form labels and classes are compared in."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from itertools import repeat
from typing import cast

import numpy as np

from driftline.operators.columns import OutputColumns
from driftline.operators.join import native
from driftline.operators.join.records import _DOUBLE, _HAS_SCORE, _HAS_VALUE, _NO_LABEL
from driftline.schemas.events import Prediction


def normalise_label(value: bool | int | float | str) -> str:
    """The text form labels are compared in: ``True`` -> ``"true"``, ``1.0`` -> ``"1"``.

    >>> [normalise_label(v) for v in (True, 1, 1.0, 0.25, "Yes")]
    ['true', '1', '1', '0.25', 'Yes']
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return value


def _label_value(value: bool | int | float | str) -> float | None:
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


# A score-only prediction can be judged against a binary label: its vocabulary gives the classes.
_BINARY = {"1": ("1", "0"), "0": ("1", "0"), "true": ("true", "false"), "false": ("true", "false")}


def _predicted_text(prediction: Prediction) -> str | None:
    if prediction.label is not None:
        return normalise_label(prediction.label)
    if prediction.probabilities:
        probabilities = prediction.probabilities
        return max(probabilities, key=probabilities.__getitem__)  # first of equal maxima
    return None


def _pending_tail(prediction: Prediction) -> tuple[int, int, bytes]:
    """What a pending record keeps of a prediction: its flags (score, value), the length of its
    class text (:data:`_NO_LABEL`: none) and the bytes after the record's fixed part, before the
    features (score and value as doubles if set, the class text)."""
    text = _predicted_text(prediction)
    label = b"" if text is None else text.encode()
    flags, numbers = 0, b""
    if prediction.score is not None:
        flags, numbers = _HAS_SCORE, _DOUBLE.pack(prediction.score)
    if prediction.value is not None:
        flags |= _HAS_VALUE
        numbers += _DOUBLE.pack(prediction.value)
    return flags, _NO_LABEL if text is None else len(label), numbers + label


def _pending_tails(predictions: Sequence[Prediction]) -> list[tuple[int, int, bytes]]:
    """:func:`_pending_tail` of each prediction: the common batch (class labels and scores, no value)
    at once, each distinct label's text found once.

    >>> outputs = [Prediction(label=1, score=0.25), Prediction(label=True, score=0.5), Prediction(value=2.0)]
    >>> _pending_tails(outputs[:2]) == list(map(_pending_tail, outputs[:2]))
    True
    """
    n = len(predictions)
    if not n:
        return []
    if isinstance(predictions, OutputColumns):  # the decoder's columns: no object per output
        labels, score_column, values = list(predictions.labels), predictions.scores, predictions.values
    else:
        labels = list(map(_get_label, predictions))
        score_column, values = list(map(_get_score, predictions)), list(map(_get_value, predictions))
    if set(values) != {None}:
        return list(map(_pending_tail, predictions))
    # a class label decides the text whatever the probabilities
    fast = native.NATIVE
    if fast is not None and type(score_column) is list:  # the same tuples in one C pass
        made = fast.pending_tails(score_column, labels, _label_text, _HAS_SCORE)
        if made is not None:
            return cast(list[tuple[int, int, bytes]], made)
    if set(map(type, score_column)) != {float} or None in labels:
        return list(map(_pending_tail, predictions))
    scores = np.fromiter(score_column, dtype="<f8", count=n)
    kinds = list(map(type, labels))
    texts = {key: _label_text(key[1]) for key in set(zip(kinds, labels, strict=True))}
    label_bytes = list(map(texts.__getitem__, zip(kinds, labels, strict=True)))
    tails = map(operator.add, scores.view("V8").tolist(), label_bytes)
    return list(zip(repeat(_HAS_SCORE, n), map(len, label_bytes), tails, strict=True))


def _label_text(label: bool | int | str) -> bytes:
    """A class label's text as a pending record keeps it (:func:`_pending_tails`' C path calls it
    once a distinct label)."""
    return normalise_label(label).encode()


_get_label = operator.attrgetter("label")
_get_score = operator.attrgetter("score")
_get_value = operator.attrgetter("value")
