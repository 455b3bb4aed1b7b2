"""Stage state in checkpoints: a versioned envelope, and today's settings applied on restore.

Checkpoints hold *state*, not configuration. A processor keeps every value derived from the
settings in attributes set by its ``configure(settings)`` (called on creation and again by every
restore), and drops the settings object itself from its pickled state, so a restarted stage runs
with the settings it was started with now. The settings that change results (the sections
``Settings.config_hash`` covers) are recorded in the state only to name, in a warning, what
changed since the checkpoint was taken.

A state blob is ``b"DLST" + format version (1 byte) + zlib(pickle(processor))``. Format 1 (the
blob without the envelope, settings pickled inside) still restores. A newer format, or a blob
that does not unpickle into the expected processor, fails with :class:`StateRestoreError`: one
line saying what to do.

>>> blob = dump_state({"seen": 3})
>>> blob[:5] == b"DLST" + bytes([STATE_FORMAT])
True
>>> load_state(blob, dict, "test")
{'seen': 3}
>>> changed_settings({"drift": {"fdr_q": 0.01, "bins": 10}}, {"drift": {"fdr_q": 0.05, "bins": 10}})
['drift.fdr_q 0.01 -> 0.05']
"""

from __future__ import annotations

import logging
import pickle
import zlib
from collections.abc import Mapping
from typing import Any, TypeVar

from driftline.config import RESULT_SECTIONS, Settings

log = logging.getLogger(__name__)

STATE_FORMAT = 2
_MAGIC = b"DLST"
FRESH_STATE_HINT = (
    "to start from fresh state, point DRIFTLINE_TOPICS_STATE at a new topic "
    "(the stages then re-read their inputs from the start of retention)"
)

T = TypeVar("T")


class StateRestoreError(ValueError):
    """A checkpoint cannot be restored by this driftline; the message says why and what to do."""


def dump_state(processor: object) -> bytes:
    """The versioned state blob of a processor."""
    body = zlib.compress(pickle.dumps(processor, protocol=pickle.HIGHEST_PROTOCOL), 1)
    return _MAGIC + bytes([STATE_FORMAT]) + body


def load_state(blob: bytes, kind: type[T], what: str) -> T:
    """The processor in ``blob``; ``what`` names the shard in errors (e.g. 'stage-1 shard 3')."""
    if blob.startswith(_MAGIC) and len(blob) > len(_MAGIC):
        version, body = blob[len(_MAGIC)], blob[len(_MAGIC) + 1 :]
    else:
        version, body = 1, blob  # format 1: the zlib stream alone
    if version > STATE_FORMAT:
        raise StateRestoreError(
            f"{what}: the checkpoint has state format {version}, newer than this driftline's "
            f"({STATE_FORMAT}): run a newer driftline, or {FRESH_STATE_HINT}"
        )
    try:
        processor = pickle.loads(zlib.decompress(body))
    except Exception as err:  # any unpickling failure means the same thing to the user
        raise StateRestoreError(
            f"{what}: cannot restore its checkpoint (state format {version}: "
            f"{type(err).__name__}: {err}); {FRESH_STATE_HINT}"
        ) from None
    if not isinstance(processor, kind):
        raise StateRestoreError(
            f"{what}: the checkpoint holds a {type(processor).__name__}, not a {kind.__name__}"
        )
    return processor


def settings_record(settings: Settings) -> dict[str, Any]:
    """The settings that change results, as plain values (what ``config_hash`` hashes)."""
    return settings.model_dump(include=set(RESULT_SECTIONS), mode="json")


def changed_settings(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``section.field old -> new`` for every value that differs, sorted."""
    out: list[str] = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(changed_settings(a, b, f"{prefix}{name}."))
        elif a != b:
            out.append(f"{prefix}{name} {a!r} -> {b!r}")
    return out


def warn_if_changed(what: str, recorded: Mapping[str, Any] | None, settings: Settings) -> None:
    """Log one warning naming the result-changing settings that differ from the checkpoint's."""
    if recorded is None:
        return
    changes = changed_settings(recorded, settings_record(settings))
    if changes:
        log.warning("%s: settings changed since its checkpoint (config_hash now %s); applying today's: %s",
                    what, settings.config_hash(), "; ".join(changes))
