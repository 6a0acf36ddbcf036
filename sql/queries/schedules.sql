-- Schedules and their runs (sql/migrations/0014_schedules.sql). Run by
-- jobqueue/schedules/store.py (definitions, reads) and jobqueue/schedules/tick.py (fires).


-- name: schedule_upsert
-- Save a definition. A new schedule, or one whose definition changed, starts at its next
-- fire after now (%(next_fire_at)s): fires of an old definition are never caught up. When
-- `only_if_changed` (start-up sync), an identical definition is left alone, so restarting a
-- fleet keeps next_fire_at (and a paused schedule stays paused); `replace` false refuses to
-- overwrite (returns nothing for an existing name), and so does an existing row of an owner
-- other than %(only_owner)s when one is given (the owner test is in the statement: a row
-- another owner saves after the caller's check is never taken over).
INSERT INTO jobqueue.schedules AS s
    (name, cron, timezone, target, batch_content, misfire, max_lateness_seconds, paused,
     owner, origin, next_fire_at)
VALUES (%(name)s, %(cron)s, %(timezone)s, %(target)s, %(batch_content)s, %(misfire)s,
        %(max_lateness)s, %(paused)s, %(owner)s, %(origin)s, %(next_fire_at)s)
ON CONFLICT (name) DO UPDATE
SET cron = excluded.cron, timezone = excluded.timezone, target = excluded.target,
    batch_content = excluded.batch_content, misfire = excluded.misfire,
    max_lateness_seconds = excluded.max_lateness_seconds, owner = excluded.owner,
    origin = excluded.origin, next_fire_at = excluded.next_fire_at, updated_at = now()
WHERE %(replace)s
  AND (%(only_owner)s::text IS NULL OR s.owner = %(only_owner)s)
  AND NOT (%(only_if_changed)s
           AND (s.cron, s.timezone, s.target, s.misfire, s.owner, s.origin)
               IS NOT DISTINCT FROM (excluded.cron, excluded.timezone, excluded.target,
                                     excluded.misfire, excluded.owner, excluded.origin)
           AND s.batch_content IS NOT DISTINCT FROM excluded.batch_content
           AND s.max_lateness_seconds IS NOT DISTINCT FROM excluded.max_lateness_seconds)
RETURNING name, (xmax = 0) AS created;


-- name: schedule_remove_stale
-- Start-up sync: drop the schedules of `origin` that the configuration no longer declares.
DELETE FROM jobqueue.schedules
WHERE origin = %(origin)s AND NOT (name = ANY(%(keep)s))
RETURNING name;


-- name: schedule_remove
DELETE FROM jobqueue.schedules
WHERE name = %(name)s AND (%(owner)s::text IS NULL OR owner = %(owner)s)
RETURNING name;


-- name: schedule_set_paused
-- Pause or resume. Resuming starts at the next fire after now (%(next_fire_at)s): a pause
-- is not downtime, so nothing of it is caught up.
UPDATE jobqueue.schedules
SET paused = %(paused)s, updated_at = now(),
    next_fire_at = CASE WHEN %(paused)s OR NOT paused THEN next_fire_at
                        ELSE %(next_fire_at)s END
WHERE name = %(name)s AND (%(owner)s::text IS NULL OR owner = %(owner)s)
RETURNING name, paused, next_fire_at;


-- name: schedules_list
-- Every schedule (of `owner`) with its latest run and that run's outcome (the job's state,
-- or the batch's counts summed), for the list, the API and the dashboard.
SELECT s.name, s.cron, s.timezone, s.target, s.misfire, s.max_lateness_seconds AS max_lateness,
       s.paused, s.owner, s.origin, s.next_fire_at, s.created_at, s.updated_at,
       r.id AS last_run_id, r.fire_at AS last_fire_at, r.decision AS last_decision,
       r.reason AS last_reason, r.job_id AS last_job_id, r.batch_id AS last_batch_id,
       o.outcome AS last_outcome
FROM jobqueue.schedules s
LEFT JOIN LATERAL (
    SELECT * FROM jobqueue.schedule_runs
    WHERE schedule = s.name AND decision <> 'skipped'
    ORDER BY id DESC LIMIT 1
) r ON true
LEFT JOIN LATERAL (SELECT jobqueue.schedule_run_outcome(r.job_id, r.batch_id) AS outcome) o
    ON r.id IS NOT NULL
WHERE (%(owner)s::text IS NULL OR s.owner = %(owner)s)
  AND (%(name)s::text IS NULL OR s.name = %(name)s)
ORDER BY s.name
LIMIT %(limit)s;


-- name: schedule_get
-- One schedule with everything stored (the batch text too, for a run-now).
SELECT name, cron, timezone, target, batch_content, misfire,
       max_lateness_seconds AS max_lateness, paused, owner, origin, next_fire_at
FROM jobqueue.schedules WHERE name = %(name)s;


-- name: schedule_runs
-- A schedule's runs, newest first, each with its job's state or its batch's counts.
SELECT r.id, r.fire_at, r.decision, r.reason, r.skipped, r.skipped_from, r.job_id,
       r.batch_id, r.decided_at, jobqueue.schedule_run_outcome(r.job_id, r.batch_id) AS outcome,
       b.name AS batch_name
FROM jobqueue.schedule_runs r
LEFT JOIN jobqueue.batches b ON b.id = r.batch_id
WHERE r.schedule = %(name)s AND r.id < %(before)s
ORDER BY r.id DESC
LIMIT %(limit)s;


-- name: schedule_due
-- Up to `limit` due schedules, locked for this scheduler's decision, decided in one
-- transaction (a commit per schedule cost more than the fire). SKIP LOCKED: other schedulers
-- take the next ones instead of waiting. The lock only saves work; the unique
-- (schedule, fire_at) run row is what keeps a fire from enqueueing twice.
SELECT name, cron, timezone, target, batch_content, misfire,
       max_lateness_seconds AS max_lateness, owner, next_fire_at
FROM jobqueue.schedules
WHERE NOT paused AND next_fire_at <= %(now)s
ORDER BY next_fire_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;


-- name: schedule_next_due
-- When the earliest unpaused schedule is due: the scheduler sleeps until then (or its poll).
SELECT min(next_fire_at) AS at FROM jobqueue.schedules WHERE NOT paused;


-- name: schedule_advance
UPDATE jobqueue.schedules SET next_fire_at = %(next_fire_at)s WHERE name = %(name)s;


-- name: schedule_run_claim
-- Record a fire. ON CONFLICT DO NOTHING: a fire already recorded (by another scheduler, or
-- before a redefinition) returns no row, and the caller enqueues nothing for it.
INSERT INTO jobqueue.schedule_runs (schedule, fire_at, decision, reason, skipped, skipped_from,
                                    decided_at)
VALUES (%(schedule)s, %(fire_at)s, %(decision)s, %(reason)s, %(skipped)s, %(skipped_from)s,
        %(decided_at)s)
ON CONFLICT ON CONSTRAINT schedule_runs_once DO NOTHING
RETURNING id;


-- name: schedule_run_set
-- What a recorded fire enqueued (or why it failed), in the same transaction.
UPDATE jobqueue.schedule_runs
SET decision = %(decision)s, reason = %(reason)s, job_id = %(job_id)s, batch_id = %(batch_id)s
WHERE id = %(id)s;


-- name: prune_schedule_runs
-- Runs older than the retention, a bounded slice at a time (their jobs and batches stay).
-- Gated on the maintenance leader's transaction-level lock, as prune_finished is.
WITH leader AS MATERIALIZED (
    SELECT pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance')) AS ok
)
DELETE FROM jobqueue.schedule_runs
WHERE id IN (SELECT id FROM jobqueue.schedule_runs
             WHERE decided_at < now() - make_interval(days => %(days)s)
               AND (SELECT ok FROM leader)
             LIMIT %(limit)s);


-- name: schedules_declared_exist
-- Whether a worker with nothing declared must still sync at start (to remove schedules that
-- jobqueue.toml or a task declared before); else the sync opens no connection at all.
SELECT EXISTS (SELECT 1 FROM jobqueue.schedules WHERE origin IN ('config', 'task'));
