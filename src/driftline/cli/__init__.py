"""The ``driftline`` command, one module per subcommand."""

from driftline.extras import require

require("worker", "the driftline command")
