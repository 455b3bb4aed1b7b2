"""Retrain jobs: the trigger listener, the job runner and the example job."""

from driftline.extras import require

require("worker", "driftline.jobs (the retrain listener and jobs)")
