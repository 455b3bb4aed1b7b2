"""The worker: stages 1 and 2, the sink and the web server on Kafka (Faust-style runners)."""

from driftline.extras import require

require("worker", "driftline.streams (the worker)")
