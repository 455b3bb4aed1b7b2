"""Run one retrain job so that it can never outlive the listener that started it.

``python -m driftline.jobs.runner -- ARGV...`` runs ARGV (stdin, stdout and stderr inherited) and
exits with its exit code (128 + signal number if a signal ended it).

The listener starts the runner through :func:`driftline.runtime.tied_child_preexec`: the runner
leads a new session and process group, and the kernel sends it SIGTERM when the listener dies
(``PR_SET_PDEATHSIG``), even on SIGKILL. The runner answers SIGTERM, SIGINT and SIGHUP by
SIGKILLing its whole process group: the job and every process the job started (a shell's
children included), which a plain parent-death signal on the direct child would miss. A timeout
is the listener SIGKILLing the group (``os.killpg(runner_pid, SIGKILL)``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

from driftline.runtime import set_parent_death_signal


def _kill_group(signum: int, frame: FrameType | None) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def run(argv: Sequence[str]) -> int:
    """Run ``argv`` in this process group; a termination signal kills the whole group."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _kill_group)
    runner_pid = os.getpid()

    def child_preexec() -> None:
        # Covers the runner being SIGKILLed on its own (not through its group).
        set_parent_death_signal(signal.SIGKILL)
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
