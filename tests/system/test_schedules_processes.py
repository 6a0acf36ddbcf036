"""Exactly one enqueue per fire: four scheduler processes on a simulated clock, killed
(SIGKILL, at whatever point of a tick they are) and restarted at random over ten simulated
minutes that span Berlin's spring-forward, produce exactly the expected fires."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from jobqueue.schedules import cron
from tests.support.helpers import ROOT, wait_until

START = datetime(2026, 3, 29, 0, 55, 30, tzinfo=UTC)  # Berlin moves 02:00 CET -> 03:00 CEST
END = START + timedelta(minutes=10)
STEP = timedelta(seconds=5)
SCHEDULES = {  # name: (cron, zone)
    "every-minute": ("* * * * *", "UTC"),
    "every-3": ("*/3 * * * *", "UTC"),
    "berlin-even": ("*/2 1,3 * * *", "Europe/Berlin"),  # 01:56, 01:58 CET; 03:00.. CEST
    "berlin-0230": ("30 2 * * *", "Europe/Berlin"),  # 02:30 does not exist: 03:00 CEST
}
TOML = "".join(f'[schedules.{name}]\ncron = "{expr}"\ntimezone = "{zone}"\nkind = "noop"\n'
               'misfire = "all"\n' for name, (expr, zone) in SCHEDULES.items())


def expected() -> set[tuple[str, datetime]]:
    fires = set()
    for name, (expr, zone) in SCHEDULES.items():
        for fire in cron.parse(expr, zone).fires_after(START):
            if fire > END:
                break
            fires.add((name, fire))
    return fires


def test_four_processes_restarted_at_random_fire_exactly_once(db_url, tmp_path):
    rng = random.Random(12)
    (tmp_path / "jobqueue.toml").write_text(TOML)
    clock = tmp_path / "clock"

    def set_clock(moment: datetime) -> None:
        (tmp_path / "clock.tmp").write_text(moment.isoformat())
        (tmp_path / "clock.tmp").replace(clock)

    def latest_tick() -> datetime | None:
        times = [datetime.fromisoformat(p.read_text()) for p in tmp_path.glob("ticked-*")
                 if p.suffix == ""]
        return max(times, default=None)

    env = os.environ | {"JOBQUEUE_CONFIG": str(tmp_path / "jobqueue.toml"),
                        "LOG_LEVEL": "WARNING"}

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.support.scheduler_process", db_url, str(clock),
             str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

    set_clock(START)
    procs = [start() for _ in range(4)]
    kills = 0
    try:
        now = START
        while now < END:
            now += STEP
            set_clock(now)
            # Some process has ticked at this time (all four may be down: then the first to
            # come back does it, late, and misfire "all" runs what it missed).
            wait_until(lambda: (latest_tick() or START) >= now, timeout=60,  # noqa: B023
                       message=f"a tick at {now}")
            for i, proc in enumerate(procs):
                if rng.random() < 0.12:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    procs[i] = start()
        final = latest_tick()
        assert final is not None and final >= END
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert kills >= 10
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        runs = conn.execute("SELECT schedule, fire_at, decision, job_id FROM "
                            "jobqueue.schedule_runs").fetchall()
        jobs = conn.execute("SELECT metadata FROM jobqueue.jobs").fetchall()
        schedules = conn.execute("SELECT count(*) AS n FROM jobqueue.schedules").fetchone()
    assert schedules["n"] == len(SCHEDULES)  # synced by every start, never duplicated
    assert {(r["schedule"], r["fire_at"]) for r in runs} == expected()
    assert all(r["job_id"] is not None for r in runs)
    fires = [(j["metadata"]["schedule"], datetime.fromisoformat(j["metadata"]["fire_at"]))
             for j in jobs]
    assert len(fires) == len(set(fires)) == len(expected())
    assert set(fires) == expected()
    # By hand: 00:56Z..01:05Z each minute; 00:57, 01:00, 01:03; 01:56 and 01:58 CET then
    # 03:00, 03:02, 03:04 CEST; the 02:30 that does not exist, at 03:00 CEST (01:00Z).
    assert len(expected()) == 10 + 3 + 5 + 1
    assert ("berlin-0230", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)) in expected()
