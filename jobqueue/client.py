"""The Python API for applications: enqueue, read, cancel and retry jobs.

    from jobqueue import Client
    with Client() as jq:
        job_id = jq.enqueue("send_email", {"to": "a@example.com"}, queue="emails")
        jq.get(job_id).state

Thread-safe: one pool of connections, borrowed per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from jobqueue import db, quotas, routing, workflows
from jobqueue.audit import Audit
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
    def __init__(self, url: str | None = None, *, min_size: int = 1, max_size: int = 4,
                 read_only: bool = False):
        """`read_only`: every transaction refuses writes (for a replica, or to be sure a read
        path writes nothing); only the read methods then work."""
        self.url = url or db.database_url()
        self.read_only = read_only
        self.pool = ConnectionPool(
            self.url,
            min_size=min_size,
            max_size=max_size,
            kwargs=db.connect_kwargs(self.url, read_only=read_only) | {"row_factory": dict_row},
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
        batch_id, metadata; depends_on (job ids: the job stays `blocked` until they have all
        ended) and on_parent_failure ("cancel", the default, or "run").
        """
        spec = JobSpec(kind=kind, payload={} if payload is None else payload, **options)
        return self.enqueue_many([spec])[0]

    def enqueue_many(self, specs: Iterable[JobSpec | dict], *,
                     partial: bool = False) -> list[int]:
        """Enqueue many jobs in as few round trips as possible, atomically; ids in input order.

        A spec that fails validation raises InvalidJob naming its index and field, and nothing
        is enqueued. A spec may wait for jobs (`depends_on`): ids, or the `ref` of an earlier
        spec of the same call. Past an owner's quota (jobqueue/quotas.py) QuotaExceeded says
        when to retry, and nothing is enqueued; with `partial`, the jobs that fit are enqueued
        (the first ones, in order) and only their ids returned.
        """
        now, routes = datetime.now(UTC), routing.load()
        specs = [_spec(spec, index) for index, spec in enumerate(specs)]
        rows = [_validated(spec, index, now, routes) for index, spec in enumerate(specs)]
        if any(spec.waits() for spec in specs):
            with self.pool.connection() as conn, conn.transaction():
                inserter, _ = _insert_workflow(conn, rows, specs, partial=partial)
            return inserter.ids
        return self._enqueue_rows(rows, partial)

    def enqueue_payloads(self, kind: str, payloads: Iterable, *, partial: bool = False,
                         **options) -> list[int]:
        """Enqueue one `kind` job per payload, all with the same options, atomically; ids in
        payload order. The way to fan one task out: the options are checked once, not per
        job, and no JobSpec is built per job.

        Options: as for enqueue, except idempotency_key (a key names one job, not many).
        A payload that is not JSON raises InvalidJob naming its index, and nothing is enqueued.
        Quotas: as for enqueue_many.
        """
        if "idempotency_key" in options:
            raise InvalidJob("idempotency_key: one key cannot name many jobs; use "
                             "enqueue_many with a key per JobSpec")
        if "payload" in options:
            raise InvalidJob("payload: pass the payloads as the second argument, one per job")
        if "ref" in options:
            raise InvalidJob("ref: one ref cannot name many jobs; use enqueue_many")
        now = datetime.now(UTC)
        shared = JobSpec(kind=kind, **options)
        queue, kind, _, *rest = _row(shared, now, routing.load())
        if shared.depends_on:
            shared.dependencies()  # InvalidJob naming the field
        rows = []
        for index, payload in enumerate(payloads):
            try:
                rows.append((queue, kind, to_json(payload), *rest))
            except InvalidJob as exc:
                raise InvalidJob(f"job {index}: {exc}") from None
        if shared.depends_on:  # every job waits for the same jobs
            with self.pool.connection() as conn, conn.transaction():
                inserter, _ = _insert_workflow(conn, rows, [shared] * len(rows),
                                               partial=partial)
            return inserter.ids
        return self._enqueue_rows(rows, partial, owned=shared.owner is not None)

    def _enqueue_rows(self, rows: list[tuple], partial: bool = False,
                      owned: bool | None = None) -> list[int]:
        """Insert validated rows, charging their owners' quotas; ids in order. `owned`: whether
        any row has an owner, when the caller knows (None: look), since only owned rows can
        meet a quota."""
        if not rows:
            return []
        if owned is None:
            owned = quotas.owned(rows)
        with self.pool.connection() as conn:
            if len(rows) < COPY_FROM and not (owned and quotas.applies(conn, rows)):
                # No quota concerns these jobs (a quota set meanwhile applies from the next
                # enqueue); one statement is atomic: no BEGIN/COMMIT round trips.
                return [job_id for job_id, _ in _insert(conn, rows)]
            with conn.transaction():
                if not owned and store.copyable(rows):
                    # The bulk path (enqueue_payloads of thousands): no quota to charge and
                    # nothing but COPY to do, so straight to it, chunk by chunk, with no
                    # (id, created) pairs built and taken apart: through _insert_admitted
                    # this measured 5-15% slower at 20,000 jobs.
                    ids: list[int] = []
                    for start in range(0, len(rows), CHUNK):
                        ids += store.copy_rows(conn, rows[start : start + CHUNK])
                    return ids
                inserted, _ = _insert_admitted(conn, rows, partial)
                return [job_id for job_id, _ in inserted]

    def enqueue_spec(self, spec: JobSpec) -> tuple[int, bool]:
        """Enqueue one job; returns (id, created). `created` is False when an idempotency key
        matched an existing job, whose id is returned."""
        created = self.create(spec)
        return created.id, created.created

    def create(self, spec: JobSpec) -> Created:
        """Enqueue one job: its id, whether it is new (an idempotency key may name an existing
        job), and the standing of the tightest quota it was charged to (None: no quota)."""
        spec = _spec(spec, 0)
        row = _validated(spec, 0, datetime.now(UTC), routing.load())
        with self.pool.connection() as conn:
            if spec.waits():  # depends_on: blocked until its parents end (workflows.py)
                with conn.transaction():
                    inserter, admission = _insert_workflow(conn, [row], [spec])
                return Created(inserter.ids[0], inserter.created[0], admission.standing)
            if not quotas.applies(conn, [row]):  # one statement: no BEGIN/COMMIT
                (job_id, created), = _insert(conn, [row])
                return Created(job_id, created, None)
            with conn.transaction():
                inserted, admission = _insert_admitted(conn, [row])
        (job_id, created), = inserted
        return Created(job_id, created, admission.standing)

    def submit_batch(self, specs: Iterable[JobSpec], *, queue: str, name: str | None = None,
                     owner: str | None = None, source: str | None = None,
                     metadata: dict | None = None,
                     on_progress: Callable[[int], None] | None = None,
                     on_complete: JobSpec | None = None,
                     partial: bool = False,
                     before_commit: Callable[[Any, int], Any] | None = None) -> Submitted:
        """Create a batch and enqueue every spec into it, in one transaction: a failure
        part-way leaves nothing behind. Returns (batch id, rows submitted) (a Submitted, which
        also says how many a quota refused). See insert_batch; `before_commit(conn,
        batch_id)` runs in the transaction after the last insert (the Batch API holds the
        jobs there, before any worker can see them)."""
        with self.pool.connection() as conn, conn.transaction():
            submitted = insert_batch(conn, specs, queue=queue, name=name, owner=owner,
                                     source=source, metadata=metadata,
                                     on_progress=on_progress, on_complete=on_complete,
                                     partial=partial)
            if before_commit is not None:
                before_commit(conn, submitted.batch_id)
            return submitted

    def batch(self, batch_id: int) -> dict | None:
        """A batch with its jobs counted by state, and what its LLM calls cost (`costs`)."""
        from jobqueue.llm import costs

        with self.pool.connection() as conn:
            found = store.batch(conn, batch_id)
            if found is not None:
                found["costs"] = costs.batch_costs(conn, batch_id)
            return found

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
        """Registered worker processes: queues served, in flight, connections held."""
        with self.pool.connection() as conn:
            return conn.execute(q("list_workers")).fetchall()

    def db_connections(self) -> list[dict]:
        """Connections to the database by application_name and state (pg_stat_activity)."""
        with self.pool.connection() as conn:
            return conn.execute(q("db_connections")).fetchall()

    # -- change -----------------------------------------------------------------------------

    def cancel(self, job_id: int, audit: Audit | None = None) -> str:
        """Cancel a job. Returns 'cancelled' (it was not running: now finished as cancelled),
        'requested' (running: its worker stops it and records it cancelled), 'finished'
        (too late) or 'not_found'. With `audit` (who asks, through which surface), a cancel
        that reached the job is recorded in the same statement (jobqueue/audit.py)."""
        with self.pool.connection() as conn:
            return store.cancel_job(conn, job_id, audit)

    def retry(self, job_id: int, audit: Audit | None = None) -> bool:
        """Run a dead or cancelled job again with a fresh attempt budget. With `audit`, a
        retry that happened is recorded in the same statement (jobqueue/audit.py)."""
        return bool(self._revive(ids=[job_id], states=["dead", "cancelled"], audit=audit))

    def dead(self, queue: str | None = None, limit: int = 100) -> list[dict]:
        with self.pool.connection() as conn:
            return store.dead_jobs(conn, queue, limit)

    def retry_dead(self, queue: str | None = None, ids: list[int] | None = None,
                   audit: Audit | None = None) -> list[int]:
        return self._revive(ids=ids, states=["dead"], queue=queue, audit=audit)

    def purge_dead(self, queue: str | None = None, ids: list[int] | None = None,
                   audit: Audit | None = None) -> int:
        with self.pool.connection() as conn:
            return store.delete(conn, JobFilter(queue=queue, ids=ids, state="dead"), audit)

    def _revive(self, *, ids, states, queue=None, audit=None) -> list[int]:
        with self.pool.connection() as conn:
            return store.revive(conn, JobFilter(ids=ids, queue=queue), states, audit)


def _spec(spec: JobSpec | dict, index: int) -> JobSpec:
    if isinstance(spec, dict):
        try:
            return JobSpec(**spec)
        except TypeError as exc:
            raise InvalidJob(f"job {index}: {exc}") from None
    return spec


class Created(NamedTuple):
    """One job enqueued: its id, whether it is new, and the tightest quota's standing."""

    id: int
    created: bool
    quota: quotas.Standing | None


class Submitted(tuple):
    """(batch id, jobs enqueued), as submit_batch always returned; also `refused` (jobs a
    quota turned away, with partial), `quota` (the tightest quota's standing after the charge),
    `exceeded` (the QuotaExceeded behind `refused`, for its retry time) and `ids` (the jobs'
    ids in the order of their specs)."""

    def __new__(cls, batch_id: int, total: int, refused: int = 0,
                quota: quotas.Standing | None = None,
                exceeded: quotas.QuotaExceeded | None = None, ids: Sequence[int] = ()):
        self = super().__new__(cls, (batch_id, total))
        self.refused, self.quota, self.exceeded = refused, quota, exceeded
        self.ids = list(ids)
        return self

    @property
    def batch_id(self) -> int:
        return self[0]

    @property
    def total(self) -> int:
        return self[1]


def _validated(spec: JobSpec | dict, index: int, now: datetime,
               routes: routing.Routes) -> tuple:
    """The insert row for a spec; InvalidJob names its index and field."""
    spec = _spec(spec, index)
    try:
        if spec.waits():
            spec.dependencies()
        return _row(spec, now, routes)
    except InvalidJob as exc:
        raise InvalidJob(f"job {index}: {exc}") from None


def _row(spec: JobSpec, now: datetime, routes: routing.Routes) -> tuple:
    """The insert row for a spec, checked. What the caller left out comes from the task's
    [tasks.NAME] table in jobqueue.toml, else the built-in defaults: never from the task
    registry, which only the processes that imported the task module have."""
    return routing.apply(spec, routes).validated_row(DEFAULT_QUEUE, DEFAULT_MAX_ATTEMPTS, now)


def insert_batch(conn, specs: Iterable[JobSpec], *, queue: str, name: str | None = None,
                 owner: str | None = None, source: str | None = None,
                 metadata: dict | None = None,
                 on_progress: Callable[[int], None] | None = None,
                 on_complete: JobSpec | None = None,
                 partial: bool = False) -> Submitted:
    """Client.submit_batch inside the caller's transaction (a schedule's fire records its run
    in the same one); returns (batch id, rows submitted) as a Submitted.

    A row whose idempotency key already names a job (on this queue, for this owner) makes no
    job: it is counted as a duplicate and points at that job. Specs may depend on earlier ones
    by `ref`. `on_complete`: a job enqueued once every member has ended, receiving
    {"batch_id", "counts"} in its payload. Past the owner's quota the whole batch is refused
    (QuotaExceeded; the caller's transaction must roll back); with `partial`, the first rows
    that fit are enqueued, the rest counted in `refused` (QuotaExceeded still when not even
    the first fits)."""
    now, routes = datetime.now(UTC), routing.load()
    check_text(name, "name", max_length=MAX_NAME_LENGTH)
    for field, value in (("source", source), ("owner", owner)):
        check_text(value, field)
    to_json(metadata or {}, "metadata")  # checked like a job's: InvalidJob naming the place
    callback = None
    if on_complete is not None:
        try:
            callback = workflows.callback_row(on_complete, owner)
        except InvalidJob as exc:
            raise InvalidJob(f"on_complete: {exc}") from None
    batch_id = conn.execute(q("batch_create"), {
        "name": name, "queue": queue, "owner": owner, "source": source,
        "metadata": Jsonb(metadata or {})}).fetchone()["id"]
    rows, row_specs = [], []
    for index, spec in enumerate(specs):
        # A fan-out's specs name their platform's queue; others take the batch's.
        spec.batch_id, spec.queue, spec.owner = batch_id, spec.queue or queue, owner
        rows.append(_validated(spec, index, now, routes))
        row_specs.append(spec)
    # The quota is charged for the whole batch at once (the rows are in memory by now), in
    # this transaction: a refusal leaves nothing behind.
    inserter, admission = _insert_workflow(conn, rows, row_specs, partial=partial,
                                           batch_id=batch_id, on_progress=on_progress)
    refused = len(rows) - admission.count
    total = len(inserter.ids)
    conn.execute(q("batch_set_total"), {"id": batch_id, "total": total})
    if callback is not None:
        workflows.attach_batch_callback(conn, batch_id, callback)
    if total and inserter.created and not any(inserter.created):
        # Every row named an existing job: the batch is done at once, and nothing will reach
        # `finished` to announce it; say so here, as the finish trigger would have.
        from jobqueue import webhooks

        webhooks.emit(conn, "batch.completed", owner, {"batch": {
            "id": batch_id, "name": name, "queue": queue, "owner": owner, "total": total,
            "counts": {"duplicate": total}}}, event_id=f"batch.completed:{batch_id}")
    if on_progress:
        on_progress(total)
    return Submitted(batch_id, total, refused, admission.standing, admission.exceeded,
                     inserter.ids)


def insert_specs(conn, specs: list[JobSpec]) -> list[tuple[int, bool]]:
    """Enqueue specs inside the caller's transaction (so a job can be created atomically with
    rows of the caller's own); returns (id, created) per spec, in order. Charges the owners'
    quotas: QuotaExceeded (raised before any insert) should roll the transaction back."""
    now, routes = datetime.now(UTC), routing.load()
    rows = [_validated(spec, i, now, routes) for i, spec in enumerate(specs)]
    if any(spec.waits() for spec in specs):
        with conn.transaction():
            inserter, _ = _insert_workflow(conn, rows, specs)
        return list(zip(inserter.ids, inserter.created, strict=True))
    inserted, _ = _insert_admitted(conn, rows)
    return inserted


def _insert_workflow(conn, rows: list[tuple], specs: list[JobSpec], *, partial: bool = False,
                     batch_id: int | None = None,
                     on_progress: Callable[[int], None] | None = None
                     ) -> tuple[workflows.Inserter, quotas.Admission]:
    """Charge the owners' quotas for rows with their specs (some may wait for others, or be
    a batch's: `batch_id`) and insert those admitted through a workflows.Inserter, in the
    caller's transaction: the flushed Inserter (ids and `created` in order; a row whose key
    matched an existing job is not created) and the Admission. `on_progress(n)` after each
    chunk. The other insert route, for rows without specs, is _insert_admitted."""
    admission = quotas.admit(conn, rows, partial=partial)
    inserter = workflows.Inserter(conn, batch_id)
    for row, spec in zip(rows[:admission.count], specs, strict=False):
        inserter.add(row, spec)
        if on_progress and inserter.pending == 0:  # a chunk went in
            on_progress(len(inserter.ids))
    inserter.flush()
    return inserter, admission


def _insert_admitted(conn, rows: list[tuple], partial: bool = False
                     ) -> tuple[list[tuple[int, bool]], quotas.Admission]:
    """Charge the owners' quotas for rows and insert those admitted (all, unless partial),
    in the caller's transaction: the quota rows stay locked until it commits."""
    admission = quotas.admit(conn, rows, partial=partial)
    return _insert_chunked(conn, rows[:admission.count]), admission


def _insert_chunked(conn, rows: list[tuple]) -> list[tuple[int, bool]]:
    out: list[tuple[int, bool]] = []
    for start in range(0, len(rows), CHUNK):
        out.extend(_insert(conn, rows[start : start + CHUNK]))
    return out


def _insert(conn, rows: list[tuple]) -> list[tuple[int, bool]]:
    """Insert validated rows; returns (id, created) in order."""
    return store.insert_rows(conn, rows)
