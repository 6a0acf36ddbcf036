-- Batches: creation, counts, members.

-- name: batch_create
INSERT INTO jobqueue.batches (name, queue, owner, source, metadata)
VALUES (%(name)s, %(queue)s, %(owner)s, %(source)s, %(metadata)s)
RETURNING id;


-- name: batch_set_total
UPDATE jobqueue.batches SET total = %(total)s WHERE id = %(id)s;


-- name: batch_get
-- A batch with its jobs counted by state (both job tables, each through its batch index).
WITH hot AS (
    SELECT count(*) FILTER (WHERE lease_owner IS NULL AND run_at <= now()) AS waiting,
           count(*) FILTER (WHERE lease_owner IS NULL AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE lease_owner IS NOT NULL) AS running
    FROM jobqueue.jobs WHERE batch_id = %(id)s
),
cold AS (
    SELECT count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state = 'dead') AS dead,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled
    FROM jobqueue.finished WHERE batch_id = %(id)s
)
SELECT b.id, b.name, b.queue, b.owner, b.total, b.source, b.created_at, b.metadata,
       hot.waiting, hot.scheduled, hot.running, cold.succeeded, cold.dead, cold.cancelled
FROM jobqueue.batches b, hot, cold
WHERE b.id = %(id)s;


-- name: batch_jobs
-- One page of a batch's jobs in id order (keyset pagination: `after` is the last id seen).
SELECT id, state, payload, metadata, result, attempts, errors -> -1 AS last_error, finished_at
FROM (
    SELECT id, CASE WHEN lease_owner IS NOT NULL THEN 'running' ELSE 'waiting' END AS state,
           payload, metadata, NULL::jsonb AS result, attempts, errors,
           NULL::timestamptz AS finished_at
    FROM jobqueue.jobs WHERE batch_id = %(id)s AND id > %(after)s
    UNION ALL
    SELECT id, state, payload, metadata, result, attempts, errors, finished_at
    FROM jobqueue.finished WHERE batch_id = %(id)s AND id > %(after)s
) AS j
ORDER BY id
LIMIT %(limit)s;
