"""Helpers the tests share: a worker in a background thread, waiting for conditions in another
process's database, running the `jobqueue` command, per-test databases, simulator platforms,
minimal PDFs (and decompression bombs), campaign answers recorded as the extract task does."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import os
import subprocess
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from jobqueue.client import Client
from jobqueue.llm.platforms import Platform
from jobqueue.sim.server import FakeOpenAI
from jobqueue.tasks import Registry
from jobqueue.worker import Worker, WorkerConfig

ROOT = Path(__file__).resolve().parent.parent.parent


class ThreadWorker:
    """A Worker running its asyncio loop in a background thread of the test process."""

    def __init__(self, url: str, config: WorkerConfig, tasks: Registry, **hooks):
        self.worker = Worker(url, config, tasks=tasks, **hooks)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.worker.run())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> ThreadWorker:
        self.thread.start()
        return self

    def stop(self, hard: bool = False, timeout: float = 30.0) -> None:
        self.worker.stop(hard=hard)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error:
            raise self.error


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.02, message: str = ""):
    """Poll a condition that has no event to await (state in another process's database)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def wait_finished(client: Client, job_ids, timeout: float = 20.0):
    ids = list(job_ids)

    def done():
        jobs = [client.get(i) for i in ids]
        return jobs if all(j is not None and j.finished for j in jobs) else None

    return wait_until(done, timeout, message=f"jobs {ids[:5]}... to finish")


def jobqueue_cmd(*args: str, url: str, env: dict | None = None, **kwargs):
    """Start `python -m jobqueue ARGS` as a child process against `url`."""
    full_env = os.environ | {"DATABASE_URL": url, "LOG_FORMAT": "json"} | (env or {})
    return subprocess.Popen([sys.executable, "-m", "jobqueue", *args], cwd=ROOT, env=full_env,
                            **kwargs)


def run_cli(*args: str, url: str, env: dict | None = None, input: str | None = None):
    full_env = os.environ | {"DATABASE_URL": url, "LOG_FORMAT": "json"} | (env or {})
    return subprocess.run([sys.executable, "-m", "jobqueue", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, input=input, timeout=60)


KEYS = {"SIM_KEY_A": "sk-sim-a", "SIM_KEY_B": "sk-sim-b"}


def platform(sim: FakeOpenAI, **overrides) -> Platform:
    settings = {"name": "sim", "base_url": sim.base_url, "model": "sim-main",
                "api_key_env": ("SIM_KEY_A",), "rpm": 6000, "tpm": 1_000_000,
                "max_tokens": 16, "timeout": 5.0, "burst_seconds": 1.0}
    return Platform(**(settings | overrides))


def new_database(server_url: str, template: str | None) -> tuple[str, str]:
    name = f"jq_t_{uuid.uuid4().hex[:12]}"
    with admin_connection(server_url) as conn:
        clause = f' TEMPLATE "{template}"' if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
    return name, make_conninfo(server_url, dbname=name)


def drop_database(server_url: str, name: str) -> None:
    with admin_connection(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def admin_connection(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def minimal_pdf(text: str, padding: int = 0) -> bytes:
    """A minimal one-page PDF with `text`, with a correct cross-reference table. With
    `padding`, the content stream ends in that many spaces, deflated: a decompression bomb
    (100 MB of spaces deflate to about 100 kB)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    flate = b""
    if padding:
        z = zlib.compressobj(9)
        parts = [z.compress(stream)]
        block = b" " * (1 << 20)
        for _ in range(padding // len(block)):
            parts.append(z.compress(block))
        stream, flate = b"".join(parts) + z.flush(), b" /Filter /FlateDecode"
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d%s >>\nstream\n" % (len(stream), flate) + stream
               + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, xref))
    return out.getvalue()


def record_answer(url: str, campaign: dict, job_id: int, platform: str, day, text: str) -> bool:
    """The analysis of answer `text` stored as the campaign.extract task stores it
    (extract.record, on an async connection of its own); False when it was analysed already."""
    from jobqueue.campaigns import extract

    async def store() -> bool:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await extract.record(
                conn, job_id, {"campaign_id": campaign["id"], "platform": platform, "day": day},
                extract.analyse(text, campaign["brands"]))

    # In a thread of its own: the caller may run an event loop (Playwright's sync API does).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, store()).result()
