"""Time values on the replay/backtest command lines and in incident files.

A time is epoch milliseconds (digits, optionally negative) or an RFC 3339 timestamp; a timestamp
without a zone is taken as UTC.

>>> parse_time("1767225600000")
1767225600000
>>> parse_time("2026-01-01T00:00:00Z")
1767225600000
>>> parse_time("2026-01-01 00:00:01.5")
1767225601500
>>> format_time(1767225601500)
'2026-01-01T00:00:01.500Z'
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(text: str) -> int:
    """Epoch milliseconds of ``text``; raises ValueError naming the bad value."""
    value = text.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither epoch milliseconds nor an RFC 3339 time") from None
    aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return (aware - _EPOCH) // timedelta(milliseconds=1)


def format_time(ms: int) -> str:
    """RFC 3339 (UTC, millisecond precision) of epoch milliseconds."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
