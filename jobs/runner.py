"""Run one retrain job so that it can never outlive the listener that started it.

``python -m driftline.jobs.runner -- ARGV...`` runs ARGV (stdin, stdout and stderr inherited) and
exits with its exit code (128 + signal number if a signal ended it).

The listener starts the runner through :func:`job_preexec`: the runner leads a new session and
process group, and the kernel sends it SIGTERM when the listener dies (``PR_SET_PDEATHSIG``),
even on SIGKILL. The runner answers SIGTERM, SIGINT and SIGHUP by SIGKILLing its whole process
group: the job and every process the job started (a shell's children included), which a plain
parent-death signal on the direct child would miss. A timeout is the listener SIGKILLing the
group (``os.killpg(runner_pid, SIGKILL)``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from types import FrameType

PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def job_preexec(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn``: new session + SIGTERM on parent death (exits if the parent is already gone).

    Linux only (prctl). ``parent_pid`` is the pid of the process that spawns the runner.
    """

    def preexec() -> None:
        os.setsid()
        _set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _kill_group(signum: int, frame: FrameType | None) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def run(argv: Sequence[str]) -> int:
    """Run ``argv`` in this process group; a termination signal kills the whole group."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _kill_group)
    runner_pid = os.getpid()

    def child_preexec() -> None:
        # Covers the runner being SIGKILLed on its own (not through its group).
        _set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != runner_pid:
            os._exit(1)

    proc = subprocess.Popen(list(argv), preexec_fn=child_preexec)
    code = proc.wait()
    return 128 - code if code < 0 else code


def main(args: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m driftline.jobs.runner -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
