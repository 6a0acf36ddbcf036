-- Webhooks: subscriptions, their deliveries, redelivery and events raised from Python
-- (jobqueue/webhooks/). The fan-out itself (events -> deliveries -> jobs on the `webhooks`
-- queue) is the SQL function jobqueue.webhook_fan_out (0016_webhooks_alerts.sql; the jobs'
-- rounds in a fair queue since 0028), which the finished-jobs trigger calls too. An owner of
-- NULL in a filter means every owner (admins).


-- name: webhook_create
-- The secret is returned here, once; no other query selects it but webhook_delivery_load.
INSERT INTO jobqueue.webhook_subscriptions (owner, url, events, secret, format, max_attempts,
                                            description)
VALUES (%(owner)s, %(url)s, %(events)s, %(secret)s, %(format)s, %(max_attempts)s,
        %(description)s)
RETURNING id, owner, url, events, format, max_attempts, description, created_at, secret;


-- name: webhook_list
SELECT id, owner, url, events, format, max_attempts, description, created_at
FROM jobqueue.webhook_subscriptions
WHERE %(owner)s::text IS NULL OR owner = %(owner)s::text
ORDER BY id;


-- name: webhook_get
SELECT id, owner, url, events, format, max_attempts, description, created_at
FROM jobqueue.webhook_subscriptions
WHERE id = %(id)s AND (%(owner)s::text IS NULL OR owner = %(owner)s::text);


-- name: webhook_remove
-- Its deliveries go with it (ON DELETE CASCADE); their queued jobs find no delivery and end.
DELETE FROM jobqueue.webhook_subscriptions
WHERE id = %(id)s AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
RETURNING id;


-- name: webhook_emit
-- One event from Python (schedule.failed, or any caller's): see jobqueue.webhooks.emit.
SELECT jobqueue.webhook_fan_out(ARRAY[%(event_id)s::text], ARRAY[%(event_type)s::text],
                                ARRAY[%(owner)s::text], ARRAY[%(data)s::jsonb]) AS deliveries;


-- name: webhook_deliveries
-- The newest deliveries, of one subscription or of all those an owner may see, optionally in
-- one state; the subscription's URL for the reader.
SELECT d.id, d.subscription_id, s.owner, s.url, d.event_id, d.event_type, d.state,
       d.attempts, d.response_code, d.last_error, d.job_id, d.created_at, d.updated_at
FROM jobqueue.webhook_deliveries d
JOIN jobqueue.webhook_subscriptions s ON s.id = d.subscription_id
WHERE (%(subscription_id)s::bigint IS NULL OR d.subscription_id = %(subscription_id)s::bigint)
  AND (%(owner)s::text IS NULL OR s.owner = %(owner)s::text)
  AND (%(state)s::text IS NULL OR d.state = %(state)s::text)
ORDER BY d.id DESC
LIMIT %(limit)s;


-- name: webhook_redeliver
-- Send a delivery again: same body and event id, a new job with a fresh attempt budget.
-- Refused (no row) while its current job is still queued or running: one job per delivery.
-- The row lock (FOR UPDATE via UPDATE) makes two concurrent redeliveries queue one job.
WITH target AS MATERIALIZED (
    SELECT d.id, s.max_attempts
    FROM jobqueue.webhook_deliveries d
    JOIN jobqueue.webhook_subscriptions s ON s.id = d.subscription_id
    WHERE d.id = %(id)s AND (%(owner)s::text IS NULL OR s.owner = %(owner)s::text)
    FOR UPDATE OF d
),
renewed AS (
    UPDATE jobqueue.webhook_deliveries d
    SET job_id = nextval('jobqueue.job_id_seq'), state = 'pending', updated_at = now()
    FROM target t
    WHERE d.id = t.id AND NOT EXISTS (SELECT 1 FROM jobqueue.jobs j WHERE j.id = d.job_id)
    RETURNING d.id, d.job_id, t.max_attempts
),
-- Its round when the webhooks queue is fair, as jobqueue.webhook_fan_out gives them (no
-- call, and no lock, when the redelivery is refused).
queued AS (
    INSERT INTO jobqueue.jobs (id, queue, kind, payload, max_attempts, fair_round)
    SELECT job_id, 'webhooks', 'webhook.deliver', jsonb_build_object('delivery_id', id),
           max_attempts,
           (jobqueue.fair_rounds(1, '{}', 'webhooks', '{}', NULL, '{}', NULL))[1]
    FROM renewed
    RETURNING id
)
SELECT t.id, r.job_id, r.job_id IS NOT NULL AS queued
FROM target t LEFT JOIN renewed r ON r.id = t.id;


-- name: webhook_delivery_load
-- What the delivery task needs: the body, where to send it and the key to sign it with.
-- `current`: this job is still the delivery's job (a redelivery since then has its own).
SELECT d.id, d.event_id, d.event_type, d.body::text AS body, d.job_id = %(job_id)s AS current,
       s.id AS subscription_id, s.url, s.secret, s.format
FROM jobqueue.webhook_deliveries d
JOIN jobqueue.webhook_subscriptions s ON s.id = d.subscription_id
WHERE d.id = %(id)s;


-- name: webhook_delivery_record
-- One attempt's outcome, by the delivery's current job only (a stale job of a delivery that
-- was redelivered meanwhile records nothing).
UPDATE jobqueue.webhook_deliveries
SET state = %(state)s, attempts = attempts + 1, response_code = %(response_code)s,
    last_error = %(error)s, updated_at = now()
WHERE id = %(id)s AND job_id = %(job_id)s;


-- name: webhook_deliveries_prune
-- Maintenance: deliveries past the retention of finished jobs, a bounded slice at a time,
-- except those whose job is still queued. Leader-gated like the queue's own pruning.
WITH leader AS MATERIALIZED (
    SELECT pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance')) AS ok
),
doomed AS (
    DELETE FROM jobqueue.webhook_deliveries
    WHERE id IN (SELECT d.id FROM jobqueue.webhook_deliveries d
                 WHERE d.created_at < now() - make_interval(secs => %(retention_seconds)s)
                   AND NOT EXISTS (SELECT 1 FROM jobqueue.jobs j WHERE j.id = d.job_id)
                   AND (SELECT ok FROM leader)
                 LIMIT %(limit)s)
    RETURNING id
)
SELECT count(*) AS pruned FROM doomed;
