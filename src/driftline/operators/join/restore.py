"""How a join's record table is pickled and unpickled: whole groups (spilled payloads read back)
as the pickler reaches them, and under a restore budget spilled again as they arrive."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from driftline.operators.join.spill import _stub_groups, _whole_group
from driftline.operators.pending_store import PendingStore


class _WholeGroups:
    """A join's record groups as its checkpoint pickles them: a spilling join's groups are made
    whole (their spilled payloads read back) only when the pickler reaches each, so a base of
    millions of spilled records holds one whole group beside its pickle, not every record whole
    (with the checkpoint's pickler, which does not memoize ``fresh_items``: a memo keeps them all).
    It unpickles as :class:`_RestoredGroups`, which a restore under a memory budget spills as the
    groups arrive. ``groups`` must not change meanwhile: a checkpoint pickles a join while batches
    are kept out, a base a copy of its groups (:meth:`LabelJoin.base_copy`), reading payloads with
    ``read`` (None: groups as they are). ``one_by_one``: through Python, so that a thread pickling a
    copy lets the live join's thread run (the pickler's own loop over a list never lets go of the
    GIL).

    >>> import pickle
    >>> join = LabelJoin(1_000, max_pending=10, max_held=10)
    >>> pickle.loads(pickle.dumps(_WholeGroups(join._groups, bytes))).groups == join._groups
    True
    """

    __slots__ = ("_groups", "_one_by_one", "_read")

    def __init__(self, groups: list[bytes], read: Callable[[bytes], bytes] | None,
                 one_by_one: bool = True) -> None:
        self._groups = groups
        self._read = read
        self._one_by_one = one_by_one

    def __iter__(self) -> Iterator[bytes]:
        read = self._read
        if read is None:
            return (group for group in self._groups) if self._one_by_one else iter(self._groups)
        return (_whole_group(group, read) for group in self._groups)

    fresh_items = __iter__  # a checkpoint's pickler does not memoize them (pipeline.state)

    def __reduce__(self) -> tuple[type[_RestoredGroups], tuple[()], None, Iterator[bytes]]:
        return _RestoredGroups, (), None, iter(self)

    def __eq__(self, other: object) -> bool:
        """Equal to the groups it pickles (a list, or another join's)."""
        if not isinstance(other, _WholeGroups | list):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class _RestoreBudget:
    budget: int
    directory: Path | str | None
    segment_ms: int


_RESTORE_BUDGET: contextvars.ContextVar[_RestoreBudget | None] = contextvars.ContextVar(
    "driftline_join_restore_budget", default=None)


@contextlib.contextmanager
def restoring_under_budget(budget_bytes: int, directory: Path | str | None = None,
                           segment_ms: int = 900_000) -> Iterator[None]:
    """Joins unpickled inside (a base checkpoint's, in this thread) keep their records under
    ``budget_bytes`` while their groups arrive: pending payloads go to a new
    :class:`~driftline.operators.pending_store.PendingStore` in ``directory`` once the groups
    kept whole fill 3/4 of the budget, so a restore's peak is the table of stubs plus the
    budget, not every record whole (0: no budget, nothing changes). The join then runs with
    that store and budget (:meth:`LabelJoin.set_memory_budget` with the same budget keeps them).

    >>> import pickle
    >>> from driftline.operators.join import LabelJoin
    >>> from driftline.schemas.events import PredictionEvent
    >>> join = LabelJoin(horizon_ms=60_000, max_pending=1000, max_held=1000)
    >>> for i in range(100):
    ...     _ = join.on_prediction(PredictionEvent(prediction_id=f"p{i}", model_id="m", timestamp=i,
    ...                                            features={"x": 0.5}, prediction=0.9), segment="")
    >>> blob = pickle.dumps(join)
    >>> with restoring_under_budget(1):
    ...     restored = pickle.loads(blob)
    >>> restored.spilled_count, pickle.loads(pickle.dumps(restored))._groups == join._groups
    (100, True)
    >>> restored.set_memory_budget(0)
    """
    token = _RESTORE_BUDGET.set(_RestoreBudget(budget_bytes, directory, segment_ms) if budget_bytes else None)
    try:
        yield
    finally:
        _RESTORE_BUDGET.reset(token)


class _RestoredGroups:
    """A base's record table as it unpickles: pickle hands it the groups a thousand at a time
    (``extend``). Under :func:`restoring_under_budget`, groups are kept whole while they fit in 3/4
    of the budget and every later group's pending payloads go to ``store`` as it arrives (a
    thousand groups at once: :func:`_stub_groups`)."""

    __slots__ = ("groups", "room", "store")

    def __init__(self) -> None:
        self.groups: list[bytes] = []
        budget = _RESTORE_BUDGET.get()
        self.store = None if budget is None else PendingStore(budget.directory, budget.segment_ms)
        self.room = 0 if budget is None else budget.budget * 3 // 4

    def extend(self, groups: list[bytes]) -> None:
        store = self.store
        if store is None:
            self.groups.extend(groups)
            return
        kept = 0
        for group in groups:  # whole while they fit; once one does not, the rest are stubs
            if len(group) > self.room:
                self.room = 0
                break
            self.room -= len(group)
            kept += 1
        self.groups.extend(groups[:kept])
        for start in range(kept, len(groups), _STUB_BATCH):
            self.groups.extend(_stub_groups(groups[start : start + _STUB_BATCH], store))

    def append(self, group: bytes) -> None:
        self.extend([group])


_STUB_BATCH = 256
"""Groups stubbed at once: numpy's copies of them (a few each) stay under a megabyte."""
_WholeGroups.fresh_container = _RestoredGroups  # type: ignore[attr-defined]
