"""A stage-1 chain written before delta format 3 (profiles named, LZ4) still restores: a worker
upgraded in place goes on from the base and format-2 deltas its previous version wrote.

tests/data/shard_chain_delta_v2.pkl holds shard 0's base (state format 4) and two deltas (delta
format 2, zlib) written by fa7c53b from the input below (``_settings``, ``_records``: a fixed
start, so the same records are generated again here) after 800, 1,200 and 1,600 of its records.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from driftline.config import JoinSettings, Settings, TopicSettings, WindowSettings
from driftline.demo.training import training_profiles
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.pipeline.shard import ShardFactory
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import CovariateDrift, LabelDelay, ModelSpec

CHAIN = Path(__file__).parent / "data" / "shard_chain_delta_v2.pkl"
START = 1_795_000_000_000 // 86_400_000 * 86_400_000
CUTS = (800, 1200, 1600)  # the base after the first, a delta after each of the others


def _settings() -> Settings:
    return Settings(topics=TopicSettings(partitions=2, model_events_partitions=2),
                    windows=WindowSettings(sizes_s=[60], allowed_lateness_s=10, metrics_interval_s=60),
                    join=JoinSettings(label_horizon_s=600))


def _scenario() -> Scenario:
    drift = [CovariateDrift(feature="x1", at_s=300, magnitude=2.0)]
    return Scenario(seed=4, start=START, duration_s=600, rate=8,
                    models=[ModelSpec(model_id="a", n_numeric=3, n_categorical=1, covariate_drift=drift)],
                    label_delay=LabelDelay(median_s=60, max_s=300))


def _records(settings: Settings) -> list[RawRecord]:
    return [r for r in logged_records(generate(_scenario()), settings) if r.partition == 0]


def test_a_chain_of_format_2_deltas_restores_and_goes_on_as_the_live_shard() -> None:
    settings = _settings()
    with CHAIN.open("rb") as f:
        chain = pickle.load(f)
    assert chain["base"][:5] == b"DLST\x04" and all(d[:5] == b"DLSD\x02" for d in chain["deltas"])
    own = _records(settings)
    # The live shard reads the profile the chain holds: rebuilt here, its multivariate section's
    # floats (PCA basis, precision matrix) can differ in the last bits on another CPU (OpenBLAS
    # picks its kernels by CPU), and so its id; the chain's was built where fa7c53b ran.
    held = ShardFactory(settings, "r").restore(0, chain["base"], chain["deltas"]).watch._models[("a", "1")]
    built = training_profiles(_scenario(), settings.drift.bins, settings.drift.top_k, 0)
    assert [p.model_dump(exclude={"profile_id", "created_at_ms", "multivariate"}) for p in held.profiles] == [
        p.model_dump(exclude={"profile_id", "created_at_ms", "multivariate"}) for p in built]
    profiles = [p.model_dump_json().encode() for p in held.profiles]
    live = InProcessPipeline(settings, "r", profiles=profiles).shards[0]
    live.track_changes()
    start = 0
    for cut in CUTS:
        live.process(own[start:cut])
        start = cut
    restored = ShardFactory(settings, "r").restore(0, chain["base"], chain["deltas"])
    restored.track_changes()
    middle = CUTS[-1] + (len(own) - CUTS[-1]) // 2
    out = restored.process(own[CUTS[-1]:middle])
    assert out and out == live.process(own[CUTS[-1]:middle])
    # ...and a delta in today's format continues the old chain
    today = restored.checkpoint(base=False)
    again = ShardFactory(settings, "r").restore(0, chain["base"], [*chain["deltas"], today])
    rest = own[middle:]
    out = again.process(rest)
    assert out and out == live.process(rest)
