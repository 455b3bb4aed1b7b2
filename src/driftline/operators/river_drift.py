"""River's ``river.drift``, imported without its example data sets until something reads them.

``river/drift/__init__.py`` imports ``river.drift.datasets`` (example streams for its docs), and
through it ``river.datasets`` and ``river.stream``: scikit-learn where it is installed, pandas and
scipy.io, ~0.8 of the package's ~1.5 CPU-s of import here, in every worker, replay and backtest
process that scores outcomes. None of it is needed for the detectors (ADWIN, Page-Hinkley, KSWIN,
DDM). :func:`drift` puts a stand-in for that subpackage in ``sys.modules`` before importing
``river.drift``; the stand-in's first attribute read imports the real subpackage, which then
replaces it, so ``river.drift.datasets`` reads as before for anyone who uses it in the process.
Where River's layout is not the one expected (or ``river.drift`` is imported already), it is a
plain import.

>>> detectors = drift()
>>> type(detectors.ADWIN(delta=0.002)).__name__, type(detectors.binary.DDM()).__name__
('ADWIN', 'DDM')
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

DEFERRED = "river.drift.datasets"
_lock = threading.Lock()  # a starting worker's preload thread and its event loop may both ask


class _Deferred(ModuleType):
    """Stands in for a module not imported yet: the first read of a name it lacks imports it."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # the import system's and tools' probes (__path__ etc. are set)
            raise AttributeError(name)
        with _lock:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def drift() -> ModuleType:
    """``river.drift`` (its data sets subpackage imported on first use; module docstring)."""
    with _lock:
        if "river.drift" not in sys.modules and DEFERRED not in sys.modules:
            _stand_in()
    # through the import system even when imported: a worker's preload thread may be importing it
    # (in sys.modules, not initialised yet), and import_module waits for that import to finish
    return importlib.import_module("river.drift")


def _stand_in() -> None:
    import river

    folder = Path(river.__file__).parent / "drift" / "datasets"
    init = folder / "__init__.py"
    if not init.is_file():
        return
    spec = importlib.util.spec_from_file_location(DEFERRED, init, submodule_search_locations=[str(folder)])
    if spec is None:
        return
    module = _Deferred(DEFERRED)
    module.__spec__ = spec
    module.__path__ = [str(folder)]
    module.__file__ = str(init)
    module.__package__ = DEFERRED
    sys.modules[DEFERRED] = module
