"""Replay, backtest and calibrate: the live pipeline's processors over historical data.

- :mod:`~driftline.replay.run` — ``replay_topics`` / ``replay_files``: time-bounded replays into a
  RowWriter under a run id (sources: :mod:`~driftline.replay.kafka_source`,
  :mod:`~driftline.replay.files`; feeding: :mod:`~driftline.replay.engine`,
  :mod:`~driftline.replay.merge`).
- :mod:`~driftline.replay.backtest` — alarms, detection delays, false alarms per million quiet
  events; :mod:`~driftline.replay.calibrate` — thresholds for a false alarm target;
  :mod:`~driftline.replay.incidents`, :mod:`~driftline.replay.results` (rows from ClickHouse),
  :mod:`~driftline.replay.plot`.
"""

from driftline.extras import require

require("worker", "driftline.replay")
