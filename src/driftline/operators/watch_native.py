"""The quiet-model watch's C path (``_watch.c``: a monitor's few values deferred), where this
install built it.

:meth:`~driftline.operators.episodes.EpisodeMonitor.update_each` reads :data:`NATIVE` at each call:
None (no compiler at install, or a test that sets it) runs the same steps in Python.
"""

from __future__ import annotations

from typing import Any

try:
    from driftline.operators import _watch
except ImportError:  # pragma: no cover - an install without the extension
    _watch = None  # type: ignore[assignment]

NATIVE: Any = _watch
