"""Messages of the sink's topics -> ClickHouse rows (pure functions, no I/O).

>>> trigger_row(b'{"trigger_id":"t1","model_id":"m","model_version":"1","reason":"drift",'
...             b'"window_start":0,"window_end":1000,"triggered_at":1000,"evidence":{"psi":0.3}}')["evidence"]
'{"psi":0.3}'
"""

from __future__ import annotations

from typing import Any

import orjson

from driftline.schemas.events import DeadLetter, RetrainTrigger

PAYLOAD_KEPT_BYTES = 64 * 1024
PROFILE_FIELDS = ("model_id", "model_version", "profile_id", "created_at_ms", "effective_from_ms", "source")


def _object(value: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def column_row(value: bytes) -> dict[str, Any]:
    """Messages whose JSON fields are exactly the table's columns (outcomes, retrain status)."""
    return _object(value)


def dead_letter_row(value: bytes) -> dict[str, Any]:
    letter = DeadLetter.model_validate_json(value)
    model_id = ""
    try:
        original = orjson.loads(letter.original)
        if isinstance(original, dict) and isinstance(original.get("model_id"), str):
            model_id = original["model_id"]
    except orjson.JSONDecodeError:
        pass
    return {
        "run_id": "",
        "source_topic": letter.source_topic,
        "source_partition": letter.source_partition,
        "source_offset": letter.source_offset,
        "source_timestamp": letter.source_timestamp,
        "error_kind": letter.error_kind.value,
        "error_message": letter.error_message,
        "payload": letter.original[:PAYLOAD_KEPT_BYTES].decode("utf-8", "replace"),
        "payload_size": len(letter.original),
        "model_id": model_id,
    }


def profile_row(value: bytes) -> dict[str, Any]:
    data = _object(value)
    missing = [f for f in PROFILE_FIELDS if f not in data]
    if missing:
        raise ValueError(f"reference profile lacks {', '.join(missing)}")
    return {
        "run_id": str(data.get("run_id", "")),
        "model_id": data["model_id"],
        "model_version": str(data["model_version"]),
        "profile_id": data["profile_id"],
        "created_at": data["created_at_ms"],
        "effective_from": data["effective_from_ms"],
        "source": data["source"],
        "profile": value.decode("utf-8", "replace"),
    }


def trigger_row(value: bytes) -> dict[str, Any]:
    trigger = RetrainTrigger.model_validate_json(value)
    return {
        "run_id": trigger.run_id,
        "model_id": trigger.model_id,
        "model_version": trigger.model_version,
        "trigger_id": trigger.trigger_id,
        "reason": trigger.reason.value,
        "message": trigger.message,
        "window_start": trigger.window_start,
        "window_end": trigger.window_end,
        "triggered_at": trigger.triggered_at,
        "evidence": orjson.dumps(trigger.evidence).decode(),
        "config_hash": trigger.config_hash,
    }
