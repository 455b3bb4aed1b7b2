"""`driftline local up|status|down` as a user runs it, and the broker context manager's cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.config import Settings
from driftline.kafka.admin import partition_counts, topic_specs
from driftline.local.broker import free_port, running_broker, terminate_pid
from driftline.local.state import LocalBrokerState, pid_alive, read_state_file, state_path, write_local_state


def _env(home: Path) -> dict[str, str]:
    # The CLI must find the broker through the state file, not through an outer configuration.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["DRIFTLINE_HOME"] = str(home)
    return env


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.cli.main", "local", *args],
                          env=_env(home), capture_output=True, text=True, timeout=60)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A driftline home whose broker, if a test left one, is stopped afterwards."""
    path = tmp_path / "home"
    yield path
    state = read_state_file(path)
    if state is not None and pid_alive(state.pid):
        terminate_pid(state.pid)


@pytest.mark.integration
def test_up_status_down(home: Path) -> None:
    up = _cli(home, "up")
    assert up.returncode == 0, up.stderr
    state = read_state_file(home)
    assert state is not None and pid_alive(state.pid)
    assert state.bootstrap_servers in up.stdout and Path(state.log_path).parent == home.resolve()

    # Other processes find the broker through Settings.bootstrap_servers() and the state file.
    settings = Settings(home=home)
    assert settings.bootstrap_servers() == state.bootstrap_servers
    counts = partition_counts(settings)
    assert counts == {spec.name: spec.partitions for spec in topic_specs(settings)}

    again = _cli(home, "up")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert read_state_file(home) == state

    status = _cli(home, "status")
    assert status.returncode == 0, status.stderr
    assert state.bootstrap_servers in status.stdout and str(state.pid) in status.stdout
    assert f"{settings.topics.predictions}  partitions={settings.topics.partitions}" in status.stdout

    down = _cli(home, "down")
    assert down.returncode == 0, down.stderr
    assert not pid_alive(state.pid)
    assert not state_path(home).exists()

    assert _cli(home, "down").returncode == 0  # idempotent
    stopped = _cli(home, "status")
    assert stopped.returncode == 1 and "not running" in stopped.stdout


@pytest.mark.integration
def test_up_on_a_chosen_port(home: Path) -> None:
    port = free_port()
    up = _cli(home, "up", "--port", str(port))
    assert up.returncode == 0, up.stderr
    state = read_state_file(home)
    assert state is not None and state.bootstrap_servers == f"127.0.0.1:{port}"
    assert _cli(home, "down").returncode == 0
    assert not pid_alive(state.pid)


@pytest.mark.integration
def test_up_on_a_busy_port_fails_cleanly(home: Path) -> None:
    with running_broker() as other:
        up = _cli(home, "up", "--port", str(other.port))
    assert up.returncode == 1
    assert "in use" in up.stderr and "Traceback" not in up.stderr
    assert read_state_file(home) is None


def test_stale_state_file_is_reported_and_removed(home: Path) -> None:
    # A process that has exited: its pid is free (or reused by something that is not the broker).
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    write_local_state(home, LocalBrokerState(pid=child.pid, bootstrap_servers="127.0.0.1:1",
                                             started_at=time.time(), log_path="", binary="tansu"))
    assert Settings(home=home).bootstrap_servers() == "127.0.0.1:9092"  # dead broker is not used
    status = _cli(home, "status")
    assert status.returncode == 1 and "stale" in status.stdout
    down = _cli(home, "down")
    assert down.returncode == 0, down.stderr
    assert not state_path(home).exists()


def test_help_texts(home: Path) -> None:
    for action in ("up", "status", "down"):
        shown = _cli(home, action, "--help")
        assert shown.returncode == 0 and "usage: driftline local " + action in shown.stdout
    bare = _cli(home)
    assert bare.returncode == 2 and "up" in bare.stderr and "down" in bare.stderr


@pytest.mark.integration
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_running_broker_stops_on_error_and_interrupt(error: type[BaseException]) -> None:
    with pytest.raises(error), running_broker() as broker:
        process = broker.process
        assert process.poll() is None
        raise error()
    assert process.poll() is not None


_STARTS_A_BROKER = """
import sys, time
from driftline.local.broker import start_broker
broker = start_broker(detach=sys.argv[2] == "detach")
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(broker.process.pid))
import os; os.replace(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(60)
"""


def _broker_of_killed_caller(tmp_path: Path, mode: str) -> int:
    """A process that started a broker (``mode``: "detach" or not) killed by SIGKILL: the broker's pid."""
    pid_file = tmp_path / f"broker-{mode}.pid"
    caller = subprocess.Popen([sys.executable, "-c", _STARTS_A_BROKER, str(pid_file), mode],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists():
            assert caller.poll() is None, caller.stderr.read().decode() if caller.stderr else ""
            assert time.monotonic() < deadline, "the caller did not start its broker"
            time.sleep(0.05)
        broker_pid = int(pid_file.read_text())
        assert pid_alive(broker_pid)
    finally:  # killed either way: a failed start leaves no caller (nor, tied, its broker) behind
        caller.kill()
        caller.wait()
    return broker_pid


@pytest.mark.integration
def test_a_broker_ends_with_its_killed_caller_unless_detached(tmp_path: Path) -> None:
    """A killed test run (SIGKILL: no cleanup runs) leaves no broker behind; a detached one (the
    demo's, `driftline local up`'s) outlives its caller, as it should."""
    tied = _broker_of_killed_caller(tmp_path, "tied")
    detached = _broker_of_killed_caller(tmp_path, "detach")
    try:
        deadline = time.monotonic() + 60
        while pid_alive(tied) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(tied), "the broker outlived its SIGKILLed caller"
        assert pid_alive(detached)
    finally:
        for pid in (tied, detached):
            if pid_alive(pid):
                terminate_pid(pid)
