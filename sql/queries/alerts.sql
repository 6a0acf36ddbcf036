-- Alerts without Prometheus: thresholds per queue (jobqueue.alert_rules, 0016) set by
-- `jobqueue alerts set`, evaluated by the maintenance leader (jobqueue/webhooks/alerts.py),
-- delivered as webhook events (alert.firing, alert.resolved) through jobqueue.webhook_fan_out.


-- name: alert_set
-- Set one metric's threshold of a queue; a rule already firing stays firing (the next
-- evaluation decides with the new threshold).
INSERT INTO jobqueue.alert_rules (queue, metric, threshold)
VALUES (%(queue)s, %(metric)s, %(threshold)s)
ON CONFLICT (queue, metric) DO UPDATE SET threshold = excluded.threshold;


-- name: alert_list
SELECT queue, metric, threshold, firing_since, last_value, evaluated_at, created_at
FROM jobqueue.alert_rules
WHERE %(queue)s::text IS NULL OR queue = %(queue)s::text
ORDER BY queue, metric;


-- name: alert_remove
DELETE FROM jobqueue.alert_rules
WHERE queue = %(queue)s AND (%(metric)s::text IS NULL OR metric = %(metric)s::text)
RETURNING metric;


-- name: alert_evaluate
-- One maintenance pass over every rule, in one statement that takes the leader's
-- transaction-level lock itself (as rescue_dead does): measure, store the value, and send
-- an event only where the state flips. So an alert that stays over its threshold sends
-- nothing more, and exactly one alert.resolved follows when it drops back (value <= threshold).
-- The rows are locked, so a second leader-to-be (there is none while the lock is held)
-- could not send the same flip twice; event ids name the rule and the time it started
-- firing, so even a repeated pass could not deliver one flip twice.
-- The measures:
--   depth   `lease_owner IS NULL AND run_at <= now()` is job_state's 'waiting', which the
--           claim index serves; counted up to threshold + 100,000 only, so a huge backlog
--           costs a bounded scan every pass (the message then says "at least").
--   latency the age of the oldest of those (the same index).
--   dead    the trigger-kept finished_counts: never a scan of `finished`.
WITH leader AS MATERIALIZED (
    SELECT pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance')) AS ok
),
rules AS MATERIALIZED (
    SELECT r.queue, r.metric, r.threshold, r.firing_since
    FROM jobqueue.alert_rules r
    WHERE (SELECT ok FROM leader)
    ORDER BY r.queue, r.metric
    FOR UPDATE
),
measured AS MATERIALIZED (
    SELECT r.*, CASE r.metric
        WHEN 'depth' THEN (
            SELECT count(*) FROM (
                SELECT 1 FROM jobqueue.jobs j
                WHERE j.queue = r.queue AND j.lease_owner IS NULL AND j.run_at <= now()
                LIMIT (r.threshold + 100000)::bigint) AS w)::float8
        WHEN 'latency' THEN coalesce((
            SELECT extract(epoch FROM now() - min(j.run_at))::float8 FROM jobqueue.jobs j
            WHERE j.queue = r.queue AND j.lease_owner IS NULL AND j.run_at <= now()), 0)
        ELSE coalesce((
            SELECT c.count FROM jobqueue.finished_counts c
            WHERE c.queue = r.queue AND c.state = 'dead'), 0)::float8
    END AS value
    FROM rules r
),
updated AS (
    UPDATE jobqueue.alert_rules a
    SET last_value = m.value, evaluated_at = now(),
        firing_since = CASE WHEN m.value > m.threshold THEN coalesce(a.firing_since, now()) END
    FROM measured m
    WHERE a.queue = m.queue AND a.metric = m.metric
    RETURNING a.queue, a.metric, a.threshold, m.value, m.firing_since AS was_firing_since,
              a.firing_since,
              m.metric = 'depth' AND m.value >= m.threshold + 100000 AS at_least
),
flips AS MATERIALIZED (
    SELECT u.*,
           CASE WHEN u.firing_since IS NOT NULL THEN 'alert.firing'
                ELSE 'alert.resolved' END AS type
    FROM updated u
    WHERE (u.firing_since IS NULL) <> (u.was_firing_since IS NULL)
),
sent AS (
    SELECT jobqueue.webhook_fan_out(
        array_agg(f.type || ':' || f.queue || ':' || f.metric || ':'
                  || extract(epoch FROM coalesce(f.firing_since, f.was_firing_since))),
        array_agg(f.type), array_agg(NULL::text),
        array_agg(jsonb_build_object('alert', jsonb_build_object(
            'queue', f.queue, 'metric', f.metric, 'threshold', f.threshold,
            'value', f.value, 'at_least', f.at_least,
            'state', CASE WHEN f.type = 'alert.firing' THEN 'firing' ELSE 'resolved' END,
            'firing_since', coalesce(f.firing_since, f.was_firing_since))))) AS deliveries
    FROM flips f
    HAVING count(*) > 0
)
SELECT f.queue, f.metric, f.type, f.value, f.threshold, (SELECT deliveries FROM sent)
FROM flips f;
