"""`worker --processes N`: run N worker processes and look after them.

Each child is a full `jobqueue worker` (one asyncio loop, its own connections), started with
the supervisor's global options (--log-level, --log-format) and worker options.
- Signals: each child runs in a session of its own, so a Ctrl-C on the terminal reaches the
  supervisor alone, which forwards it once to every child (one Ctrl-C is one warm stop; a
  second is a hard stop, as for a single worker). A child starts with SIGTERM and SIGINT
  blocked until its first lines have installed their handler (jobqueue/signals.py), so a stop
  forwarded at once, even before the child runs any Python, is not its death.
- Orphans: on Linux a child gets SIGTERM (a warm stop) when the supervisor dies, even by
  SIGKILL (PR_SET_PDEATHSIG).
- Deaths: a child that dies unexpectedly is restarted, with backoff. One that fails within
  `CRASH_SECONDS` of starting `MAX_CRASHES` times in a row stops everything: the supervisor
  logs the child's exit code and the last lines it wrote to stderr, and exits 1.
- Output: a child's stderr passes through the supervisor line by line (keeping the tail).
- A child that exits 0 by itself left after a warm stop: `--until-idle` (`until_idle=True`,
  it drained), or an operator's stop (the dashboard's Stop, or a SIGTERM to that child
  alone). It is done, not restarted (one that fails is still restarted), and the supervisor
  exits 0 once every child has exited 0.
- Exit: 0 only when every child exited 0 after a stop (or, until idle, by itself).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

import structlog

from jobqueue import signals

log = structlog.get_logger("jobqueue.supervisor")

CRASH_SECONDS = 10.0  # a child that fails sooner than this after starting "crashed at start"
MAX_CRASHES = 5  # crashes at start in a row before the supervisor gives up
BACKOFF_SECONDS = (0.5, 30.0)  # first restart delay, doubling up to the second
TAIL_LINES = 20  # lines of a child's stderr kept for the report

_PR_SET_PDEATHSIG = 1


def _prepare_child(parent: int) -> None:
    """preexec_fn (in the child, before exec): stop signals wait for the child's handler;
    SIGTERM when the supervisor dies."""
    signals.block_in_child()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # it died before prctl took hold
            os.kill(os.getpid(), signal.SIGTERM)


class Child:
    """One worker process: its Popen, when it started, its stderr tail."""

    def __init__(self, command: list[str]):
        parent = os.getpid()
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True,
                                     preexec_fn=lambda: _prepare_child(parent))
        self.started = time.monotonic()
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._pump = threading.Thread(target=self._copy_stderr, daemon=True,
                                      name=f"stderr-{self.proc.pid}")
        self._pump.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _copy_stderr(self) -> None:
        out = sys.stderr.buffer
        for line in iter(self.proc.stderr.readline, b""):
            self.tail.append(line.decode(errors="replace").rstrip())
            with contextlib.suppress(OSError, ValueError):
                out.write(line)
                out.flush()
        self.proc.stderr.close()

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    def finish_output(self) -> list[str]:
        """Wait (briefly) for the rest of its stderr; returns the tail."""
        self._pump.join(2.0)
        return list(self.tail)


def supervise(child_args: list[str], processes: int, *, until_idle: bool = False) -> int:
    command = [sys.executable, "-m", "jobqueue", *child_args]
    children: list[Child] = []
    stopping = False
    received: list[int] = []  # forwarded by the loop below, not in the handler (reentrancy)

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        received.append(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signals.replay()  # a stop that came while this process started
    if stopping:
        log.info("supervisor_stopped", codes=[])
        return 0
    children.extend(Child(command) for _ in range(processes))
    log.info("supervisor_started", processes=processes, pids=[c.pid for c in children])
    crashes = [0] * processes
    restart_at: list[float | None] = [None] * processes
    failed: tuple[Child, int] | None = None
    while True:
        alive = False
        while received:
            signum = received.pop(0)
            for child in children:
                child.signal(signum)
        now = time.monotonic()
        for i, child in enumerate(children):
            code = child.proc.poll()
            if code is None:
                alive = True
                continue
            if stopping:
                continue
            if code == 0 and restart_at[i] is None:
                # It left by itself after a warm stop: until idle, it found nothing more to
                # do; else an operator stopped it (the dashboard's Stop, or a SIGTERM to the
                # child alone). Done, not restarted.
                continue
            if restart_at[i] is None and code == 2:
                # Bad usage or configuration (e.g. a task that disagrees with the routing
                # table): the same command would fail the same way, so do not restart it.
                failed = (child, code)
                break
            if restart_at[i] is None:  # it has just died
                quick = code != 0 and now - child.started < CRASH_SECONDS
                crashes[i] = crashes[i] + 1 if quick else 0
                if crashes[i] >= MAX_CRASHES:
                    failed = (child, code)
                    break
                first, cap = BACKOFF_SECONDS
                wait = min(cap, first * 2 ** max(0, crashes[i] - 1))
                log.warning("worker_process_died", pid=child.pid, code=code, restart_in=wait)
                restart_at[i] = now + wait
            if now >= restart_at[i]:
                restart_at[i] = None
                children[i] = Child(command)
            alive = True
        if failed is not None:
            break
        if not alive:  # every child stopped (and none is waiting to restart)
            break
        time.sleep(0.05)
    if failed is not None:
        received.clear()
        child, code = failed
        log.error("worker_process_keeps_failing" if code != 2 else "worker_process_refused",
                  pid=child.pid, code=code, tries=MAX_CRASHES if code != 2 else 1,
                  stderr_tail=child.finish_output())
        stopping = True
        for other in children:
            other.signal(signal.SIGTERM)
        for other in children:
            other.proc.wait()
            other.finish_output()
        return 2 if code == 2 else 1
    codes = [c.proc.wait() for c in children]
    for child in children:
        child.finish_output()
    log.info("supervisor_stopped", codes=codes)
    return 0 if all(code == 0 for code in codes) else 1
