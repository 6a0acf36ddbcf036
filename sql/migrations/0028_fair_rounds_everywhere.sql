-- 0028: every INSERT into jobqueue.jobs writes its rows' rounds itself; the net goes.
--
-- Since 0020 the enqueue statements (sql/queries/jobs.sql) take their rows' rounds from
-- jobqueue.fair_rounds and write them with the rows. The statement trigger jobs_fair_rounds
-- stayed as a net for the other inserts: released children of a workflow (release_ready)
-- and webhook delivery jobs (webhook_fan_out, and webhook_redeliver in
-- sql/queries/webhooks.sql). Those now ask fair_rounds too, so the net numbers nothing, yet
-- it ran for every insert statement (a lock and two probes; for its rows, an UPDATE that
-- wrote each row twice) and repeated fair_rounds' logic. It is dropped: an INSERT into a
-- fair queue must bring its rows' rounds (a row without one is invisible to the fair claim).

-- The second half of the release step (0015): of the blocked jobs `candidates`, those with
-- no parent left to wait for move to `jobs` (the insert trigger wakes the workers), those of
-- fair queues with their rounds, oldest first, as new jobs get them (insert_jobs). A batch's
-- callback (completes_batch) receives the batch id and how its members ended, and this is
-- the one place where a batch completes: batches.completed_at is set and
-- `jobqueue_batch_completed` carries its id. Called by release_children, and directly for a
-- job that waits for nothing (a callback of a batch whose rows were all duplicates).
CREATE OR REPLACE FUNCTION jobqueue.release_ready(candidates bigint[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH ready AS (
        DELETE FROM jobqueue.blocked b
        WHERE b.id = ANY(candidates) AND b.waiting_on = 0
        RETURNING b.*
    ),
    numbered AS MATERIALIZED (
        SELECT ready.*, row_number() OVER (ORDER BY ready.id) AS nth FROM ready
    ),
    rounds AS MATERIALIZED (
        SELECT jobqueue.fair_rounds(count(*)::int, array_agg(queue ORDER BY nth), NULL,
                                    array_agg(priority ORDER BY nth), NULL,
                                    array_agg(owner ORDER BY nth), NULL) AS rounds
        FROM numbered HAVING count(*) > 0  -- nothing released: no call, no lock
    ),
    inserted AS (
        INSERT INTO jobqueue.jobs
            (id, queue, kind, payload, priority, run_at, max_attempts, timeout_seconds,
             owner, batch_id, idempotency_key, metadata, created_at, has_children, fair_round)
        SELECT r.id, r.queue, r.kind,
               CASE WHEN r.completes_batch IS NULL THEN r.payload
                    ELSE r.payload || jsonb_build_object(
                        'batch_id', r.completes_batch,
                        'counts', jsonb_build_object(
                            'total', bt.total,
                            'succeeded', r.parents_succeeded,
                            'dead', r.parents_dead,
                            'cancelled', r.parents_cancelled,
                            'duplicates', (SELECT count(*) FROM jobqueue.batch_duplicates d
                                           WHERE d.batch_id = r.completes_batch)))
               END,
               r.priority, coalesce(r.run_at, now()), r.max_attempts, r.timeout_seconds,
               r.owner, r.batch_id, r.idempotency_key, r.metadata, r.created_at,
               r.has_children, f.rounds[r.nth]
        FROM numbered r CROSS JOIN rounds f
        LEFT JOIN jobqueue.batches bt ON bt.id = r.completes_batch
        RETURNING id
    ),
    completed AS (
        UPDATE jobqueue.batches bt SET completed_at = now()
        FROM ready r WHERE bt.id = r.completes_batch
        RETURNING bt.id, pg_notify('jobqueue_batch_completed', bt.id::text)
    )
    SELECT count(*) INTO n
    FROM inserted
    LEFT JOIN (SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id))
               FROM inserted HAVING count(*) > 0) AS told ON true
    LEFT JOIN (SELECT count(*) FROM completed) AS c ON true;
    RETURN n;
END;
$$;

-- Send events to the subscriptions that want them (0016): one delivery row and one job on
-- the `webhooks` queue each (the job's payload names the delivery; the worker's built-in
-- `webhook.deliver` task sends it), with its round when that queue is fair. Arrays in, so
-- one call serves a whole finish statement. An event whose owner is NULL (alerts) goes to
-- every subscription naming its type. Returns the deliveries made. Callable by anyone's
-- SQL: jobqueue.webhooks.emit() wraps it.
CREATE OR REPLACE FUNCTION jobqueue.webhook_fan_out(
    event_ids text[], event_types text[], owners text[], data jsonb[]
) RETURNS integer LANGUAGE sql VOLATILE AS $$
    WITH events AS (
        SELECT * FROM unnest(event_ids, event_types, owners, data) AS e(id, type, owner, data)
    ),
    delivered AS (
        INSERT INTO jobqueue.webhook_deliveries (subscription_id, event_id, event_type, body)
        SELECT s.id, e.id, e.type, jsonb_build_object(
                   'id', e.id, 'type', e.type, 'created_at', now(), 'data', e.data)
        FROM events e
        JOIN jobqueue.webhook_subscriptions s
          ON e.type = ANY(s.events) AND (e.owner IS NULL OR s.owner = e.owner)
        ORDER BY s.id, e.id
        ON CONFLICT (subscription_id, event_id) DO NOTHING
        RETURNING id, subscription_id, job_id
    ),
    -- Every job goes to one queue, at the default priority, without an owner: fair_rounds
    -- takes those as `_all` values.
    numbered AS MATERIALIZED (
        SELECT d.id, d.job_id, s.max_attempts, row_number() OVER (ORDER BY d.job_id) AS nth
        FROM delivered d JOIN jobqueue.webhook_subscriptions s ON s.id = d.subscription_id
    ),
    rounds AS MATERIALIZED (
        SELECT jobqueue.fair_rounds(count(*)::int, '{}', 'webhooks', '{}', NULL, '{}', NULL)
                   AS rounds
        FROM numbered HAVING count(*) > 0  -- no delivery: no call, no lock
    ),
    queued AS (
        INSERT INTO jobqueue.jobs (id, queue, kind, payload, max_attempts, fair_round)
        SELECT n.job_id, 'webhooks', 'webhook.deliver', jsonb_build_object('delivery_id', n.id),
               n.max_attempts, r.rounds[n.nth]
        FROM numbered n, rounds r
        RETURNING id
    )
    SELECT count(*)::integer FROM queued
$$;

DROP TRIGGER jobs_fair_rounds ON jobqueue.jobs;
DROP FUNCTION jobqueue.assign_fair_rounds();
