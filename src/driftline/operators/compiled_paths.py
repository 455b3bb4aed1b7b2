"""The compiled C paths switched on or off for the whole process (``worker.compiled_paths``).

The join's (:mod:`driftline.operators.join.native`), the quiet-model watch's
(:mod:`driftline.operators.watch_native`), the batch decode's
(:mod:`driftline.operators.decode_native`) and the KS p-value's (:mod:`driftline.operators.ks_native`)
switches are read at each call; off, their reference (Python; msgspec for the decode, scipy for the
p-values) runs alone, with the same results (the KS p-values within 1e-11).

>>> use_compiled_paths(False)
{'decode': False, 'join': False, 'ks': False, 'watch': False}
>>> sorted(use_compiled_paths(True))  # on where this install built them (a C compiler at install)
['decode', 'join', 'ks', 'watch']
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from driftline.operators import decode_native, ks_native, watch_native
from driftline.operators.join import native as join_native


def use_compiled_paths(enabled: bool) -> dict[str, bool]:
    """Run the compiled C paths where this install built them (``enabled``), or their Python
    reference alone; returns :func:`compiled_paths`."""
    join_native.NATIVE = join_native._native if enabled else None
    watch_native.NATIVE = watch_native._watch if enabled else None
    decode_native.NATIVE = decode_native._decode if enabled else None
    ks_native.NATIVE = ks_native._ks if enabled else None
    return compiled_paths()


def compiled_paths() -> dict[str, bool]:
    """Which compiled paths run now, by name: False where the extension was not built (no compiler
    at install) or :func:`use_compiled_paths` turned it off."""
    return {"decode": decode_native.NATIVE is not None, "join": join_native.NATIVE is not None,
            "ks": ks_native.NATIVE is not None, "watch": watch_native.NATIVE is not None}


@contextmanager
def reference_paths() -> Iterator[None]:
    """The compiled paths off inside the block (their Python reference alone runs), and back as
    they were after it: a test's or a bench's run with and without them.

    >>> before = compiled_paths()
    >>> with reference_paths():
    ...     compiled_paths()
    {'decode': False, 'join': False, 'ks': False, 'watch': False}
    >>> compiled_paths() == before
    True
    """
    before = (join_native.NATIVE, watch_native.NATIVE, decode_native.NATIVE, ks_native.NATIVE)
    use_compiled_paths(False)
    try:
        yield
    finally:
        join_native.NATIVE, watch_native.NATIVE, decode_native.NATIVE, ks_native.NATIVE = before
