"""Traffic simulator: deterministic, seeded prediction and label streams with known drift.

``generate(scenario)`` yields keyed records in event-time order, ``produce`` sends them to Kafka,
``write_jsonl`` to files, and ``ground_truth`` says which drift happens when.
"""

from driftline.simulate.output import ProduceStats, produce, write_jsonl
from driftline.simulate.scenario import (
    MALFORMED_KINDS,
    ConceptDrift,
    CovariateDrift,
    LabelDelay,
    ModelSpec,
    Scenario,
)
from driftline.simulate.traffic import SimEvent, generate
from driftline.simulate.truth import ground_truth

__all__ = [
    "MALFORMED_KINDS", "ConceptDrift", "CovariateDrift", "LabelDelay", "ModelSpec", "ProduceStats",
    "Scenario", "SimEvent", "generate", "ground_truth", "produce", "write_jsonl",
]
