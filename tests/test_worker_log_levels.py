"""The worker's logging honours --loglevel: Kafka's debug lines are not even built below DEBUG.

Faust's terminal spinner set the root logger to DEBUG at ``--loglevel warning`` or ``error`` (the
level bench row (1) runs at), so each aiokafka debug call (a few per request) made a LogRecord that
every handler then dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faust
import pytest

from driftline.streams.app import faust_worker


@pytest.fixture
def saved_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    loggers = {name: logger.level for name, logger in logging.Logger.manager.loggerDict.items()
               if isinstance(logger, logging.Logger)}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, logger_level in loggers.items():
            logging.getLogger(name).setLevel(logger_level)


@pytest.mark.parametrize("loglevel", ["info", "warning", "error"])
def test_kafka_debug_lines_are_not_built(loglevel: str, saved_logging: None) -> None:
    app = faust.App(f"log-levels-{loglevel}", broker="kafka://127.0.0.1:9", store="memory://",
                    web_enabled=False)
    worker = faust_worker(app, loglevel)
    worker._setup_logging()  # what execute_from_commandline does first
    assert not logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("driftline.streams").isEnabledFor(getattr(logging, loglevel.upper()))
    quiet = max(logging.WARNING, getattr(logging, loglevel.upper()))
    assert logging.getLogger("aiokafka").getEffectiveLevel() == quiet
