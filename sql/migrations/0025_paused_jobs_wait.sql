-- 0025: a job paused over budget is `waiting`, not `scheduled`.
--
-- A job whose LLM call would pass a budget (jobqueue/llm/spend.py) is handed back with its
-- attempts untouched, `progress.paused` = 'over budget', and a run_at 30 s ahead (so workers do
-- not spin on it; raising the budget makes it due at once). By run_at alone its state read
-- `scheduled` (or `retrying` after a failure), as if it had been enqueued for later. It is
-- waiting for room in a budget: the state says `waiting`, and `progress.paused` says why.
-- job_state takes the row's progress for that; everything else is as in 0007.
CREATE FUNCTION jobqueue.job_state(
    lease_owner uuid, run_at timestamptz, attempts integer, errors jsonb, progress jsonb
) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN lease_owner IS NOT NULL THEN 'running'
                WHEN run_at <= now() THEN 'waiting'
                WHEN progress ? 'paused' THEN 'waiting'
                WHEN attempts > 0 AND errors <> '[]'::jsonb THEN 'retrying'
                ELSE 'scheduled' END
$$;

CREATE OR REPLACE VIEW jobqueue.all_jobs AS
SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
       jobqueue.job_state(lease_owner, run_at, attempts, errors, progress) AS state,
       NULL::jsonb AS result, errors, progress, owner, batch_id, idempotency_key, metadata,
       created_at, started_at, NULL::timestamptz AS finished_at, lease_owner,
       cancel_requested, execution_id
FROM jobqueue.jobs
UNION ALL
SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
       state, result, errors, progress, owner, batch_id, idempotency_key, metadata,
       created_at, started_at, finished_at, NULL::uuid, false, execution_id
FROM jobqueue.finished
UNION ALL
SELECT id, queue, kind, payload, priority, coalesce(run_at, created_at), 0, max_attempts,
       timeout_seconds, 'blocked', NULL::jsonb, '[]'::jsonb, NULL::jsonb, owner, batch_id,
       idempotency_key, metadata, created_at, NULL::timestamptz, NULL::timestamptz,
       NULL::uuid, false, NULL::uuid
FROM jobqueue.blocked;

DROP FUNCTION jobqueue.job_state(uuid, timestamptz, integer, jsonb);
