"""The KS distribution's methods in C (``_ks.c``: Durbin's matrix, Pomeranz's recursion, the
Pelz-Good series), where this install built them.

:func:`~driftline.operators.drift.kolmogorov_sf` reads :data:`NATIVE` at each call: None (no
compiler at install, ``worker.compiled_paths`` off, or a test that sets it) takes scipy's methods
(Pomeranz's in driftline's numpy copy of it). The two agree within 1e-11, not bit for bit: the C
adds a matrix product's or a convolution's terms in index order where numpy hands them to BLAS.
"""

from __future__ import annotations

from typing import Any

try:
    from driftline.operators import _ks
except ImportError:  # pragma: no cover - an install without the extension
    _ks = None  # type: ignore[assignment]

NATIVE: Any = _ks
