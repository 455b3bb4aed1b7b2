"""Malformed prediction messages, one builder per kind the worker must dead-letter.

>>> malformed_value("unknown_schema_version", {"schema_version": 1, "prediction_id": "p"})
b'{"schema_version":99,"prediction_id":"p-bad"}'
>>> malformed_value("nan_latency", {"prediction_id": "p", "latency_ms": 3.0})
b'{"prediction_id":"p-bad","latency_ms":NaN}'
"""

from __future__ import annotations

from typing import Any

import orjson

from driftline.simulate.scenario import MalformedKind

_NAN_MARK = "__driftline_nan__"


def malformed_value(kind: MalformedKind, doc: dict[str, Any]) -> bytes:
    """A broken variant of the valid prediction ``doc`` (which is not modified)."""
    bad = {**doc, "prediction_id": f"{doc['prediction_id']}-bad"}
    if kind == "bad_json":
        text = orjson.dumps(bad)
        return text[: max(1, len(text) // 2)]
    if kind == "wrong_types":
        bad["timestamp"] = "yesterday"
        bad["features"] = list(doc.get("features", {}).values())
        return orjson.dumps(bad)
    if kind == "nan_latency":
        bad["latency_ms"] = _NAN_MARK
        return orjson.dumps(bad).replace(f'"{_NAN_MARK}"'.encode(), b"NaN")
    bad["schema_version"] = 99
    return orjson.dumps(bad)
