"""`worker --processes N`: run N worker processes and look after them.

Each child is a full `jobqueue worker` (one asyncio loop, its own connections). The parent
forwards SIGTERM/SIGINT, restarts a child that dies unexpectedly (with backoff, so a crash loop
does not spin), and exits 0 only when every child exited 0 after a stop.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import structlog

log = structlog.get_logger("jobqueue.supervisor")


def supervise(child_args: list[str], processes: int) -> int:
    command = [sys.executable, "-m", "jobqueue", *child_args]
    children: list[subprocess.Popen] = []
    stopping = False
    codes: list[int] = []

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    restarts = [0.0] * processes
    children.extend(subprocess.Popen(command) for _ in range(processes))
    log.info("supervisor_started", processes=processes, pids=[c.pid for c in children])
    while True:
        alive = False
        for i, child in enumerate(children):
            code = child.poll()
            if code is None:
                alive = True
                continue
            if stopping:
                continue
            wait = min(30.0, max(1.0, restarts[i] * 2))
            log.warning("worker_process_died", pid=child.pid, code=code, restart_in=wait)
            time.sleep(wait)
            restarts[i] = wait
            if not stopping:
                children[i] = subprocess.Popen(command)
                alive = True
        if not alive and stopping:
            break
        time.sleep(0.2)
    codes = [c.wait() for c in children]
    log.info("supervisor_stopped", codes=codes)
    return 0 if all(code == 0 for code in codes) else 1
