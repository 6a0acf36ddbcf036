"""Tasks for worker processes started by the tests (`--import tests.support.worker_tasks`).

`record` writes one row per execution into test_effects, so a test can count how often each
job really ran, and in which process: the side effect the exactly-once checks look at.
"""

from __future__ import annotations

import asyncio
import os

import psycopg

from jobqueue.tasks import task

_conn: psycopg.AsyncConnection | None = None
_lock = asyncio.Lock()

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS test_effects (
    job_id  bigint  NOT NULL,
    attempt integer NOT NULL,
    pid     integer NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


async def _connection() -> psycopg.AsyncConnection:
    global _conn
    async with _lock:
        if _conn is None or _conn.closed:
            _conn = await psycopg.AsyncConnection.connect(os.environ["DATABASE_URL"],
                                                          autocommit=True)
        return _conn


@task("record")
async def record(payload, ctx):
    """Record this execution, then take payload["seconds"] (default 0) to finish."""
    while True:
        try:
            conn = await _connection()
            await conn.execute(
                "INSERT INTO test_effects (job_id, attempt, pid) VALUES (%s, %s, %s)",
                (ctx.job_id, ctx.attempt, os.getpid()))
            break
        except psycopg.OperationalError:
            # The database is restarting (a test does that): a real handler would retry too.
            await asyncio.sleep(0.1)
    seconds = payload.get("seconds", 0)
    if seconds:
        await asyncio.sleep(seconds)
    return {"pid": os.getpid()}


@task("whoami")
async def whoami(payload):
    """Which process ran the job."""
    return {"pid": os.getpid()}


@task("nap")
async def nap(payload):
    """Take payload["seconds"] and nothing else (no writes: the caps and fairness tests)."""
    await asyncio.sleep(float(payload.get("seconds", 0)))


@task("budget_probe")
async def budget_probe(payload, ctx):
    """Uses the database (ctx.connection()) and a platform (ctx.llm) from a user's task: both
    borrow what the worker process already holds (the connection budget test)."""
    async with ctx.connection() as conn:
        cur = await conn.execute("SELECT pg_backend_pid()")
        (backend,) = await cur.fetchone()
    answer = await ctx.llm(payload["platform"]).chat.completions.create(
        messages=[{"role": "user", "content": f"probe {ctx.job_id}"}])
    return {"backend": backend, "answer": answer.choices[0].message.content}
