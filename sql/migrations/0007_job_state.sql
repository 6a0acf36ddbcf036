-- 0007: a job's visible state, and its move from `jobs` to `finished`, each defined once.
--
-- Until now the CASE deriving a hot job's state was written in six queries and the move to
-- `finished` in four, and the copies drifted (a batch export called a job waiting for its
-- retry `waiting` while get_job called it `scheduled`; cancellations dropped execution_id).
-- Every query now derives a state with jobqueue.job_state (or reads jobqueue.all_jobs, which
-- calls it), and every move writes its row with jobqueue.finished_row.

-- The state of a row of the hot table. The seven visible states:
--   running    leased by a worker (lease_owner is set);
--   waiting    not leased and runnable now (run_at has come): exactly what the claim takes,
--              `lease_owner IS NULL AND run_at <= now()`, the claim index's predicate;
--   retrying   not leased, run_at in the future, and an attempt has failed (attempts > 0
--              and errors non-empty): waiting out its backoff before the next attempt;
--   scheduled  not leased, run_at in the future, never failed (enqueued with a delay, or
--              revived: revival resets attempts to 0 and keeps the error history);
--   succeeded, dead, cancelled: the `state` column of `finished`.
-- A retrying job whose backoff is over is waiting again (as Oban's retryable jobs become
-- available): `waiting` always counts the whole runnable backlog.
-- A one-expression SQL function, STABLE (now()), not STRICT: the planner inlines it, so it
-- costs what the CASE written out would. Columns rather than the whole row, so a scan of
-- `jobs` does not build a composite value per row to call it.
CREATE FUNCTION jobqueue.job_state(
    lease_owner uuid, run_at timestamptz, attempts integer, errors jsonb
) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN lease_owner IS NOT NULL THEN 'running'
                WHEN run_at <= now() THEN 'waiting'
                WHEN attempts > 0 AND errors <> '[]'::jsonb THEN 'retrying'
                ELSE 'scheduled' END
$$;

-- Every job, hot or finished, with its visible state: the one relation reads of "a job" or
-- "jobs matching X" go through (get_job, the dashboard's list and counts, batch pages).
-- A job moves between the tables inside one transaction, so one snapshot of the view sees it
-- exactly once. UNION ALL of two plain selects: Postgres flattens it into an append of the two
-- tables and pushes each condition into both, so `WHERE id = $1` or `WHERE batch_id = $1` is
-- an index probe on each table, as when written by hand.
CREATE VIEW jobqueue.all_jobs AS
SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
       jobqueue.job_state(lease_owner, run_at, attempts, errors) AS state,
       NULL::jsonb AS result, errors, progress, owner, batch_id, idempotency_key, metadata,
       created_at, started_at, NULL::timestamptz AS finished_at, lease_owner,
       cancel_requested, execution_id
FROM jobqueue.jobs
UNION ALL
SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
       state, result, errors, progress, owner, batch_id, idempotency_key, metadata,
       created_at, started_at, finished_at, NULL::uuid, false, execution_id
FROM jobqueue.finished;

-- The move to `finished`, defined once: the `finished` row a deleted `jobs` row becomes, with
-- its final state, result and the errors to append (a JSON array: '[]' for none). Every move
-- is the same pattern (see sql/queries/jobs.sql):
--     WITH gone AS (DELETE FROM jobqueue.jobs j WHERE ... RETURNING j AS job)
--     INSERT INTO jobqueue.finished
--     SELECT (jobqueue.finished_row(job, 'cancelled', NULL, '[]')).* FROM gone
-- Which rows move, and the fencing, are each path's own; what a move writes is here. The
-- result is the table's own row type, so the INSERT needs no column list, and a column added
-- to `finished` without being added here makes every move fail loudly (the ROW no longer
-- casts) instead of being silently left NULL. Every argument is used once and the function is
-- one expression, so the planner inlines it: `(...).*` becomes the plain column expressions,
-- evaluated once each. The worker's finish_jobs (the hot path) spells the same columns out,
-- because building and taking apart the whole-row value cost it 1 us of 8 per job (see its
-- comment); tests/integration/test_states.py holds it to finished_row, column for column.
CREATE FUNCTION jobqueue.finished_row(
    job jobqueue.jobs, state text, result jsonb, new_errors jsonb
) RETURNS jobqueue.finished LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT ROW(job.id, job.queue, job.kind, job.payload, job.priority, job.run_at,
               job.attempts, job.max_attempts, job.timeout_seconds, state, result,
               job.errors || new_errors, job.progress, job.owner, job.batch_id,
               job.idempotency_key, job.metadata, job.created_at, job.started_at, now(),
               job.execution_id)::jobqueue.finished
$$;
