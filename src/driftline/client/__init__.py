"""Producer SDK for model servers: log predictions and labels without slowing requests.

Usage::

    import driftline.client as dl
    dl.init()                       # settings from DRIFTLINE_* env / DRIFTLINE_CONFIG
    dl.log_prediction("req-1", "churn", "3", {"age": 41, "plan": "pro"}, {"label": "stay", "score": 0.81})
    dl.log_label("req-1", "churn")
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from driftline.client.core import DriftlineClient, Overflow
from driftline.config import Settings

__all__ = [
    "DriftlineClient", "Overflow", "close", "flush", "get_client", "init", "log_label", "log_prediction",
]

_default: DriftlineClient | None = None
_default_lock = threading.Lock()


def init(settings: Settings | None = None, **options: Any) -> DriftlineClient:
    """Create the process-wide client (closing a previous one); ``options`` go to DriftlineClient.

    Call it after forking (e.g. in a gunicorn ``post_fork`` hook): threads do not survive a fork.
    """
    global _default
    client = DriftlineClient(settings, **options)
    with _default_lock:
        previous, _default = _default, client
    if previous is not None:
        previous.close()
    return client


def get_client() -> DriftlineClient:
    client = _default
    if client is None:
        raise RuntimeError("driftline client not initialised: call driftline.client.init() first")
    return client


def log_prediction(
    prediction_id: str,
    model_id: str,
    model_version: str | int,
    features: Mapping[str, Any],
    prediction: Any,
    *,
    timestamp: Any = None,
    latency_ms: float | None = None,
    segment: Mapping[str, str] | None = None,
) -> bool:
    """``DriftlineClient.log_prediction`` on the client made by ``init``."""
    return get_client().log_prediction(
        prediction_id, model_id, model_version, features, prediction,
        timestamp=timestamp, latency_ms=latency_ms, segment=segment,
    )


def log_label(prediction_id: str, label: Any, *, timestamp: Any = None, model_id: str | None = None) -> bool:
    """``DriftlineClient.log_label`` on the client made by ``init``."""
    return get_client().log_label(prediction_id, label, timestamp=timestamp, model_id=model_id)


def flush(timeout: float | None = None) -> bool:
    return get_client().flush(timeout)


def close(timeout: float | None = None) -> None:
    """Close the client made by ``init`` (a no-op if there is none)."""
    global _default
    with _default_lock:
        client, _default = _default, None
    if client is not None:
        client.close(timeout)
