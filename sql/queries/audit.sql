-- Manual actions on jobs (jobqueue/audit.py; table jobqueue.job_actions, 0023).


-- name: job_actions_record
INSERT INTO jobqueue.job_actions (job_id, action, actor, via, detail)
SELECT id, %(action)s, %(actor)s, %(via)s, %(detail)s
FROM unnest(%(ids)s::bigint[]) AS ids(id);


-- name: job_actions_of_job
-- The newest actions on one job, newest first, through (job_id, id).
SELECT action, actor, via, at, detail
FROM jobqueue.job_actions
WHERE job_id = %(job_id)s
ORDER BY id DESC
LIMIT %(limit)s;
