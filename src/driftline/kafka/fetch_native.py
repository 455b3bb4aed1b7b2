"""The worker's fetched-record-batch pass in C (``_records.c``), where this install built it.

:mod:`driftline.kafka.records` reads :data:`NATIVE` at each fetched partition of a consumer made
with ``raw_records``: None (no compiler at install, ``worker.compiled_paths`` false, or a test that
sets it) leaves every fetch to aiokafka's record loop, with the same records.
"""

from __future__ import annotations

from typing import Any

try:
    from driftline.kafka import _records
except ImportError:  # pragma: no cover - an install without the extension
    _records = None  # type: ignore[assignment]

NATIVE: Any = _records
