-- Queue settings an operator changes at run time (0012_fair_caps.sql): fleet-wide caps on
-- running jobs and fair shares between owners. Only jobqueue/queues.py runs these. The claim
-- (jobs.sql) reads them on every claim, so a change applies to the claims that start after
-- it commits. Pausing is queue_pause (jobs.sql).


-- name: queue_settings
-- Every queue with settings, or the one named (with the defaults if it has none), with its
-- running jobs (the number the caps are held to) counted from the table.
SELECT n.name AS queue, coalesce(s.paused, false) AS paused, s.max_running,
       s.max_running_per_owner, coalesce(s.fair, false) AS fair,
       coalesce(s.retry_order, 'first') AS retry_order, s.updated_at,
       (SELECT count(*) FROM jobqueue.jobs j
        WHERE j.lease_owner IS NOT NULL AND j.queue = n.name) AS running
FROM (SELECT name FROM jobqueue.queues WHERE %(name)s::text IS NULL
      UNION ALL
      SELECT %(name)s::text WHERE %(name)s::text IS NOT NULL) AS n
LEFT JOIN jobqueue.queues s ON s.name = n.name
ORDER BY n.name;


-- name: queue_settings_lock
-- Taken before a change of settings: the queue's row (created if missing), so two changes
-- of one queue do not interleave; returns the settings in force.
INSERT INTO jobqueue.queues AS s (name) VALUES (%(name)s)
ON CONFLICT (name) DO UPDATE SET name = s.name
RETURNING s.max_running, s.max_running_per_owner, s.fair, s.retry_order;


-- name: queue_settings_store
UPDATE jobqueue.queues
SET max_running = %(max_running)s, max_running_per_owner = %(max_running_per_owner)s,
    fair = %(fair)s, retry_order = %(retry_order)s, updated_at = now()
WHERE name = %(name)s;


-- name: fairness_exclusive
-- Turning fairness on or off: wait for every enqueue in flight to commit (each holds the
-- shared side of this lock, taken by jobqueue.fair_rounds: every insert into jobs calls it)
-- and keep new ones out until this transaction commits, so no row enters the queue
-- unnumbered (see 0012 and 0020). The caller bounds the wait with lock_timeout:
-- enqueues queue up behind a waiting change.
SELECT pg_advisory_xact_lock(hashtext('jobqueue.fairness'));


-- name: fairness_number_rows
-- Fairness turned on: number every hot row of the queue (running ones too: they come back on
-- retry or hand-back) round by round per owner within each priority, oldest first, and
-- record where each owner stands. Takes time in proportion to the queue's rows (about
-- 10 s for a million); enqueues wait for it.
WITH ranked AS MATERIALIZED (
    SELECT id, priority, coalesce(owner, '') AS owner,
           row_number() OVER (PARTITION BY priority, coalesce(owner, '')
                              ORDER BY run_at, id) AS nth
    FROM jobqueue.jobs WHERE queue = %(name)s
),
numbered AS (
    UPDATE jobqueue.jobs j SET fair_round = r.nth FROM ranked r WHERE j.id = r.id
)
INSERT INTO jobqueue.fair_owners (queue, priority, owner, last_round, last_count)
SELECT %(name)s, priority, owner, max(nth), max(nth) FROM ranked
GROUP BY priority, owner;


-- name: fairness_forget
-- Fairness turned off (or about to be renumbered): the queue's rows leave jobs_fair_idx and
-- its owners' standings go.
WITH cleared AS (
    UPDATE jobqueue.jobs SET fair_round = NULL
    WHERE queue = %(name)s AND fair_round IS NOT NULL
)
DELETE FROM jobqueue.fair_owners WHERE queue = %(name)s;
