"""`driftline demo`: the whole pipeline on the embedded stack, with a summary and an HTML report.

Modules: ``plan`` (the scenario and the settings of the run), ``stack`` (child processes),
``progress`` (the live display), ``summary`` (queries and pure row -> summary functions),
``report`` (HTML with embedded charts) and ``run`` (the orchestration of all of them).
"""

from driftline.extras import require

require("local", "driftline.demo (the embedded local stack)")
