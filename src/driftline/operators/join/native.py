"""The join's C extension (``_native.c``: its commonest cases), where this install built it.

The join reads :data:`NATIVE` at each call: None (no compiler at install, or a test that sets it)
runs the same steps in Python, with the same results.
"""

from __future__ import annotations

from typing import Any

try:
    from driftline.operators.join import _native
except ImportError:  # pragma: no cover - an install without the extension
    _native = None  # type: ignore[assignment]

NATIVE: Any = _native
