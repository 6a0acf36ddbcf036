"""The settings every session jobqueue opens carries: JIT off (a queue's statements are short,
and a big backlog made maintenance compile one for ~0.7 s of CPU every pass), the URL's own
startup options kept and able to turn it back on, and nothing behind PgBouncer."""

from __future__ import annotations

import asyncio

from psycopg.conninfo import make_conninfo

from jobqueue import Client, db


def _jit(conn) -> str:
    row = conn.execute("SELECT current_setting('jit') AS jit").fetchone()
    return row["jit"] if isinstance(row, dict) else row[0]


def test_every_kind_of_connection_has_jit_off(db_url):
    with Client(db_url) as jq, jq.pool.connection() as conn:
        assert _jit(conn) == "off"
    with db.connect(db_url) as conn:
        assert _jit(conn) == "off"

    async def worker_link() -> str:  # what a worker's links and listener open
        async with await db.connect_async(db_url) as conn:
            cur = await conn.execute("SELECT current_setting('jit')")
            return (await cur.fetchone())[0]

    assert asyncio.run(worker_link()) == "off"


def test_the_urls_own_options_come_after_and_win(db_url):
    url = make_conninfo(db_url, options="-c jit=on -c statement_timeout=4321")
    with db.connect(url) as conn:
        row = conn.execute("SELECT current_setting('jit') AS jit, "
                           "current_setting('statement_timeout') AS timeout").fetchone()
    assert row == {"jit": "on", "timeout": "4321ms"}


def test_read_only_cannot_be_undone_by_the_url(db_url):
    url = make_conninfo(db_url, options="-c default_transaction_read_only=off")
    kwargs = db.connect_kwargs(url, read_only=True)
    assert kwargs["options"].endswith("-c default_transaction_read_only=on")


def test_no_startup_options_behind_pgbouncer(monkeypatch, db_url):
    monkeypatch.setenv("JOBQUEUE_PGBOUNCER", "1")
    assert "options" not in db.connect_kwargs(db_url)
    assert "options" not in db.connect_kwargs(db_url, read_only=True)
    monkeypatch.delenv("JOBQUEUE_PGBOUNCER")
    assert db.connect_kwargs(db_url)["options"] == "-c jit=off"
