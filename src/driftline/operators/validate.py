"""Decode and validate raw Kafka records into events; every rejected record becomes a DeadLetter.

The decoder never raises: whatever bytes arrive, each record comes out either as a validated
event or as a :class:`~driftline.schemas.events.DeadLetter` carrying the original bytes, its
source coordinates and an :class:`~driftline.schemas.events.ErrorKind`. All checks depend only on
the record itself (its value and its log timestamp), so replaying the log gives identical results.

JSON details of the fast path (``model_validate_json``, pydantic's own parser):

- ``NaN``, ``Infinity`` and ``-Infinity`` tokens are accepted. They are kept in features (counted
  as invalid downstream) and rejected as ``non_finite`` where the schema asks for a finite number
  (prediction score/value/probabilities, latency, numeric label, timestamp).
- Duplicate object keys are accepted and the last occurrence wins (as in Python's ``json``).
- Nesting deeper than the parser's recursion limit is a ``decode_error``.

>>> ok, dead = Decoder(max_message_bytes=1024, max_timestamp_skew_ms=60_000).labels([
...     RawRecord("labels", 0, 7, 1_000, b"p1", b'{"prediction_id":"p1","label":1,"timestamp":1000}'),
...     RawRecord("labels", 0, 8, 1_000, b"p2", b'{"prediction_id":"p2","label":NaN,"timestamp":1000}'),
... ])
>>> [(rec.offset, ev.label) for rec, ev in ok]
[(7, 1)]
>>> dead[0].source_offset, dead[0].error_kind.value, dead[0].error_message
(8, 'non_finite', 'label.float: Input should be a finite number')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pydantic import ValidationError

from driftline.schemas.events import DeadLetter, ErrorKind, LabelEvent, PredictionEvent

MAX_ERROR_MESSAGE_CHARS = 500
OVERSIZED_KEPT_BYTES = 65_536
"""An oversized payload is cut to this many bytes in its dead letter: the full payload could not be
produced to the dead-letter topic either (the table keeps the first 64 KiB anyway)."""

_MAX_EPOCH_MS = 253_402_300_799_999  # the schema's upper bound (year 9999)

_EventT = TypeVar("_EventT", PredictionEvent, LabelEvent)


@dataclass(slots=True, unsafe_hash=True)
class RawRecord:
    """One consumed Kafka record, as the batch consumer hands it over. Never changed once made.

    Not a frozen dataclass, though it is used as one: every consumed record is made into one, and
    a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (~760 ns a
    record against ~180, ~5 % of a worker's main thread at ~40,000 records/s; docs/scaling.md,
    session 30). The hash is the fields', as a frozen one's.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by its fields in a tuple: a join holding many labels keeps each one's record, and
        # the frozen dataclass's own pickling looks its fields up per record (a pickle round trip of
        # 20,000 held labels' entries: 4.7 against 1.95 us a record; docs/scaling.md, session 29).
        # Pickles made before still load (__setstate__).
        return RawRecord, (self.topic, self.partition, self.offset, self.timestamp_ms, self.key, self.value)

    def __setstate__(self, state: Sequence[Any]) -> None:
        # a record pickled as the frozen dataclass pickled it: its fields' values in order
        self.topic, self.partition, self.offset, self.timestamp_ms, self.key, self.value = state


class Decoder:
    """Turns batches of raw records into validated events plus dead letters.

    ``max_timestamp_skew_ms`` bounds ``|event timestamp - record timestamp|``, and
    ``max_future_skew_ms`` (if given) how far the event time may be *ahead* of the record
    timestamp: such a record is a ``future_timestamp`` dead letter, so one producer with a fast
    clock cannot move a watermark and make everyone else's events late. Both compare the event
    with its own log timestamp, never with a wall clock, so a replay judges every record alike.
    Records whose log timestamp is negative (no timestamp, pre-0.10 message format) skip these
    checks because there is nothing to compare with.

    >>> d = Decoder(max_message_bytes=64, max_timestamp_skew_ms=1_000)
    >>> value = b'{"prediction_id":"p","label":"a","timestamp":1}'
    >>> ok, dead = d.labels([RawRecord("l", 1, 0, 5_000, None, value)])
    >>> ok, dead[0].error_kind.value
    ([], 'timestamp_out_of_range')
    >>> d.labels([RawRecord("l", 1, 1, 5_000, None, b"x" * 65)])[1][0].error_kind.value
    'oversized'
    >>> ahead = b'{"prediction_id":"p","label":"a","timestamp":5400}'
    >>> strict = Decoder(64, 1_000, max_future_skew_ms=300)
    >>> dead = strict.labels([RawRecord("l", 1, 2, 5_000, None, ahead)])[1]
    >>> dead[0].error_kind.value, dead[0].error_message[-47:]
    ('future_timestamp', 'ahead of the record timestamp 5000 (max 300 ms)')
    """

    __slots__ = ("max_future_skew_ms", "max_message_bytes", "max_timestamp_skew_ms")

    def __init__(
        self, max_message_bytes: int, max_timestamp_skew_ms: int, max_future_skew_ms: int | None = None
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_timestamp_skew_ms = max_timestamp_skew_ms
        self.max_future_skew_ms = max_timestamp_skew_ms if max_future_skew_ms is None else max_future_skew_ms

    def __setstate__(self, state: tuple[None, dict[str, int]]) -> None:
        slots = dict(state[1])
        # A decoder pickled before the future bound existed had only the symmetric one.
        slots.setdefault("max_future_skew_ms", slots["max_timestamp_skew_ms"])
        for name, value in slots.items():
            setattr(self, name, value)

    def predictions(
        self, records: Sequence[RawRecord]
    ) -> tuple[list[tuple[RawRecord, PredictionEvent]], list[DeadLetter]]:
        """Decode prediction records; results keep the input order."""
        return self._decode(records, PredictionEvent)

    def labels(
        self, records: Sequence[RawRecord]
    ) -> tuple[list[tuple[RawRecord, LabelEvent]], list[DeadLetter]]:
        """Decode label records; results keep the input order."""
        return self._decode(records, LabelEvent)

    def _decode(
        self, records: Sequence[RawRecord], model: type[_EventT]
    ) -> tuple[list[tuple[RawRecord, _EventT]], list[DeadLetter]]:
        good: list[tuple[RawRecord, _EventT]] = []
        dead: list[DeadLetter] = []
        for record in records:
            screened = self.screen(record)
            if screened is not None:
                dead.append(screened)
                continue
            value = cast(bytes, record.value)
            try:
                event = model.model_validate_json(value)
            except ValidationError as err:
                kind, message = _classify(err)
                dead.append(_dead(record, value, kind, message))
                continue
            except Exception as err:
                # A validator bug must cost one dead letter, not crash the shard: a crash would be
                # replayed from the same offset forever.
                dead.append(_dead(record, value, ErrorKind.VALIDATION_ERROR, f"{type(err).__name__}: {err}"))
                continue
            late_or_early = self.check_time(record, value, event.timestamp)
            if late_or_early is not None:
                dead.append(late_or_early)
                continue
            good.append((record, event))
        return good, dead

    def check_time(self, record: RawRecord, value: bytes, timestamp: int) -> DeadLetter | None:
        """The dead letter of a valid event whose time is too far from its record's log timestamp
        (see the class docstring), else None."""
        if record.timestamp_ms < 0:
            return None
        skew = timestamp - record.timestamp_ms
        if abs(skew) > self.max_timestamp_skew_ms:
            message = (
                f"timestamp: event time {timestamp} is {skew} ms from the record"
                f" timestamp {record.timestamp_ms} (max skew {self.max_timestamp_skew_ms} ms)"
            )
            return _dead(record, value, ErrorKind.TIMESTAMP_OUT_OF_RANGE, message)
        if skew > self.max_future_skew_ms:
            message = (
                f"timestamp: event time {timestamp} is {skew} ms ahead of the record"
                f" timestamp {record.timestamp_ms} (max {self.max_future_skew_ms} ms)"
            )
            return _dead(record, value, ErrorKind.FUTURE_TIMESTAMP, message)
        return None

    def screen(self, record: RawRecord) -> DeadLetter | None:
        """The dead letter of a tombstone or an oversized record (checked before parsing), else None."""
        value = record.value
        if value is None:
            message = "null value (tombstone), expected a JSON object"
            return _dead(record, b"", ErrorKind.DECODE_ERROR, message)
        size = len(value)
        if size > self.max_message_bytes:
            message = (
                f"payload of {size} bytes exceeds max_message_bytes={self.max_message_bytes}"
                f" (first {min(size, OVERSIZED_KEPT_BYTES)} bytes kept)"
            )
            return _dead(record, value[:OVERSIZED_KEPT_BYTES], ErrorKind.OVERSIZED, message)
        return None


def dead_letter(record: RawRecord, kind: ErrorKind, message: str) -> DeadLetter:
    """The dead letter of a well-formed record rejected later (e.g. a conflicting duplicate)."""
    return _dead(record, (record.value or b"")[:OVERSIZED_KEPT_BYTES], kind, message)


def _dead(record: RawRecord, original: bytes, kind: ErrorKind, message: str) -> DeadLetter:
    # The log timestamp may be -1 (no timestamp) or absurd; the schema wants years 1970..9999.
    timestamp = min(max(record.timestamp_ms, 0), _MAX_EPOCH_MS)
    return DeadLetter(
        original=original,
        original_key=record.key,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        source_timestamp=timestamp,
        error_kind=kind,
        error_message=_truncate(message),
    )


def _truncate(message: str) -> str:
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    return message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."


def _is_non_finite(error: Any) -> bool:
    # EpochMillis reports NaN/inf through its own ValueError ("timestamp must be finite").
    kind = error["type"]
    return kind == "finite_number" or (kind == "value_error" and "must be finite" in error["msg"])


def _classify(err: ValidationError) -> tuple[ErrorKind, str]:
    """The error kind of a failed validation and a one-line message naming its first cause."""
    errors = err.errors(include_url=False, include_context=False, include_input=False)
    chosen = errors[0]
    if any(e["type"] == "json_invalid" or (not e["loc"] and e["type"] == "model_type") for e in errors):
        kind = ErrorKind.DECODE_ERROR
        chosen = next(e for e in errors if e["type"] == "json_invalid" or not e["loc"])
    elif any(e["loc"][:1] == ("schema_version",) for e in errors):
        # An unknown version explains every other error of the record: report only that.
        kind = ErrorKind.UNKNOWN_SCHEMA_VERSION
        chosen = next(e for e in errors if e["loc"][:1] == ("schema_version",))
    elif any(_is_non_finite(e) for e in errors):
        kind = ErrorKind.NON_FINITE
        chosen = next(e for e in errors if _is_non_finite(e))
    else:
        kind = ErrorKind.VALIDATION_ERROR
    location = ".".join(str(part)[:100] for part in chosen["loc"]) or "<root>"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 and kind is ErrorKind.VALIDATION_ERROR else ""
    return kind, f"{location}: {chosen['msg']}{more}"
