"""Known incidents of a backtest: when a model's inputs (or concept) really changed.

CSV with a header; columns ``model_id, start, end[, features]``. Times are RFC 3339 or epoch
milliseconds; an empty ``end`` means the incident lasts to the end of the data. ``features``
(optional) lists the affected features separated by ``;`` or spaces; empty = all features.
An incident covers ``[start, end)``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from driftline.replay.times import parse_time

NEVER = 2**62


@dataclass(frozen=True)
class Incident:
    model_id: str
    start_ms: int
    end_ms: int = NEVER
    features: frozenset[str] = frozenset()

    def overlaps(self, start_ms: int, end_ms: int) -> bool:
        """Whether ``[start_ms, end_ms)`` intersects the incident."""
        return start_ms < self.end_ms and end_ms > self.start_ms

    def covers_feature(self, feature: str) -> bool:
        return not self.features or feature in self.features


def load_incidents(path: Path) -> list[Incident]:
    """Incidents of a CSV file (see the module docstring); ValueError names a bad line."""
    out = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"model_id", "start", "end"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                start = parse_time(row["start"] or "")
                end = parse_time(row["end"]) if (row["end"] or "").strip() else NEVER
            except ValueError as err:
                raise ValueError(f"{path}:{line}: {err}") from None
            if end <= start:
                raise ValueError(f"{path}:{line}: end is not after start")
            features = frozenset(f for f in re.split(r"[;\s]+", row.get("features") or "") if f)
            out.append(Incident(row["model_id"].strip(), start, end, features))
    return out


def quiet(incidents: Iterable[Incident], model_id: str, start_ms: int, end_ms: int,
          feature: str | None = None) -> bool:
    """True if ``[start_ms, end_ms)`` overlaps no incident of the model (affecting ``feature``)."""
    return not any(
        i.model_id == model_id and i.overlaps(start_ms, end_ms)
        and (feature is None or i.covers_feature(feature))
        for i in incidents
    )
