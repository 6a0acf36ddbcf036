-- Manual actions on jobs (jobqueue/audit.py; table jobqueue.job_actions, 0023).


-- part: job_actions_noted
-- The record of a manual action, written by the statement that acts (cancel_jobs,
-- revive_jobs, delete_jobs, job_run_now), so the action and its record commit together or
-- not at all, in one round trip: a row for each job of the statement's `acted` CTE (the jobs
-- the action reached, none if it reached none). Without an action (%(action)s NULL: a call
-- of the Python Client, say) nothing is recorded. The statement's last CTE; its parameters
-- are audit.noted's.
noted AS (
    INSERT INTO jobqueue.job_actions (job_id, action, actor, via, detail)
    SELECT id, %(action)s::text, %(actor)s::text, %(via)s::text, %(detail)s::text
    FROM acted
    WHERE %(action)s::text IS NOT NULL
)


-- name: job_actions_of_job
-- The newest actions on one job, newest first, through (job_id, id).
SELECT action, actor, via, at, detail
FROM jobqueue.job_actions
WHERE job_id = %(job_id)s
ORDER BY id DESC
LIMIT %(limit)s;
