"""The stage processors the worker and replays run: stage 1 (shards), stage 2 (models), rows."""

from driftline.extras import require

require("worker", "driftline.pipeline (the stage processors)")
