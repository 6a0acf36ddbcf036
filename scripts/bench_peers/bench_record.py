"""What every benchmarked worker records, and the latency producer loop: stdlib only.

Imported by the bench tasks of all three systems (jobqueue from its venv, procrastinate and
pgqueuer from the peers' venv), so each side measures exactly the same way:
- drain: the first job a worker process runs writes `first-<pid>` (wall time) into
  $BENCH_OUT_DIR; every later job pays one global check;
- latency: the handler's first line takes time.time(); the job's payload carries time.time()
  taken just before the enqueue call; the difference goes, one line per job, into
  `lat-<pid>.txt` ("<seq> <ms>"), seq < 0 for warm-up jobs;
- io: the job awaits asyncio.sleep(seconds) (io_job), nothing else (after the drain's
  `first-<pid>`); a job of negative seconds is a warm-up, marking `warm-<pid>` only;
- real: "a little real work": the handler takes `i`, `t` and `s` from its payload and appends
  one line "<i> <t> <s>" to `real-<pid>.txt` with one os.write (real_job; the file is opened
  once per process, O_APPEND).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable

_OUT = os.environ.get("BENCH_OUT_DIR", "")
_first_seen = False
_latency_file = None
_real_fd: int | None = None


def drain_job() -> None:
    global _first_seen
    if not _first_seen:
        _first_seen = True
        _mark("first")


def latency_job(now: float, enqueued_at: float, seq: int) -> None:
    """Record one pickup; `now` is time.time() from the handler's first line."""
    global _latency_file
    if not _OUT:
        return
    if _latency_file is None:
        _latency_file = open(os.path.join(_OUT, f"lat-{os.getpid()}.txt"), "a")  # noqa: SIM115
    _latency_file.write(f"{seq} {(now - enqueued_at) * 1000.0:.4f}\n")
    _latency_file.flush()


async def io_job(seconds: float) -> None:
    """The I/O-bound job: only waits (a stand-in for an HTTP call). A negative `seconds` is a
    warm-up job (the io phase's warm run): it marks `warm-<pid>` instead of `first-<pid>`
    and does not wait."""
    global _warm_seen
    if seconds < 0:
        if not _warm_seen:
            _warm_seen = True
            _mark("warm")
        return
    drain_job()
    await asyncio.sleep(seconds)


_warm_seen = False


def _mark(what: str) -> None:
    """Write `<what>-<pid>` with the time now into $BENCH_OUT_DIR."""
    if _OUT:
        with open(os.path.join(_OUT, f"{what}-{os.getpid()}"), "w") as f:
            f.write(f"{time.time()!r}\n")


def real_job(i: int, t: float, s: str) -> None:
    """A little real work: one line appended to this process's file, one os.write."""
    global _real_fd
    if _real_fd is None:
        path = os.path.join(_OUT or "/tmp", f"real-{os.getpid()}.txt")
        _real_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_real_fd, f"{i} {t!r} {s}\n".encode())


def real_payload(i: int, t: float, size: int) -> dict:
    """The payload of real job i: `s` is `size` characters."""
    return {"i": i, "t": t, "s": ("abcdefghij" * (size // 10 + 1))[:size]}


def _warmup_pids(out_dir: str) -> set[str]:
    """Worker processes that have run at least one job (warm-up or not)."""
    pids = set()
    for name in os.listdir(out_dir):
        if name.startswith("lat-") and os.path.getsize(os.path.join(out_dir, name)) > 0:
            pids.add(name[4:-4])
    return pids


async def produce_latency_jobs(
    enqueue: Callable[[float, int], Awaitable[None]], count: int, rate: float,
    workers: int, min_warmup: int = 20, max_warmup_seconds: float = 30.0,
) -> dict:
    """Warm up until `workers` processes have each run a job (at least `min_warmup` jobs),
    then enqueue `count` single jobs at `rate` per second on a fixed schedule (not back to
    back), each stamped with time.time() taken just before its enqueue call."""
    interval = 1.0 / rate
    out_dir = _OUT
    warmups = 0
    started = time.monotonic()
    next_at = time.monotonic()
    while True:
        ready = len(_warmup_pids(out_dir)) >= workers if out_dir else True
        if warmups >= min_warmup and ready:
            break
        if time.monotonic() - started > max_warmup_seconds:
            print(f"warning: after {warmups} warm-up jobs only "
                  f"{len(_warmup_pids(out_dir))} of {workers} workers ran one",
                  file=sys.stderr)
            break
        warmups += 1
        await _at(next_at)
        await enqueue(time.time(), -warmups)
        next_at += interval
    await asyncio.sleep(0.2)  # let the last warm-up job finish before measuring
    next_at = time.monotonic()
    late = 0.0
    calls = []
    for seq in range(count):
        late = max(late, time.monotonic() - next_at)
        await _at(next_at)
        t = time.time()
        await enqueue(t, seq)
        calls.append((time.time() - t) * 1000.0)
        next_at += interval
    return {"warmup_jobs": warmups, "sent": count,
            "seconds": round(time.monotonic() - started, 3),
            "max_producer_lag_ms": round(late * 1000, 2),
            "enqueue_call_ms": calls}  # in seq order


async def _at(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
