"""Stage 2's reference profiles: what each window is scored against and where baselines come from.

Profiles arrive on the profiles topic (training profiles, any order, re-sent copies ignored) or
are made by the window clock from a model's first full window when it has none. The window clock
scores a window against the newest *training* profile effective at its start (else the newest
effective profile); the outcome clock reads baseline metrics from the newest profile.

>>> from driftline.operators.profile import build_profile
>>> book = ProfileBook()
>>> profile = build_profile("m", "1", {"x": [1.0, 2.0, 3.0]}, label_column=None,
...                         prediction_column=None, bins=2, top_k=1, created_at_ms=0)
>>> book.add(profile), book.add(profile)
(True, False)
>>> book.profile_for("m", "1", 0) is profile, book.profile_for("m", "2", 0)
(True, None)
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from driftline.operators.profile import ReferenceProfile
from driftline.pipeline.state import ChainShared

LATEST = 2**62  # "any effective_from"


class ProfileBook:
    """Reference profiles per (model, version), in order of (effective_from, profile_id)."""

    def __init__(self) -> None:
        self.by_model: dict[tuple[str, str], list[ReferenceProfile]] = defaultdict(list)

    def add(self, profile: ReferenceProfile) -> bool:
        """Keep ``profile`` unless its id is known; True if it was new."""
        known = self.by_model[(profile.model_id, profile.model_version)]
        if any(p.profile_id == profile.profile_id for p in known):
            return False
        known.append(profile)
        known.sort(key=lambda p: (p.effective_from_ms, p.profile_id))
        return True

    def add_first_window(self, profile: ReferenceProfile) -> None:
        """A model's first-window reference, made by the window clock (after any it already has)."""
        self.by_model[(profile.model_id, profile.model_version)].append(profile)

    def profile_for(self, model_id: str, version: str, start: int = LATEST) -> ReferenceProfile | None:
        """The newest training profile effective at ``start``, else the newest effective one."""
        usable = [p for p in self.by_model.get((model_id, version), []) if p.effective_from_ms <= start]
        trained = [p for p in usable if p.source == "training"]
        chosen = trained or usable
        return chosen[-1] if chosen else None

    def baseline(self, model_id: str, version: str, metric: str) -> float | None:
        """The newest profile's baseline value of ``metric`` (accuracy, mae, ...), if it has one."""
        profile = self.profile_for(model_id, version)
        if profile is not None and metric in profile.baseline:
            return float(profile.baseline[metric])
        return None


def chain_profiles() -> ChainShared:
    """The reference profiles a stage's chain of checkpoints pickles once (in its base, or the
    delta written after one arrived) and names after that."""
    return ChainShared(ReferenceProfile, _profile_key)


def _profile_key(profile: ReferenceProfile) -> bytes:
    """A profile's content, named (its id alone is not: a copy may keep it, e.g. with another
    effective_from or only some of its features)."""
    return hashlib.blake2b(profile.model_dump_json().encode(), digest_size=16).digest()
