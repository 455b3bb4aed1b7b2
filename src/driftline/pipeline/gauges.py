"""Gauges: the point-in-time figures a processor reports for ``/metrics``, with their labels.

``StageProcessor.gauges()`` returns :class:`Gauge` values: a name, a value and a label set kept
as a mapping (label values are user data, e.g. model ids, and are escaped only when the
exposition is rendered). :attr:`Gauge.series` is the series in text exposition form, for logs
and tests.

>>> gauge = Gauge("model_accuracy_ew", 0.9, {"model_id": 'churn "eu"', "model_version": "1"})
>>> gauge.series
'model_accuracy_ew{model_id="churn \\\\"eu\\\\"",model_version="1"}'
>>> Gauge("open_windows", 3.0).series
'open_windows'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

NO_LABELS: Mapping[str, str] = MappingProxyType({})


def escape_label_value(value: str) -> str:
    r"""A label value as the text exposition format writes it between double quotes.

    >>> print(escape_label_value('a\\b "c"\nd'))
    a\\b \"c\"\nd
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Gauge(NamedTuple):
    """One figure of a processor: ``name`` (without the ``driftline_stage_`` prefix), ``value``
    and its own ``labels`` (the exposition adds ``stage`` and ``shard``)."""

    name: str
    value: float
    labels: Mapping[str, str] = NO_LABELS

    @property
    def series(self) -> str:
        """``name{label="value",...}`` with the values escaped; ``name`` alone without labels."""
        if not self.labels:
            return self.name
        inner = ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in self.labels.items())
        return f"{self.name}{{{inner}}}"


def by_series(gauges: Iterable[Gauge]) -> dict[str, float]:
    """``{series: value}`` of gauges (e.g. to look one up in a test).

    >>> by_series([Gauge("late_total", 2.0), Gauge("x", 1.0, {"kind": "label"})])
    {'late_total': 2.0, 'x{kind="label"}': 1.0}
    """
    return {g.series: g.value for g in gauges}
