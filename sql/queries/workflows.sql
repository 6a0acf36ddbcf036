-- Workflows (0015): jobs that wait for other jobs (depends_on), batch rows that were
-- duplicates, and batch completion callbacks. Run only by jobqueue/db/store.py. The release
-- step itself is the SQL function jobqueue.release_children (sql/migrations/0015_workflows.sql),
-- called by every statement that ends jobs: finish_jobs, rescue_dead, and after cancel_jobs
-- and delete_jobs.


-- name: lock_parents
-- The jobs a new job will wait for, each found where it is now: hot (state NULL), blocked
-- ('blocked') or finished (its final state). Hot and blocked parents are locked, in id order
-- (so two enqueues never deadlock), and flagged has_children, so the statement that ends
-- them runs the release step; a parent that ends while this transaction is open waits for
-- its commit and then sees the flag and the edges (see release_children).
-- A parent that moved between tables while this ran (its old row gone, its new one not in
-- this statement's snapshot) is missing from the answer: the caller asks again.
WITH wanted AS (
    SELECT DISTINCT unnest(%(ids)s::bigint[]) AS id
),
hot_locked AS MATERIALIZED (
    SELECT j.id FROM jobqueue.jobs j WHERE j.id IN (SELECT id FROM wanted)
    ORDER BY j.id FOR UPDATE
),
held_locked AS MATERIALIZED (
    SELECT b.id FROM jobqueue.blocked b WHERE b.id IN (SELECT id FROM wanted)
    ORDER BY b.id FOR UPDATE
),
hot AS (
    UPDATE jobqueue.jobs j SET has_children = true
    WHERE j.id IN (SELECT id FROM hot_locked)
    RETURNING j.id, j.owner, NULL::text AS state
),
held AS (
    UPDATE jobqueue.blocked b SET has_children = true
    WHERE b.id IN (SELECT id FROM held_locked)
    RETURNING b.id, b.owner, 'blocked'::text AS state
)
SELECT id, owner, state FROM hot
UNION ALL SELECT id, owner, state FROM held
UNION ALL SELECT f.id, f.owner, f.state FROM jobqueue.finished f
          WHERE f.id IN (SELECT id FROM wanted);


-- name: insert_blocked
-- Jobs that wait: into `blocked`, with how many parents they wait for. Idempotency keys are
-- claimed as in insert_jobs_idempotent (a key already held returns the holder, not a row).
WITH input AS MATERIALIZED (
    SELECT t.*, nextval('jobqueue.job_id_seq') AS new_id
    FROM unnest(%(queue)s::text[], %(kind)s::text[], %(payload)s::text[],
                %(priority)s::smallint[], %(run_at)s::timestamptz[], %(max_attempts)s::int[],
                %(timeout_seconds)s::real[], %(owner)s::text[], %(batch_id)s::bigint[],
                %(metadata)s::text[], %(idempotency_key)s::text[], %(waiting_on)s::int[],
                %(on_parent_failure)s::text[], %(completes_batch)s::bigint[])
        WITH ORDINALITY AS t(queue, kind, payload, priority, run_at, max_attempts,
                             timeout_seconds, owner, batch_id, metadata, idempotency_key,
                             waiting_on, on_parent_failure, completes_batch, ord)
),
-- include: idempotency_claim
inserted AS (
    INSERT INTO jobqueue.blocked
        (id, queue, kind, payload, priority, run_at, max_attempts, timeout_seconds, owner,
         batch_id, idempotency_key, metadata, on_parent_failure, waiting_on, completes_batch)
    SELECT new_id, queue, kind, payload::jsonb, priority, run_at, max_attempts,
           timeout_seconds, owner, batch_id, idempotency_key, metadata::jsonb,
           on_parent_failure, waiting_on, completes_batch
    FROM input
    WHERE idempotency_key IS NULL OR new_id IN (SELECT job_id FROM claimed)
    RETURNING id
)
-- include: idempotency_answer


-- name: add_edges
INSERT INTO jobqueue.job_dependencies (parent_id, child_id)
SELECT * FROM unnest(%(parent)s::bigint[], %(child)s::bigint[])
ON CONFLICT DO NOTHING;


-- name: release_children
-- The release step run as a statement of its own: after cancel_jobs and delete_jobs, and
-- for parents that had ended already when their child was enqueued.
SELECT jobqueue.release_children(%(ids)s::bigint[], %(states)s::text[]) AS released;


-- name: record_batch_duplicates
-- Batch rows whose key named an existing job: `id` is the id drawn for the row (its place).
INSERT INTO jobqueue.batch_duplicates (id, batch_id, job_id)
SELECT * FROM unnest(%(id)s::bigint[], %(batch_id)s::bigint[], %(job_id)s::bigint[]);


-- name: batch_members
-- Every job of a batch, wherever it is, for its completion callback to wait on.
SELECT id FROM jobqueue.jobs WHERE batch_id = %(batch_id)s
UNION ALL SELECT id FROM jobqueue.blocked WHERE batch_id = %(batch_id)s
UNION ALL SELECT id FROM jobqueue.finished WHERE batch_id = %(batch_id)s;


-- name: batch_set_callback
UPDATE jobqueue.batches SET on_complete_job = %(job_id)s WHERE id = %(batch_id)s;


-- name: release_ready
-- Blocked jobs with nothing (left) to wait for move to `jobs`: a batch callback whose batch
-- had no job to wait for (every row a duplicate).
SELECT jobqueue.release_ready(%(ids)s::bigint[]) AS released;
