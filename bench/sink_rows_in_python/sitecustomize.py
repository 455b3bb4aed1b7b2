"""Put this directory on ``PYTHONPATH`` to run a worker (or any driftline process) whose sink writes
the outcomes topic row by row, as before its C pass: ``ClickHouseRowWriter.write_json_objects``
takes nothing, so every batch goes the row-by-row way. For A/B runs of figure (1)::

    PYTHONPATH=bench/sink_rows_in_python .venv/bin/python bench/bench_pipeline.py --worker-only --n 100000
"""

from driftline.store import writer

writer.ClickHouseRowWriter.write_json_objects = lambda self, table, values: False  # type: ignore[method-assign]
