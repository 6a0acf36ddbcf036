"""The Python API for applications: enqueue, read, cancel and retry jobs.

    from jobqueue import Client
    with Client() as jq:
        job_id = jq.enqueue("send_email", {"to": "a@example.com"}, queue="emails")
        jq.get(job_id).state

Thread-safe: one pool of connections, borrowed per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from jobqueue import db, routing
from jobqueue.db import migrate, store
from jobqueue.db.queries import q
from jobqueue.db.store import COPY_FROM, JobFilter
from jobqueue.jobs import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_QUEUE,
    MAX_NAME_LENGTH,
    InvalidJob,
    Job,
    JobSpec,
    check_text,
    to_json,
)

# Rows per INSERT statement in enqueue_many: large enough to amortise the round trip, small
# enough to keep the parameter arrays modest. All chunks commit together. (COPY_FROM, where
# COPY takes over, is the store's.)
CHUNK = 5000


class Client:
    def __init__(self, url: str | None = None, *, min_size: int = 1, max_size: int = 4):
        self.url = url or db.database_url()
        self.pool = ConnectionPool(
            self.url,
            min_size=min_size,
            max_size=max_size,
            kwargs=db.connect_kwargs() | {"row_factory": dict_row},
            open=True,
            name="jobqueue-client",
        )

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> list[migrate.Migration]:
        with self.pool.connection() as conn:
            return migrate.migrate(conn)

    # -- enqueue ----------------------------------------------------------------------------

    def enqueue(self, kind: str, payload=None, **options) -> int:
        """Enqueue one job and return its id (the existing job's, for a known idempotency key).

        Options: queue, priority, run_at, delay, max_attempts, timeout, idempotency_key, owner,
        batch_id, metadata.
        """
        spec = JobSpec(kind=kind, payload={} if payload is None else payload, **options)
        return self.enqueue_many([spec])[0]

    def enqueue_many(self, specs: Iterable[JobSpec | dict]) -> list[int]:
        """Enqueue many jobs in as few round trips as possible, atomically; ids in input order.

        A spec that fails validation raises InvalidJob naming its index and field, and nothing
        is enqueued.
        """
        now, routes = datetime.now(UTC), routing.load()
        return self._enqueue_rows([_validated(spec, index, now, routes)
                                   for index, spec in enumerate(specs)])

    def enqueue_payloads(self, kind: str, payloads: Iterable, **options) -> list[int]:
        """Enqueue one `kind` job per payload, all with the same options, atomically; ids in
        payload order. The way to fan one task out: the options are checked once, not per
        job, and no JobSpec is built per job.

        Options: as for enqueue, except idempotency_key (a key names one job, not many).
        A payload that is not JSON raises InvalidJob naming its index, and nothing is enqueued.
        """
        if "idempotency_key" in options:
            raise InvalidJob("idempotency_key: one key cannot name many jobs; use "
                             "enqueue_many with a key per JobSpec")
        if "payload" in options:
            raise InvalidJob("payload: pass the payloads as the second argument, one per job")
        now = datetime.now(UTC)
        queue, kind, _, *rest = _row(JobSpec(kind=kind, **options), now, routing.load())
        rows = []
        for index, payload in enumerate(payloads):
            try:
                rows.append((queue, kind, to_json(payload), *rest))
            except InvalidJob as exc:
                raise InvalidJob(f"job {index}: {exc}") from None
        return self._enqueue_rows(rows)

    def _enqueue_rows(self, rows: list[tuple]) -> list[int]:
        if not rows:
            return []
        with self.pool.connection() as conn:
            if len(rows) < COPY_FROM:  # one statement is atomic: no BEGIN/COMMIT round trips
                return [job_id for job_id, _ in _insert(conn, rows)]
            with conn.transaction():
                return [job_id for job_id, _ in _insert_chunked(conn, rows)]

    def enqueue_spec(self, spec: JobSpec) -> tuple[int, bool]:
        """Enqueue one job; returns (id, created). `created` is False when an idempotency key
        matched an existing job, whose id is returned."""
        with self.pool.connection() as conn:
            return insert_specs(conn, [spec])[0]

    def submit_batch(self, specs: Iterable[JobSpec], *, queue: str, name: str | None = None,
                     owner: str | None = None, source: str | None = None,
                     metadata: dict | None = None,
                     on_progress: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Create a batch and enqueue every spec into it, streaming, in one transaction: a
        failure part-way leaves nothing behind. Returns (batch id, jobs enqueued)."""
        now, routes = datetime.now(UTC), routing.load()
        check_text(name, "name", max_length=MAX_NAME_LENGTH)
        for field, value in (("source", source), ("owner", owner)):
            check_text(value, field)
        to_json(metadata or {}, "metadata")  # checked like a job's: InvalidJob naming the place
        total = 0
        with self.pool.connection() as conn, conn.transaction():
            batch_id = conn.execute(q("batch_create"), {
                "name": name, "queue": queue, "owner": owner, "source": source,
                "metadata": Jsonb(metadata or {})}).fetchone()["id"]
            chunk: list[tuple] = []
            for index, spec in enumerate(specs):
                spec.batch_id, spec.queue, spec.owner = batch_id, queue, owner
                chunk.append(_validated(spec, index, now, routes))
                if len(chunk) == CHUNK:
                    total += len(_insert(conn, chunk))
                    chunk = []
                    if on_progress:
                        on_progress(total)
            if chunk:
                total += len(_insert(conn, chunk))
            conn.execute(q("batch_set_total"), {"id": batch_id, "total": total})
        if on_progress:
            on_progress(total)
        return batch_id, total

    def batch(self, batch_id: int) -> dict | None:
        """A batch with its jobs counted by state."""
        with self.pool.connection() as conn:
            return store.batch(conn, batch_id)

    def batch_jobs(self, batch_id: int, after: int = 0, limit: int = 1000) -> list[dict]:
        """One page of a batch's jobs in id order; pass the last id seen as `after`."""
        with self.pool.connection() as conn:
            return store.batch_jobs(conn, batch_id, after, limit)

    # -- read -------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        with self.pool.connection() as conn:
            row = store.get_job(conn, job_id)
        return Job.from_row(row) if row else None

    def status(self) -> list[dict]:
        with self.pool.connection() as conn:
            return store.queue_status(conn)

    def cache_stats(self) -> dict:
        """Live entries and hits of the LLM response cache."""
        with self.pool.connection() as conn:
            return conn.execute(q("cache_stats")).fetchone()

    def rate_limits(self, platform: str | None = None) -> list[dict]:
        """Each platform key's limits, budget available now, blocks and totals."""
        with self.pool.connection() as conn:
            return conn.execute(q("rate_state"), {"platform": platform}).fetchall()

    def workers(self) -> list[dict]:
        with self.pool.connection() as conn:
            return conn.execute(q("list_workers")).fetchall()

    # -- change -----------------------------------------------------------------------------

    def cancel(self, job_id: int) -> str:
        """Cancel a job. Returns 'cancelled' (it was not running: now finished as cancelled),
        'requested' (running: its worker stops it and records it cancelled), 'finished'
        (too late) or 'not_found'."""
        with self.pool.connection() as conn:
            return store.cancel_job(conn, job_id)

    def retry(self, job_id: int) -> bool:
        """Run a dead or cancelled job again with a fresh attempt budget."""
        return bool(self._revive(ids=[job_id], states=["dead", "cancelled"]))

    def dead(self, queue: str | None = None, limit: int = 100) -> list[dict]:
        with self.pool.connection() as conn:
            return store.dead_jobs(conn, queue, limit)

    def retry_dead(self, queue: str | None = None, ids: list[int] | None = None) -> list[int]:
        return self._revive(ids=ids, states=["dead"], queue=queue)

    def purge_dead(self, queue: str | None = None, ids: list[int] | None = None) -> int:
        with self.pool.connection() as conn:
            return store.delete(conn, JobFilter(queue=queue, ids=ids, state="dead"))

    def _revive(self, *, ids, states, queue=None) -> list[int]:
        with self.pool.connection() as conn:
            return store.revive(conn, JobFilter(ids=ids, queue=queue), states)


def _validated(spec: JobSpec | dict, index: int, now: datetime,
               routes: routing.Routes) -> tuple:
    """The insert row for a spec; InvalidJob names its index and field."""
    if isinstance(spec, dict):
        try:
            spec = JobSpec(**spec)
        except TypeError as exc:
            raise InvalidJob(f"job {index}: {exc}") from None
    try:
        return _row(spec, now, routes)
    except InvalidJob as exc:
        raise InvalidJob(f"job {index}: {exc}") from None


def _row(spec: JobSpec, now: datetime, routes: routing.Routes) -> tuple:
    """The insert row for a spec, checked. What the caller left out comes from the task's
    [tasks.NAME] table in jobqueue.toml, else the built-in defaults: never from the task
    registry, which only the processes that imported the task module have."""
    return routing.apply(spec, routes).validated_row(DEFAULT_QUEUE, DEFAULT_MAX_ATTEMPTS, now)


def insert_specs(conn, specs: list[JobSpec]) -> list[tuple[int, bool]]:
    """Enqueue specs inside the caller's transaction (so a job can be created atomically with
    rows of the caller's own); returns (id, created) per spec, in order."""
    now, routes = datetime.now(UTC), routing.load()
    return _insert_chunked(conn, [_validated(spec, i, now, routes)
                                  for i, spec in enumerate(specs)])


def _insert_chunked(conn, rows: list[tuple]) -> list[tuple[int, bool]]:
    out: list[tuple[int, bool]] = []
    for start in range(0, len(rows), CHUNK):
        out.extend(_insert(conn, rows[start : start + CHUNK]))
    return out


def _insert(conn, rows: list[tuple]) -> list[tuple[int, bool]]:
    """Insert validated rows; returns (id, created) in order."""
    return store.insert_rows(conn, rows)
