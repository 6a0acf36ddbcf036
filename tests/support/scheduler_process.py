"""A scheduler process on a simulated clock, for the rolling-restart test: the worker's own
Scheduler service (start-up sync, then ticks), reading "now" from a file the test moves on,
and reporting the simulated time of its latest tick in a file of its own.

    python -m tests.support.scheduler_process DATABASE_URL CLOCK_FILE REPORT_DIR
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

from jobqueue.tasks import Registry
from jobqueue.worker.scheduler import Scheduler


def main() -> None:
    url, clock_file, report_dir = sys.argv[1:4]
    clock = Path(clock_file)

    def now() -> datetime:
        return datetime.fromisoformat(clock.read_text())

    scheduler = Scheduler(url, [Registry()], clock=now)
    scheduler.sync()
    report = Path(report_dir) / f"ticked-{os.getpid()}"
    while True:
        moment = now()
        scheduler.tick()
        tmp = report.with_suffix(".tmp")
        tmp.write_text(moment.isoformat())
        tmp.replace(report)


if __name__ == "__main__":
    main()
