"""What each output topic's message becomes in ClickHouse — one mapping for the live sink and
for replays, so both write identical rows.

>>> from driftline.config import TopicSettings
>>> mapper = RowMapper(TopicSettings())
>>> mapper.rows("driftline.sink", b'{"table": "late_events", "rows": [{"prediction_id": "p"}]}')
('late_events', [{'prediction_id': 'p'}])
"""

from __future__ import annotations

from typing import Any

import orjson

from driftline.config import TopicSettings
from driftline.schemas.events import DeadLetter, RetrainTrigger

PAYLOAD_LIMIT = 64 * 1024
PROFILE_FIELDS = ("model_id", "model_version", "profile_id", "created_at_ms", "effective_from_ms", "source")


class UnknownTopic(KeyError):
    """A message from a topic that has no table."""


def _object(value: bytes) -> dict[str, Any]:
    """Parse a JSON object; anything else is a ValueError the sink counts and skips."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


class RowMapper:
    """Maps (topic, message value) to (table, rows); ``run_id`` tags replayed rows."""

    def __init__(self, topics: TopicSettings, run_id: str | None = None) -> None:
        self.run_id = run_id
        self._by_topic = {
            topics.sink: self._sink,
            topics.outcomes: self._outcome,
            topics.dead_letters: self._dead_letter,
            topics.retrain_triggers: self._trigger,
            topics.profiles: self._profile,
            topics.retrain_status: self._job_status,
        }

    @property
    def topics(self) -> list[str]:
        return list(self._by_topic)

    def rows(self, topic: str, value: bytes) -> tuple[str, list[dict[str, Any]]]:
        try:
            convert = self._by_topic[topic]
        except KeyError:
            raise UnknownTopic(topic) from None
        table, rows = convert(value)
        if self.run_id is not None:
            for row in rows:
                row["run_id"] = self.run_id
        return table, rows

    @staticmethod
    def _sink(value: bytes) -> tuple[str, list[dict[str, Any]]]:
        message = _object(value)
        table, rows = message.get("table"), message.get("rows")
        if (
            not isinstance(table, str)
            or not isinstance(rows, list)
            or not all(isinstance(r, dict) for r in rows)
        ):
            raise ValueError('a sink message is {"table": str, "rows": [object, ...]}')
        return table, rows

    @staticmethod
    def _outcome(value: bytes) -> tuple[str, list[dict[str, Any]]]:
        return "outcomes", [_object(value)]

    @staticmethod
    def _dead_letter(value: bytes) -> tuple[str, list[dict[str, Any]]]:
        dl = DeadLetter.model_validate_json(value)
        model_id = ""
        try:
            parsed = orjson.loads(dl.original)
            if isinstance(parsed, dict) and isinstance(parsed.get("model_id"), str):
                model_id = parsed["model_id"][:256]
        except orjson.JSONDecodeError:
            pass
        return "dead_letters", [
            {
                "source_topic": dl.source_topic,
                "source_partition": dl.source_partition,
                "source_offset": dl.source_offset,
                "source_timestamp": dl.source_timestamp,
                "error_kind": dl.error_kind.value,
                "error_message": dl.error_message,
                "payload": dl.original[:PAYLOAD_LIMIT].decode("utf-8", errors="replace"),
                "payload_size": len(dl.original),
                "model_id": model_id,
            }
        ]

    @staticmethod
    def _trigger(value: bytes) -> tuple[str, list[dict[str, Any]]]:
        t = RetrainTrigger.model_validate_json(value)
        return "retrain_triggers", [
            {
                "run_id": t.run_id,
                "model_id": t.model_id,
                "model_version": t.model_version,
                "trigger_id": t.trigger_id,
                "reason": t.reason.value,
                "message": t.message,
                "window_start": t.window_start,
                "window_end": t.window_end,
                "triggered_at": t.triggered_at,
                "evidence": orjson.dumps(t.evidence).decode(),
                "config_hash": t.config_hash,
            }
        ]

    @staticmethod
    def _profile(value: bytes) -> tuple[str, list[dict[str, Any]]]:
        p = orjson.loads(value)
        return "reference_profiles", [
            {
                "model_id": p["model_id"],
                "model_version": p["model_version"],
                "profile_id": p["profile_id"],
                "created_at": p.get("created_at_ms", 0),
                "effective_from": p.get("effective_from_ms", 0),
                "source": p.get("source", "training"),
                "profile": value.decode(),
            }
        ]

    @staticmethod
    def _job_status(value: bytes) -> tuple[str, list[dict[str, Any]]]:
        return "retrain_jobs", [_object(value)]
