"""The sequential detectors' C paths (``_watch.c``: a quiet model's few values deferred; a busy
model's batch searched and counted where no CUSUM alarms), where this install built them.

:meth:`~driftline.operators.episodes.EpisodeMonitor.update_each`,
:func:`~driftline.operators.sequential.count_quiet` and a numeric detector's batch symbols read
:data:`NATIVE` at each call: None (no compiler at install, or a test that sets it) runs the same
steps in Python and numpy.
"""

from __future__ import annotations

from typing import Any

try:
    from driftline.operators import _watch
except ImportError:  # pragma: no cover - an install without the extension
    _watch = None  # type: ignore[assignment]

NATIVE: Any = _watch
