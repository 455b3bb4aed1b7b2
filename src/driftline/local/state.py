"""Where `driftline local up` records the embedded broker, so other commands find it."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

STATE_FILE = "local-broker.json"


def state_path(home: Path) -> Path:
    return Path(home) / STATE_FILE


def read_local_state(home: Path) -> dict[str, object] | None:
    """The recorded broker (pid, bootstrap address, ...) if its process is still alive."""
    path = state_path(home)
    try:
        state = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    return dict(state)


def read_local_bootstrap(home: Path) -> str | None:
    state = read_local_state(home)
    if state is None:
        return None
    value = state.get("bootstrap_servers")
    return value if isinstance(value, str) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
