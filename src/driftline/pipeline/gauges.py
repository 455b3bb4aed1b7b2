"""Gauge keys: a processor figure's name with its labels, in Prometheus text exposition form.

Processors report figures as ``{key: value}`` (``StageProcessor.gauges()``); a key may carry
labels, e.g. ``model_accuracy_ew{model_id="m",model_version="1"}``. Label values are user data
(model ids), so they are escaped as the exposition format requires (backslash, double quote and
line feed) and any value survives the trip to ``/metrics``.

>>> key = gauge_key("model_accuracy_ew", model_id='churn "eu"', model_version="1")
>>> key
'model_accuracy_ew{model_id="churn \\\\"eu\\\\"",model_version="1"}'
>>> split_gauge_key(key)
('model_accuracy_ew', {'model_id': 'churn "eu"', 'model_version': '1'})
"""

from __future__ import annotations

import re

_NAME = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?$", re.S)
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?', re.S)
_INVALID = re.compile(r"[^A-Za-z0-9_:]")
_ESCAPED = re.compile(r"\\(.)", re.S)


def escape_label_value(value: str) -> str:
    r"""A label value as the text exposition format writes it between double quotes.

    >>> print(escape_label_value('a\\b "c"\nd'))
    a\\b \"c\"\nd
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def unescape_label_value(text: str) -> str:
    r"""The inverse of ``escape_label_value``.

    >>> unescape_label_value(escape_label_value('a\\b "c"\nd')) == 'a\\b "c"\nd'
    True
    """
    return _ESCAPED.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def gauge_key(name: str, **labels: str) -> str:
    """``name{label="value",...}`` with the values escaped; ``name`` alone without labels."""
    if not labels:
        return name
    inner = ",".join(f'{label}="{escape_label_value(str(value))}"' for label, value in labels.items())
    return f"{name}{{{inner}}}"


def split_gauge_key(key: str) -> tuple[str, dict[str, str]]:
    """``'name{a="1"}'`` -> ``('name', {'a': '1'})``; other characters in names become ``_``.

    >>> split_gauge_key("late events")
    ('late_events', {})
    """
    match = _NAME.match(key)
    if not match:
        return _INVALID.sub("_", key), {}
    labels = {k: unescape_label_value(v) for k, v in _LABEL.findall(match.group(2) or "")}
    return match.group(1), labels
