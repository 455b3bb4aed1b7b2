"""Wire schemas of the events driftline consumes and produces (pydantic v2).

Timestamps are accepted as RFC 3339 strings or epoch milliseconds and held as epoch
milliseconds (UTC) so the hot path never builds datetime objects.

>>> e = PredictionEvent.model_validate_json(
...     b'{"prediction_id":"p1","model_id":"m","model_version":"1","timestamp":"2026-01-01T00:00:00Z",'
...     b'"features":{"x":1.5,"c":"a"},"prediction":{"label":"yes","score":0.9}}')
>>> e.timestamp, e.prediction.label
(1767225600000, 'yes')
>>> LabelEvent.model_validate_json(b'{"prediction_id":"p1","label":"yes","timestamp":1767225600000}').label
'yes'
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    field_validator,
)

SCHEMA_VERSION: Literal[1] = 1
MAX_FEATURES = 5000
MAX_NAME_LENGTH = 256


def _to_epoch_ms(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("timestamp must be an RFC 3339 string or epoch milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("timestamp must be finite")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"timestamp {value[:64]!r} is not RFC 3339") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    if isinstance(value, datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp() * 1000)
    raise ValueError("timestamp must be an RFC 3339 string or epoch milliseconds")


EpochMillis = Annotated[
    int,
    BeforeValidator(_to_epoch_ms),
    Field(ge=0, le=253_402_300_799_999),  # years 1970..9999
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 253_402_300_799_999,
                    "description": "epoch milliseconds (UTC)",
                },
                {"type": "string", "format": "date-time", "description": "RFC 3339"},
            ]
        }
    ),
]

Identifier = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
# bool first: JSON true must stay a bool, not become 1.
FeatureValue = StrictBool | StrictInt | StrictFloat | StrictStr | None
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prediction(_Event):
    """A model output: a class label and/or score/probabilities, or a regression value."""

    label: StrictStr | StrictInt | StrictBool | None = None
    score: FiniteFloat | None = None
    probabilities: dict[Identifier, FiniteFloat] | None = None
    value: FiniteFloat | None = Field(None, description="regression output")

    @property
    def is_regression(self) -> bool:
        return self.value is not None and self.label is None


def _coerce_prediction(value: Any) -> Any:
    # Shorthand: a bare number is a regression value, a bare string/bool a class label.
    if isinstance(value, bool | str):
        return {"label": value}
    if isinstance(value, int | float):
        return {"value": value}
    return value


class PredictionEvent(_Event):
    """One prediction a model server made (topic ``driftline.predictions``, key = prediction_id)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    prediction_id: Identifier
    model_id: Identifier
    model_version: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)] = "1"
    timestamp: EpochMillis
    features: dict[Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)], FeatureValue] = Field(
        default_factory=dict, max_length=MAX_FEATURES
    )
    prediction: Annotated[Prediction, BeforeValidator(_coerce_prediction)]
    latency_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    segment: dict[Identifier, Annotated[str, Field(max_length=MAX_NAME_LENGTH)]] = Field(
        default_factory=dict, max_length=16, description="segment tags, e.g. region or variant"
    )

    @field_validator("model_version", mode="before")
    @classmethod
    def _version_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class LabelEvent(_Event):
    """Ground truth for an earlier prediction (topic ``driftline.labels``, key = prediction_id)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    prediction_id: Identifier
    label: StrictBool | StrictInt | FiniteFloat | StrictStr
    timestamp: EpochMillis
    model_id: Identifier | None = None


class TriggerReason(StrEnum):
    DRIFT = "drift"
    PERFORMANCE = "performance"
    CONCEPT_DRIFT = "concept_drift"
    MANUAL = "manual"
    COMPARISON = "comparison"


class RetrainTrigger(_Event):
    """'This model needs retraining', with its evidence (topic ``driftline.retrain-triggers``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    trigger_id: Identifier = Field(description="deterministic: model, version and evidence window")
    model_id: Identifier
    model_version: Identifier
    reason: TriggerReason
    message: str = ""
    window_start: EpochMillis
    window_end: EpochMillis
    triggered_at: EpochMillis = Field(description="event time at which the policy fired")
    evidence: dict[str, Any] = Field(default_factory=dict)
    config_hash: str = ""
    run_id: str = Field("", description="'' for live; the replay run id otherwise")


class ErrorKind(StrEnum):
    OVERSIZED = "oversized"
    DECODE_ERROR = "decode_error"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    VALIDATION_ERROR = "validation_error"
    NON_FINITE = "non_finite"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    FUTURE_TIMESTAMP = "future_timestamp"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"


Base64Bytes = Annotated[
    bytes,
    BeforeValidator(lambda v: base64.b64decode(v, validate=True) if isinstance(v, str) else v),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]


class DeadLetter(_Event):
    """An input that could not be accepted, with where it came from and why (never lost)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    original: Base64Bytes = Field(description="the original message value, base64 in JSON")
    original_key: Base64Bytes | None = None
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: EpochMillis = Field(description="Kafka record timestamp of the original")
    error_kind: ErrorKind
    error_message: str


EVENT_MODELS: dict[str, type[BaseModel]] = {
    "prediction_event": PredictionEvent,
    "label_event": LabelEvent,
    "retrain_trigger": RetrainTrigger,
    "dead_letter": DeadLetter,
}
