-- 0029: only the budget's own marker makes a job with a future run_at read `waiting`.
--
-- 0025 tested `progress ? 'paused'`: true also for a handler's own progress that holds the
-- string "paused" (or a key of that name), and for a job once paused over budget that ran
-- again and failed (its retry kept the marker, so it read `waiting` through its backoff, not
-- `retrying`). The marker jobqueue/llm/spend.py writes is {"paused": "over budget", ...}, as
-- the resume statements read it; retry_jobs now drops it (sql/queries/jobs.sql).
CREATE OR REPLACE FUNCTION jobqueue.job_state(
    lease_owner uuid, run_at timestamptz, attempts integer, errors jsonb, progress jsonb
) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN lease_owner IS NOT NULL THEN 'running'
                WHEN run_at <= now() THEN 'waiting'
                WHEN progress ->> 'paused' = 'over budget' THEN 'waiting'
                WHEN attempts > 0 AND errors <> '[]'::jsonb THEN 'retrying'
                ELSE 'scheduled' END
$$;
