"""Process-level helpers: GC tuning for long-running processes (worker, replay), children that
die with the process that started them (retrain jobs, the demo's children) and a stack dump on
SIGQUIT for a worker that seems stuck."""

from __future__ import annotations

import asyncio
import ctypes
import faulthandler
import gc
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from types import FrameType
from typing import TextIO

# The hot path allocates many short-lived containers (decoded events, rows); with CPython's
# default generation-0 threshold of 700 the cyclic collector keeps rescanning the large, long-lived
# state (pending joins, sketches). Measured on the in-process pipeline: +30% events/s.
GC_THRESHOLDS = (200_000, 20, 100)
GC_THRESHOLD0_CEILING = 1_600_000
"""How far :class:`CollectorPacing` lets the generation-0 threshold rise while collections find
(almost) no garbage: a pause of ~0.75 CPU-s at 1,000 models' state (~470 ns a young object at
800,000: docs/scaling.md, "Session 44")."""
GC_GARBAGE_ALLOWED = 20_000
"""Cyclic garbage a collection may find (objects) and the threshold still rise. While it is raised,
garbage that starts to appear waits one raised period once (at most the ceiling's allocations),
then the floor's pace holds as long as collections keep finding more than this."""


class CollectorPacing:
    """A ``gc.callbacks`` entry that paces the cyclic collector by what it finds.

    A generation-0 collection scans every tracked object allocated since the last one and still
    alive; a worker's survivors are state that lives a window or a grid line (buffered columns,
    held events, parsed partials), which the collector walks and keeps, finding nothing to free.
    With many models that state is large and a collection is costly (bench_models at 1,000 models:
    ~0.1 CPU-s each, ~200,000 young objects). So while collections find at most ``allowed`` garbage
    objects the generation-0 threshold doubles, up to ``ceiling``: window state that a close frees
    before the next collection is never scanned. A collection that finds more puts it back to
    ``floor``: a process that makes cyclic garbage is collected as often as before.

    >>> pacing = CollectorPacing(floor=1_000, ceiling=4_000, allowed=10)
    >>> pacing.paced(1_000, found=0), pacing.paced(2_000, found=3), pacing.paced(4_000, found=0)
    (2000, 4000, 4000)
    >>> pacing.paced(4_000, found=11)
    1000
    """

    __slots__ = ("allowed", "ceiling", "floor")

    def __init__(self, floor: int | None = None, ceiling: int | None = None,
                 allowed: int = GC_GARBAGE_ALLOWED) -> None:
        # (the module's settings as they are now: a bench pins the threshold by setting both alike)
        floor = GC_THRESHOLDS[0] if floor is None else floor
        ceiling = GC_THRESHOLD0_CEILING if ceiling is None else ceiling
        if not 0 < floor <= ceiling:
            raise ValueError("need 0 < floor <= ceiling")
        self.floor, self.ceiling, self.allowed = floor, ceiling, allowed

    def paced(self, threshold0: int, found: int) -> int:
        """The generation-0 threshold after a collection that found ``found`` garbage objects."""
        return self.floor if found > self.allowed else min(max(threshold0, self.floor) * 2, self.ceiling)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase != "stop":
            return
        threshold0, *older = gc.get_threshold()
        paced = self.paced(threshold0, info["collected"] + info["uncollectable"])
        if paced != threshold0:
            gc.set_threshold(paced, *older)


def tune_gc() -> None:
    """Collect rarely (paced by :class:`CollectorPacing`, from :data:`GC_THRESHOLDS`), and move
    everything allocated at start-up out of the collector's sight."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.callbacks[:] = [callback for callback in gc.callbacks if not isinstance(callback, CollectorPacing)]
    gc.callbacks.append(CollectorPacing())


PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent thread ends (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def tied_child_preexec(parent_pid: int, *, new_session: bool = True) -> Callable[[], None]:
    """A ``preexec_fn`` for children that must not outlive their parent (retrain jobs, the demo's
    worker, a broker started for tests): SIGTERM when the parent dies, even by SIGKILL (the child
    exits at once if the parent is already gone), and, with ``new_session``, a new session and
    process group (a terminal's Ctrl-C then reaches only the parent, which stops the child itself).
    ``parent_pid`` is the spawner's pid. The kernel sends the signal when the *thread* that started
    the child ends: spawn from one that lives as long as the child should (the main thread).
    """

    def preexec() -> None:
        if new_session:
            os.setsid()
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


STACK_DUMP_SIGNAL = signal.SIGQUIT
"""``kill -QUIT <pid>`` prints a running worker's stacks to stderr and lets it run on (the JVM's
thread-dump convention): every thread's, even when the event loop is blocked, then every task's."""


def install_stack_dump(loop: asyncio.AbstractEventLoop, file: TextIO | None = None) -> None:
    """On :data:`STACK_DUMP_SIGNAL`, write every thread's stack and then, once ``loop`` runs the
    callback, every task's (name and frames, no locals: a stage's locals hold its whole state) to
    ``file`` (stderr). Call from inside ``loop``, on the main thread.

    The threads' stacks come from a Python signal handler, which runs on the main thread between
    two bytecodes, a blocking call (a sleep, a socket read) interrupted for it, so a loop thread
    stuck in either still dumps; it holds the GIL, so no thread's frames change while they are
    read. faulthandler's own all-threads dump, from the C signal handler, read the other threads'
    frames while they ran: a worker given SIGQUIT while a thread imported a module stopped in the
    middle of the dump and never came back (CI, once). faulthandler still writes the signalled
    thread's own stack at once (it is interrupted: safe), for a thread stuck in C holding the GIL."""
    out = file if file is not None else sys.stderr

    def dump_tasks() -> None:
        tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
        print(f"--- {len(tasks)} asyncio tasks ---", file=out)
        for task in tasks:
            print(f"task {task.get_name()}:", file=out)
            for frame in _awaiting(task.get_coro()):
                code = frame.f_code
                print(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}', file=out)
        out.flush()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _dump_threads(out, frame)
        loop.call_soon_threadsafe(dump_tasks)

    signal.signal(STACK_DUMP_SIGNAL, on_signal)
    # registered after the Python handler, which it then calls (chain)
    faulthandler.register(STACK_DUMP_SIGNAL, file=out, all_threads=False, chain=True)


def _dump_threads(out: TextIO, interrupted: FrameType | None) -> None:
    """Every thread's stack, most recent call first, as faulthandler writes them (this thread's
    first, as "Current thread", from ``interrupted``: the frame the signal handler interrupted, not
    the handler's own); frames only, no source lines or locals."""
    current = threading.get_ident()
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    frames = sorted(sys._current_frames().items(), key=lambda item: item[0] != current)
    if interrupted is not None:
        frames[0] = (current, interrupted)
    for ident, top in frames:
        head = "Current thread" if ident == current else "Thread"
        print(f"{head} 0x{ident:016x} [{names.get(ident, '?')}] (most recent call first):", file=out)
        for summary in traceback.StackSummary.extract(traceback.walk_stack(top), lookup_lines=False):
            print(f'  File "{summary.filename}", line {summary.lineno} in {summary.name}', file=out)
        print(file=out)
    out.flush()


def _awaiting(coro: object) -> list[FrameType]:
    """A suspended coroutine's frames, outermost first, down what each awaits (Task.get_stack
    gives a suspended coroutine's outermost frame only: not where it waits)."""
    frames = []
    while coro is not None:
        frame = next(filter(None, (getattr(coro, a, None) for a in _FRAME_ATTRIBUTES)), None)
        if frame is not None:
            frames.append(frame)
        coro = next(filter(None, (getattr(coro, a, None) for a in _AWAITED_ATTRIBUTES)), None)
    return frames


_FRAME_ATTRIBUTES = ("cr_frame", "gi_frame", "ag_frame")  # coroutine, generator, async generator
_AWAITED_ATTRIBUTES = ("cr_await", "gi_yieldfrom", "ag_await")
