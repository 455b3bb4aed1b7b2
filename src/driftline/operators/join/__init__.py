"""The label join: predictions and labels joined in event time, one shard's state at a time.

An event's path through the package: :mod:`.core` applies the join rules (:class:`LabelJoin`,
its module docstring states them); a pending prediction is packed into one record
(:mod:`.records` its layout and id key, :mod:`.features` its features, :mod:`.outputs` its
prediction) and stored in the record table (:mod:`.table`: hashed groups and a time index), whose
payloads go to disk under a memory budget (:mod:`.spill`); a label that joins it makes an outcome
from the record (:mod:`.outcomes`); what else the join reports is in :mod:`.reports`.
Checkpoints: :mod:`.changes` (incremental deltas) and :mod:`.restore` (pickling the table, and
restoring it under a budget). :mod:`.scan` reads many records at once with numpy.
"""

from driftline.operators.join.changes import JoinChanges
from driftline.operators.join.changes import _closing_keys as _closing_keys  # for bench_checkpoints
from driftline.operators.join.changes import _closing_starts as _closing_starts  # for bench_join_state
from driftline.operators.join.core import LabelJoin
from driftline.operators.join.features import FloatArray, features_to_json
from driftline.operators.join.outcomes import REROUTED_LABEL, REROUTED_PREDICTION, JoinedOutcome
from driftline.operators.join.outputs import normalise_label
from driftline.operators.join.records import (
    DIGEST_SIZE,
    UNKNOWN_DIGEST,
    legacy_resend,
    payload_digest,
    payload_digests,
)
from driftline.operators.join.reports import COUNTER_NAMES, Duplicate, ExpiredPrediction, OrphanLabel
from driftline.operators.join.restore import _RestoredGroups as _RestoredGroups  # pickles name it here
from driftline.operators.join.restore import _WholeGroups, restoring_under_budget

# Checkpoints pickle these classes by module and name: they keep the name of the module they were
# defined in before the package (driftline.operators.join), so that checkpoints written before and
# after the split are the same bytes and restore either way. (LabelJoin's methods' doctests are
# collected from .core through its __test__, since doctest finds a class in the module it names.)
for _pickled in (LabelJoin, JoinChanges, JoinedOutcome, Duplicate, ExpiredPrediction, OrphanLabel,
                 _RestoredGroups, _WholeGroups):
    _pickled.__module__ = __name__
del _pickled

__all__ = [
    "COUNTER_NAMES",
    "DIGEST_SIZE",
    "REROUTED_LABEL",
    "REROUTED_PREDICTION",
    "UNKNOWN_DIGEST",
    "Duplicate",
    "ExpiredPrediction",
    "FloatArray",
    "JoinChanges",
    "JoinedOutcome",
    "LabelJoin",
    "OrphanLabel",
    "features_to_json",
    "legacy_resend",
    "normalise_label",
    "payload_digest",
    "payload_digests",
    "restoring_under_budget",
]
