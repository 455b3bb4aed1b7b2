"""The common batch's C decode pass (``_decode.c``), where this install built it.

:func:`~driftline.operators.struct_decode.prediction_columns` and ``label_columns`` read
:data:`NATIVE` at each call: None (no compiler at install, or a test that sets it) leaves every
batch to the msgspec pass, with the same results.
"""

from __future__ import annotations

from typing import Any

try:
    from driftline.operators import _decode
except ImportError:  # pragma: no cover - an install without the extension
    _decode = None  # type: ignore[assignment]

NATIVE: Any = _decode
