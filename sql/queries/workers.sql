-- Worker processes: registration, heartbeat, the maintenance lock, pruning stale rows.

-- name: register_worker
INSERT INTO jobqueue.workers (id, host, pid, queue, concurrency, connections)
VALUES (%(id)s, %(host)s, %(pid)s, %(queue)s, %(concurrency)s, %(connections)s)
ON CONFLICT (id) DO UPDATE SET last_seen_at = now();


-- name: touch_worker
-- The heartbeat: in flight and connections held are the process's own counts, so they are
-- right behind PgBouncer too (where pg_stat_activity shows the pooler's connections).
-- Claimed and finished (0027): the process's counters since it started.
INSERT INTO jobqueue.workers (id, host, pid, queue, concurrency, in_flight, connections,
                              claimed, finished)
VALUES (%(id)s, %(host)s, %(pid)s, %(queue)s, %(concurrency)s, %(in_flight)s, %(connections)s,
        %(claimed)s, %(finished)s)
ON CONFLICT (id) DO UPDATE
SET last_seen_at = now(), in_flight = excluded.in_flight, connections = excluded.connections,
    claimed = excluded.claimed, finished = excluded.finished
-- An operator's request (0023, the dashboard's Workers page): 'quiet' or 'stop'.
RETURNING control;


-- name: unregister_worker
DELETE FROM jobqueue.workers WHERE id = %(id)s;


-- name: list_workers
-- `queue` is the comma-separated list of the queues the process serves.
SELECT id, host, pid, queue, concurrency, started_at, last_seen_at, in_flight, connections
FROM jobqueue.workers ORDER BY queue, started_at;


-- name: prune_workers
-- Worker rows whose heartbeat stopped long ago (the process died without unregistering).
-- Maintenance: gated by the leader's lock like rescue_dead.
DELETE FROM jobqueue.workers
WHERE last_seen_at < now() - make_interval(secs => %(stale_seconds)s)
  AND pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance'));


-- name: worker_control
-- The dashboard asks a worker to quiet (claim nothing more) or stop (finish in-flight work
-- and exit); its heartbeat reads the column. A stop is never turned back into a quiet.
UPDATE jobqueue.workers
SET control = CASE WHEN control = 'stop' THEN 'stop' ELSE %(control)s END,
    control_by = %(by)s
WHERE id = %(id)s
RETURNING id, control;
