"""Checkpoints across the split of ``operators/join.py`` into the ``operators.join`` package: a join's
pickles (a plain join, one spilling its payloads, a delta) are the same bytes as the single module
wrote them, and those bytes restore into joins that pickle the same again.

``join_pickles_b2f0a1f.pkl`` was written by the module as of commit b2f0a1f (the last before the
split), imported under its own name in a fresh interpreter::

    git show b2f0a1f:src/driftline/operators/join.py > /tmp/join_b2f0a1f.py
    .venv/bin/python tests/test_op_join_pickles.py /tmp/join_b2f0a1f.py tests/join_pickles_b2f0a1f.pkl
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

FIXTURE = Path(__file__).with_name("join_pickles_b2f0a1f.pkl")
UUID = "0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d5a"


def _pickles(join_module: ModuleType) -> dict[str, bytes]:
    """The pickles of joins driven through one script: every record state (pending, joined,
    closed), held, evicted and orphaned labels, duplicates, both kinds of id key, two feature
    layouts, expiry and forgetting; the same joins with a memory budget; a delta of closings."""
    from driftline.schemas.events import LabelEvent, PredictionEvent

    def digest(payload: bytes) -> bytes:  # the single module's payload_digest, whatever it is now
        return hashlib.blake2b(payload, digest_size=8).digest()

    def run(budget: int) -> tuple[Any, Any]:
        join = join_module.LabelJoin(horizon_ms=5_000, max_pending=6, max_held=2)
        if budget:
            join.set_memory_budget(budget)

        def predict(pid: str, ts: int, **features: Any) -> None:
            join.on_prediction(PredictionEvent(prediction_id=pid, model_id="m", model_version="2",
                                               timestamp=ts, features=features,
                                               prediction={"label": "yes", "score": 0.75}),
                               segment="region=eu", digest=digest(f"{pid}{ts}".encode()))

        def label(pid: str, ts: int, value: str = "yes") -> None:
            join.on_label(LabelEvent(prediction_id=pid, label=value, timestamp=ts),
                          digest=digest(f"{pid}{ts}{value}".encode()))

        label("early", 900)  # held, claimed by its prediction below
        for i in range(4):
            predict(f"p{i}", 1_000 + 700 * i, x=i * 0.5, c="a")
        predict(UUID, 1_200, x=0.25, y=-1.0)
        predict("early", 800, x=1.0, c="b")
        predict("p1", 1_800, x=0.5, c="a")  # an exact duplicate prediction
        label("p0", 1_500)
        label("p0", 1_600, "no")  # a conflicting duplicate label
        label(UUID, 1_300, "no")
        label("gone", 1_400)  # held ...
        label("never", 1_450)  # ... held ...
        label("again", 1_460)  # ... and the oldest held label evicted (max_held)
        join.track_changes()
        join.reset_changes()
        for i in range(4, 9):  # past max_pending: the oldest pending predictions are evicted
            predict(f"p{i}", 4_000 + 100 * i, x=float(i), c="z")
        label("p3", 4_000)
        join.advance(pred_watermark_ms=3_000, label_watermark_ms=7_000)  # orphans, expiry
        changes = join.take_changes()
        join.advance(pred_watermark_ms=9_000, label_watermark_ms=9_000)  # forgetting
        return join, changes

    join, changes = run(0)
    spilling, _ = run(1)
    assert spilling.spilled_count > 0
    return {"join": pickle.dumps(join, pickle.HIGHEST_PROTOCOL),
            "changes": pickle.dumps(changes, pickle.HIGHEST_PROTOCOL),
            "spilling": pickle.dumps(spilling, pickle.HIGHEST_PROTOCOL)}


def test_pickles_are_the_bytes_the_single_module_wrote() -> None:
    from driftline.operators import join

    written = pickle.loads(FIXTURE.read_bytes())
    assert _pickles(join) == written
    for name, blob in written.items():  # restored by the package's classes
        assert type(pickle.loads(blob)) in (join.LabelJoin, join.JoinChanges), name


def test_an_old_join_restored_goes_on_as_a_new_one() -> None:
    from driftline.operators import join
    from driftline.schemas.events import PredictionEvent

    written = pickle.loads(FIXTURE.read_bytes())
    old, spilled = pickle.loads(written["join"]), pickle.loads(written["spilling"])
    new = pickle.loads(_pickles(join)["join"])
    for restored in (old, spilled, new):
        restored.on_prediction(PredictionEvent(prediction_id="late", model_id="m", timestamp=9_500,
                                               prediction=0.5), segment="")
        assert "late" in [e.prediction_id for e in restored.advance(20_000, 20_000)]
    assert pickle.dumps(old) == pickle.dumps(spilled) == pickle.dumps(new)


if __name__ == "__main__":  # write the fixture with another revision's join module (see above)
    import importlib.util

    spec = importlib.util.spec_from_file_location("driftline.operators.join", sys.argv[1])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["driftline.operators.join"] = module
    spec.loader.exec_module(module)
    Path(sys.argv[2]).write_bytes(pickle.dumps(_pickles(module), pickle.HIGHEST_PROTOCOL))
