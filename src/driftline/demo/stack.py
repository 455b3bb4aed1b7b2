"""The demo's child processes: each in its own process group, stopped on every exit path.

Children lead their own session (a Ctrl-C in the terminal reaches only the demo, which then stops
them in order) and get SIGTERM from the kernel should the demo itself die (parent-death signal).
Spawn them from the main thread: the parent-death signal fires when the spawning thread ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from driftline.runtime import tied_child_preexec

CLI = [sys.executable, "-m", "driftline.cli.main"]


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float) -> int | None:
        """SIGTERM the group, wait up to ``timeout``, then SIGKILL it; returns the exit code."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            self._signal_group(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
        return self.process.poll()

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)  # the child leads its group: its pgid is its pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def spawn(name: str, args: list[str], log_path: Path, env: dict[str, str]) -> Child:
    """Run ``driftline ARGS`` with ``env``; its output goes to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen([*CLI, *args], stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=tied_child_preexec(os.getpid()))
    return Child(name, process, log_path)


class StartupError(RuntimeError):
    """A child exited or did not become ready."""


def wait_healthy(child: Child, url: str, timeout: float, context: ssl.SSLContext | None = None) -> None:
    """Wait until ``url`` answers 200 (the worker's /healthz once every runner is running);
    ``context`` verifies an https URL."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.running():
            raise StartupError(f"{child.name} exited with code {child.process.returncode}:\n"
                               f"{child.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet, or 503 while runners start
            pass
        time.sleep(0.2)
    raise StartupError(f"{child.name} was not healthy at {url} within {timeout:.0f}s:\n{child.log_tail()}")
