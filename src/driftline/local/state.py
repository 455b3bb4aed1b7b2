"""Where `driftline local up` records the embedded broker, so other commands find it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

STATE_FILE = "local-broker.json"
LOCK_FILE = "local-broker.lock"


@dataclass(frozen=True)
class LocalBrokerState:
    """What `local up` records: enough to find, describe and stop the broker later."""

    pid: int
    bootstrap_servers: str
    started_at: float  # epoch seconds
    log_path: str
    binary: str

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)


def state_path(home: Path) -> Path:
    return Path(home) / STATE_FILE


def read_state_file(home: Path) -> LocalBrokerState | None:
    """The recorded broker whether or not its process still runs; None if absent or malformed."""
    try:
        raw = orjson.loads(state_path(home).read_bytes())
        return LocalBrokerState(
            pid=int(raw["pid"]),
            bootstrap_servers=str(raw["bootstrap_servers"]),
            started_at=float(raw["started_at"]),
            log_path=str(raw["log_path"]),
            binary=str(raw["binary"]),
        )
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def write_local_state(home: Path, state: LocalBrokerState) -> Path:
    """Record the broker atomically (readers never see half a file)."""
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(state.to_json())
    tmp.replace(path)
    return path


def clear_local_state(home: Path) -> None:
    state_path(home).unlink(missing_ok=True)


def read_local_state(home: Path) -> dict[str, object] | None:
    """The recorded broker (pid, bootstrap address, ...) if its process is still alive."""
    state = read_state_file(home)
    if state is None or not broker_alive(state):
        return None
    return asdict(state)


def read_local_bootstrap(home: Path) -> str | None:
    state = read_local_state(home)
    if state is None:
        return None
    value = state.get("bootstrap_servers")
    return value if isinstance(value, str) else None


def broker_alive(state: LocalBrokerState) -> bool:
    """True if the recorded pid runs and, where /proc tells, still is the recorded binary.

    The identity check keeps a recycled pid (broker died, pid reused) from being taken for the
    broker, and so from being signalled by `local down`.
    """
    if not pid_alive(state.pid):
        return False
    try:
        argv0 = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return True  # no /proc (macOS): the pid is all we can check
    return os.path.basename(os.fsdecode(argv0)) == os.path.basename(state.binary)


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # Field 3 (after the parenthesised command name, which may contain spaces) is the state.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def state_lock(home: Path) -> Iterator[None]:
    """Serialise `local up` / `local down` on one home directory."""
    path = Path(home) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
