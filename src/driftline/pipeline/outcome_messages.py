"""The outcomes topic's messages of a batch of joined outcomes: ``orjson.dumps`` of each outcome's
row (:func:`~driftline.pipeline.to_rows.outcome_row`), byte for byte. The join's C extension writes
them where it is built (``outcome_messages`` in ``operators/join/_native.c``: each outcome's slots
read in place, its strs escaped as orjson escapes them, the batch's floats written by one orjson
call through numpy, as the features' are; ~0.5 against ~1.3 us an outcome), else ``msgspec`` from
a struct per outcome where that gives the same bytes, else orjson.

orjson spends most of a message on the row's features JSON, a string of quotes to escape (~5 us an
outcome of 25 features on a loaded box, against ~1 us for msgspec from a struct). The two write
strings, ints, bools and nulls alike, and floats alike except a positive exponent, which orjson
writes with a sign (``1e+16``) and msgspec without (``1e16``): both print a float below 1e16 in
magnitude without an exponent, so an outcome whose floats are all below 1e15 is written by
msgspec, any other by orjson. Without ``msgspec`` (a light install) orjson writes every message.

>>> from driftline.operators.join import JoinedOutcome
>>> o = JoinedOutcome("p", "m", "1", "", 1, 2, 1, "a", 0.9, None, "a", None, 1, None, '{"x":1.5}')
>>> far = JoinedOutcome("q", "m", "1", "", 1, 2, 1, "", None, 2e16, "", 1e16, None, 1e16, "{}")
>>> messages = outcome_messages([o, far], "run")
>>> messages == [orjson.dumps(outcome_row(o, "run")), orjson.dumps(outcome_row(far, "run"))]
True
>>> messages[1][-69:]
b'"label_value":1e+16,"correct":null,"abs_error":1e+16,"features":"{}"}'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from driftline.operators.join import JoinedOutcome
from driftline.operators.join import native as join_native
from driftline.operators.join.features import floats_json
from driftline.pipeline.to_rows import outcome_row

try:
    import msgspec
except ImportError:  # a light install: orjson writes every message
    msgspec = None  # type: ignore[assignment]

_EXPONENT_FREE = 1e15  # floats below this magnitude print alike in both (neither uses an exponent)

if msgspec is not None:

    class _OutcomeMessage(msgspec.Struct, gc=False):
        """:func:`outcome_row`'s keys in its order (a struct is written as an object, by field)."""

        run_id: Any
        prediction_id: Any
        model_id: Any
        model_version: Any
        segment: Any
        prediction_time: Any
        label_time: Any
        label_delay_ms: Any
        predicted_label: Any
        predicted_score: Any
        predicted_value: Any
        label: Any
        label_value: Any
        correct: Any
        abs_error: Any
        features: Any

    _ENCODE = msgspec.json.Encoder().encode


_ATTRIBUTES = {"features": "features_json"}  # the row's keys read from an attribute of another name
_FIELDS = [(b"," + orjson.dumps(key) + b":", _ATTRIBUTES.get(key, key)) for key in list(outcome_row(
    JoinedOutcome("", "", "", "", 0, 0, 0, "", None, None, "", None, None, None, "")))[1:]]
"""After the run id, each key's text and the attribute its value is read from, in the row's order."""


def _plain(value: Any) -> bool:
    return value is None or (type(value) is float and -_EXPONENT_FREE < value < _EXPONENT_FREE)


def outcome_messages(outcomes: Sequence[JoinedOutcome], run_id: str) -> list[bytes]:
    """``orjson.dumps(outcome_row(o, run_id))`` of each outcome, in order (see the module docstring)."""
    fast = join_native.NATIVE
    if fast is not None and outcomes:
        made = fast.outcome_messages(outcomes if type(outcomes) is list else list(outcomes), JoinedOutcome,
                                     b'{"run_id":' + orjson.dumps(run_id), _FIELDS, floats_json)
        if made is not None:
            return made
    if msgspec is None:
        return [orjson.dumps(outcome_row(o, run_id)) for o in outcomes]
    out = []
    for o in outcomes:
        score, value, label_value, error = o.predicted_score, o.predicted_value, o.label_value, o.abs_error
        # _plain of each, inline (a call per value)
        if ((score is None or (type(score) is float and -_EXPONENT_FREE < score < _EXPONENT_FREE))
                and (value is None or (type(value) is float and -_EXPONENT_FREE < value < _EXPONENT_FREE))
                and (label_value is None
                     or (type(label_value) is float and -_EXPONENT_FREE < label_value < _EXPONENT_FREE))
                and (error is None or (type(error) is float and -_EXPONENT_FREE < error < _EXPONENT_FREE))):
            out.append(_ENCODE(_OutcomeMessage(
                run_id, o.prediction_id, o.model_id, o.model_version, o.segment, o.prediction_time,
                o.label_time, o.label_delay_ms, o.predicted_label, score, value, o.label, label_value,
                o.correct, error, o.features_json)))
        else:
            out.append(orjson.dumps(outcome_row(o, run_id)))
    return out
