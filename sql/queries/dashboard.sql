-- The dashboard's queries that are not about jobs' states (web/dashboard.py): workers, rate
-- limits, cache. Its job lists, counts and bulk actions are in jobs.sql, run through
-- jobqueue/db/store.py like every other job read and transition.


-- name: dashboard_statement_timeout
-- For the rest of the transaction (SET cannot take a bound parameter; set_config can).
SELECT set_config('statement_timeout', %(timeout)s, true);


-- name: dashboard_workers
-- Worker processes with their heartbeat's age (database clock) and the leases they hold now.
-- `control`: an operator asked it to quiet or stop (0023), `control_by` who.
-- `claimed`, `finished`: the process's counters since it started (0027), `connections` held.
SELECT w.id, w.host, w.pid, w.queue, w.concurrency, w.in_flight, w.started_at, w.last_seen_at,
       w.control, w.control_by, w.claimed, w.finished, w.connections,
       extract(epoch FROM now() - w.last_seen_at)::float8 AS heartbeat_age,
       (SELECT count(*) FROM jobqueue.jobs j WHERE j.lease_owner = w.id) AS leased
FROM jobqueue.workers w
ORDER BY w.queue, w.started_at;


-- name: dashboard_limits
-- Rate-limit state per (platform, model, key), levels refilled to now as in rate_state, and
-- how much longer a 429 keeps the key blocked.
SELECT platform, model, key_id, rpm, tpm, rpm_configured, tpm_configured,
       least(greatest(1.0, rpm * burst_seconds / 60.0),
             req_level + extract(epoch FROM now() - updated_at) * rpm / 60.0)::float8
           AS req_available,
       least(greatest(1.0, tpm * burst_seconds / 60.0),
             tok_level + extract(epoch FROM now() - updated_at) * tpm / 60.0)::float8
           AS tok_available,
       greatest(0, extract(epoch FROM blocked_until - now()))::float8 AS blocked_seconds,
       disabled_reason, requests_total, tokens_total, throttled_total
FROM jobqueue.rate_buckets
ORDER BY platform, model, key_id;


-- name: dashboard_cache
-- The LLM response cache: live answers, calls in flight, and hits. Every stored row began as a
-- miss (one real call), so hits / (hits + stored) is the hit rate over what is still stored.
SELECT count(*) FILTER (WHERE response IS NOT NULL AND expires_at > now()) AS entries,
       count(*) FILTER (WHERE response IS NULL AND pending_until > now()) AS in_flight,
       count(*) AS stored,
       coalesce(sum(hits), 0)::bigint AS hits
FROM jobqueue.llm_cache;
