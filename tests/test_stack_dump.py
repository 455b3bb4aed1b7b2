"""``kill -QUIT`` on a process that called install_stack_dump: every thread's stack at once, every
task's once the loop runs, and the process runs on; with the loop thread stuck in a blocking call the
threads' stacks still come (the case a stuck worker needs them for)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PROGRAM = textwrap.dedent("""
    import asyncio, sys, time
    from driftline.runtime import install_stack_dump

    async def waits_for_ever(): await asyncio.Event().wait()

    async def main(block: bool) -> None:
        install_stack_dump(asyncio.get_running_loop())
        asyncio.create_task(waits_for_ever(), name="a-named-task")
        print("ready", flush=True)
        if block:
            time.sleep(120)  # the loop thread stuck in a blocking call
        await asyncio.sleep(120)

    asyncio.run(main(sys.argv[1] == "block"))
""")


def _wait_for_text(path: Path, wanted: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while wanted not in (text := path.read_text(errors="replace")):
        assert proc.poll() is None, f"exited {proc.returncode}:\n{text}"
        assert time.monotonic() < deadline, f"no {wanted!r} within {timeout}s:\n{text}"
        time.sleep(0.05)
    return text


@pytest.mark.parametrize("mode", ["idle", "block"])
def test_sigquit_writes_the_stacks_and_the_process_runs_on(mode: str, tmp_path: Path) -> None:
    out = tmp_path / "stderr.txt"
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-c", PROGRAM, mode], stdout=sink, stderr=sink)
    try:
        _wait_for_text(out, "ready", proc)
        proc.send_signal(signal.SIGQUIT)
        text = _wait_for_text(out, "Current thread", proc)  # faulthandler's: the signal's own thread
        assert "File " in text
        if mode == "block":
            assert "in main" in text  # the blocked frame, though the loop runs nothing
        else:
            text = _wait_for_text(out, "task a-named-task", proc)
            # down the awaits to where it waits, not only the task's outer coroutine
            assert "asyncio tasks ---" in text and "in waits_for_ever" in text and "in wait\n" in text
        assert proc.poll() is None  # SIGQUIT's default would have ended it
    finally:
        proc.kill()
        proc.wait(10)
