"""Workflows: jobs that wait for other jobs (`depends_on`), and batch completion callbacks
(`on_complete`), over the job store.

A job enqueued with `depends_on=[ids]` is `blocked`: it lives in jobqueue.blocked, out of the
claim's way, until the transaction that ends its last parent releases it
(jobqueue.release_children, sql/migrations/0015_workflows.sql). Within one `enqueue_many` or
batch, a spec may name an earlier one by its `ref` instead of an id. A batch's `on_complete`
is a blocked job that waits for every member with the policy `run`; released, it receives
the batch id and its counts. Schedules (or anything that makes a batch) call
attach_batch_callback in their own transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime

from jobqueue import routing
from jobqueue.db import store
from jobqueue.jobs import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_QUEUE,
    FINISHED_STATES,
    InvalidJob,
    JobSpec,
)

# Rows per insert statement (as the client's CHUNK).
CHUNK = 5000


class Inserter:
    """Enqueue validated rows in input order inside the caller's transaction: plain rows as
    the client always has, rows that wait into `blocked` with their edges; `ref` names
    resolve to the ids of earlier rows. With a batch, rows whose key named an existing job
    are recorded as the batch's duplicates. `ids` holds the job id of every row added and
    `created` whether it made a job (False: its key named an existing one)."""

    def __init__(self, conn, batch_id: int | None = None):
        self.conn, self.batch_id = conn, batch_id
        self.refs: dict[str, int] = {}
        self.ids: list[int] = []
        self.created: list[bool] = []
        self.duplicates = 0
        self._pending: list[tuple[int, tuple, JobSpec | None]] = []
        self._pending_refs: set[str] = set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, row: tuple, spec: JobSpec | None = None) -> None:
        """Queue one validated row (JobSpec.validated_row) with its spec; flushed in
        chunks, or earlier when the row names a ref not inserted yet."""
        index = len(self.ids) + len(self._pending)
        if spec is not None and spec.waits():
            try:
                parents, _ = spec.dependencies()
            except InvalidJob as exc:
                raise InvalidJob(f"job {index}: {exc}") from None
            if any(isinstance(p, str) and p in self._pending_refs for p in parents):
                self.flush()
            if spec.ref is not None:
                if spec.ref in self.refs or spec.ref in self._pending_refs:
                    raise InvalidJob(f"job {index}: ref: {spec.ref!r} names an earlier job "
                                     "of this call already")
                self._pending_refs.add(spec.ref)
        self._pending.append((index, row, spec))
        if len(self._pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_refs = set()
        if not pending:
            return
        placed: dict[int, tuple[int, bool, int]] = {}
        plain = [(i, row) for i, row, spec in pending if not (spec and spec.depends_on)]
        if plain:
            for (i, _), out in zip(plain, store.insert_rows_placed(
                    self.conn, [row for _, row in plain]), strict=True):
                placed[i] = out
        waiting = [(i, row, spec) for i, row, spec in pending if spec and spec.depends_on]
        if waiting:
            placed.update(self._insert_waiting(waiting))
        for i, _, spec in pending:
            if spec is not None and spec.ref is not None:
                self.refs[spec.ref] = placed[i][0]
        if self.batch_id is not None:
            duplicates = [(place, self.batch_id, job_id)
                          for job_id, created, place in placed.values() if not created]
            store.record_batch_duplicates(self.conn, duplicates)
            self.duplicates += len(duplicates)
        self.ids.extend(placed[i][0] for i, _, _ in pending)
        self.created.extend(placed[i][1] for i, _, _ in pending)

    def _insert_waiting(self, waiting) -> dict[int, tuple[int, bool, int]]:
        parents_of: list[list[int]] = []
        policies: list[str] = []
        for i, _, spec in waiting:
            names, policy = spec.dependencies()
            ids = []
            for name in names:
                if isinstance(name, str):
                    if name not in self.refs:
                        raise InvalidJob(f"job {i}: depends_on: no earlier job of this call "
                                         f"has the ref {name!r}")
                    ids.append(self.refs[name])
                else:
                    ids.append(name)
            parents_of.append(sorted(set(ids)))
            policies.append(policy)
        found = store.lock_parents(self.conn, {p for ids in parents_of for p in ids})
        for (i, row, _), ids in zip(waiting, parents_of, strict=True):
            for parent in ids:
                # Another owner's job is as good as absent: its existence is not ours to learn.
                if parent not in found or found[parent]["owner"] != row[7]:
                    raise InvalidJob(f"job {i}: depends_on: no job {parent}"
                                     + (f" of owner {row[7]!r}" if row[7] else ""))
        out = store.insert_blocked(self.conn, [row for _, row, _ in waiting], [
            (len(ids), policy, None) for ids, policy in zip(parents_of, policies, strict=True)])
        edges = [(parent, job_id)
                 for ids, (job_id, created, _) in zip(parents_of, out, strict=True) if created
                 for parent in ids]
        store.add_edges(self.conn, edges)
        _release_ended(self.conn, found, {p for p, _ in edges})
        return {i: placed for (i, _, _), placed in zip(waiting, out, strict=True)}


def _release_ended(conn, found: dict[int, dict], parents: set[int]) -> None:
    """Parents that had ended before their new children were enqueued: tell the children
    now, through the same release step as any end."""
    ended = [(p, found[p]["state"]) for p in sorted(parents)
             if found[p]["state"] in FINISHED_STATES]
    if ended:
        store.release_children(conn, [p for p, _ in ended], [s for _, s in ended])


def callback_row(spec: JobSpec, owner: str | None) -> tuple:
    """A completion callback's insert row, checked (InvalidJob names the field), routed like
    any job (its queue from [tasks.KIND] when it names none); it belongs to the batch's
    owner and to no batch."""
    spec.owner, spec.batch_id = owner, None
    return routing.apply(spec, routing.load()).validated_row(
        DEFAULT_QUEUE, DEFAULT_MAX_ATTEMPTS, datetime.now(UTC))


def attach_batch_callback(conn, batch_id: int, callback: JobSpec | tuple,
                          owner: str | None = None) -> int:
    """Make `callback` (a JobSpec, or a row from callback_row) the completion callback of
    batch `batch_id`, in the caller's transaction: a blocked job that waits for every member
    of the batch (policy `run`), released exactly once, by the transaction that ends the last
    of them (or now, if none is left), with {"batch_id", "counts": {total, succeeded, dead,
    cancelled, duplicates}} merged into its payload. Returns its id. For anything that makes
    batches (a schedule's run): submit_batch(on_complete=...) calls it too."""
    row = callback if isinstance(callback, tuple) else callback_row(callback, owner)
    members = store.batch_members(conn, batch_id)
    found = store.lock_parents(conn, members)
    ((job_id, _, _),) = store.insert_blocked(conn, [row], [(len(found), "run", batch_id)])
    store.add_edges(conn, [(m, job_id) for m in sorted(found)])
    store.set_batch_callback(conn, batch_id, job_id)
    _release_ended(conn, found, set(found))
    if not found:
        store.release_ready(conn, [job_id])
    return job_id
