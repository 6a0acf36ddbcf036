-- The dashboard's queries (web/dashboard.py).
--
-- Job filters. Every query that lists or changes "the jobs matching a filter" calls
-- jobqueue.dashboard_match (sql/migrations/0005_dashboard_filter.sql) on a relation aliased `j` with the
-- columns id, queue, kind, owner, batch_id, state, payload, metadata and errors. A NULL
-- parameter means "any"; `ids` restricts to selected jobs, `upto` to the jobs that existed
-- when the operator confirmed a bulk action. The dashboard runs these queries unprepared and
-- the function is inlined, so each is planned with its actual values: `NULL IS NULL OR ...`
-- folds away and the indexes apply (the dead-letter index for state = 'dead', the batch
-- indexes).
--
-- Listing pages never scan an unbounded number of finished rows: dashboard_jobs_window finds
-- an id window (the `scan` newest ids below the cursor, through the primary keys only), and
-- dashboard_jobs_page filters inside it. A selective filter may fill less than a page from one
-- window; the "older" link then continues below the window.

-- name: dashboard_throughput
-- Jobs finished per minute by outcome, one row per minute (zeros included) from `since` (or
-- an hour ago; never earlier) to the current minute. Bounded by finished_at, which the BRIN
-- index turns into a scan of those minutes' blocks only. The dashboard keeps the complete
-- minutes it has read and asks only for newer ones: at a million jobs an hour, the whole hour
-- is a million rows to count, the current minute about 17,000.
WITH span AS (
    SELECT greatest(%(since)s::timestamptz,
                    date_trunc('minute', now()) - interval '59 minutes') AS since,
           date_trunc('minute', now()) AS current
)
SELECT m.minute,
       coalesce(f.succeeded, 0) AS succeeded, coalesce(f.dead, 0) AS dead,
       coalesce(f.cancelled, 0) AS cancelled
FROM span
CROSS JOIN generate_series(span.since, span.current, interval '1 minute') AS m(minute)
LEFT JOIN (
    SELECT date_trunc('minute', finished_at) AS minute,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state = 'dead') AS dead,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled
    FROM jobqueue.finished
    WHERE finished_at >= (SELECT since FROM span)
    GROUP BY 1
) AS f ON f.minute = m.minute
ORDER BY m.minute;

-- name: dashboard_jobs_window
-- The id window one page of the job list may examine: the `scan` newest ids below the cursor
-- across both tables. A merge of two backward primary-key scans (index-only on `finished`
-- once vacuumed), so it costs the same whatever the filter. `floor` is the lowest id in the
-- window; `scanned` < `scan` means the window reaches the oldest job.
-- (The condition stays outside the UNION ALL: inside each branch, Postgres 15 plans a sort
-- of every id instead of the merge.)
SELECT min(id) AS floor, count(*) AS scanned
FROM (
    SELECT id
    FROM (SELECT id FROM jobqueue.jobs UNION ALL SELECT id FROM jobqueue.finished) AS ids
    WHERE id < %(before)s
    ORDER BY id DESC
    LIMIT %(scan)s
) AS w;

-- name: dashboard_jobs_page
-- One page of the job list, newest first, from both tables, inside the window found above.
SELECT j.id, j.queue, j.kind, j.state, j.attempts, j.max_attempts, j.owner, j.batch_id,
       j.created_at, j.finished_at, j.errors -> -1 ->> 'type' AS error_type,
       left(j.errors -> -1 ->> 'message', 200) AS error_message,
       left(j.payload::text, 200) AS preview
FROM (
    SELECT id, queue, kind,
           CASE WHEN lease_owner IS NOT NULL THEN 'running'
                WHEN run_at > now() THEN 'scheduled' ELSE 'waiting' END AS state,
           attempts, max_attempts, owner, batch_id, payload, metadata, errors, created_at,
           NULL::timestamptz AS finished_at
    FROM jobqueue.jobs
    UNION ALL
    SELECT id, queue, kind, state, attempts, max_attempts, owner, batch_id, payload, metadata,
           errors, created_at, finished_at
    FROM jobqueue.finished
) AS j
WHERE j.id < %(before)s AND j.id >= %(floor)s
  AND jobqueue.dashboard_match(
      j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
      j.errors, NULL, NULL,
      %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
      %(state)s::text, %(text)s::text)
ORDER BY j.id DESC
LIMIT %(limit)s;

-- name: dashboard_match_counts
-- What a bulk action on "everything matching this filter" would touch, by state, for the
-- confirmation page; `upto` (the newest matching id) bounds the action that follows, so jobs
-- arriving after the operator looked are left alone. Unlike the list this counts the whole
-- table: it runs only when an operator asks, under a statement timeout.
SELECT j.state, count(*) AS count, max(j.id) AS upto
FROM (
    SELECT id, queue, kind, owner, batch_id, payload, metadata, errors,
           CASE WHEN lease_owner IS NOT NULL THEN 'running'
                WHEN run_at > now() THEN 'scheduled' ELSE 'waiting' END AS state
    FROM jobqueue.jobs
    UNION ALL
    SELECT id, queue, kind, owner, batch_id, payload, metadata, errors, state
    FROM jobqueue.finished
) AS j
WHERE jobqueue.dashboard_match(
    j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
    j.errors, %(ids)s::bigint[], %(upto)s::bigint,
    %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
    %(state)s::text, %(text)s::text)
GROUP BY j.state;

-- name: dashboard_statement_timeout
-- For the rest of the transaction (SET cannot take a bound parameter; set_config can).
SELECT set_config('statement_timeout', %(timeout)s, true);

-- name: dashboard_retry
-- Retry the matching dead and cancelled jobs: back to the hot table with a fresh attempt
-- budget and their error history (as revive_finished does for one queue). One notification
-- for the id range instead of one per job, so retrying 100,000 jobs sends one message.
WITH revived AS (
    DELETE FROM jobqueue.finished AS j
    WHERE j.state IN ('dead', 'cancelled')
      AND jobqueue.dashboard_match(
          j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
          j.errors, %(ids)s::bigint[], %(upto)s::bigint,
          %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
          %(state)s::text, %(text)s::text)
    RETURNING id, queue, kind, payload, priority, max_attempts, timeout_seconds, errors,
              progress, owner, batch_id, idempotency_key, metadata, created_at
),
inserted AS (
    INSERT INTO jobqueue.jobs
        (id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
         errors, progress, owner, batch_id, idempotency_key, metadata, created_at)
    SELECT id, queue, kind, payload, priority, now(), 0, max_attempts, timeout_seconds,
           errors, progress, owner, batch_id, idempotency_key, metadata, created_at
    FROM revived
    RETURNING id
)
SELECT count(*) AS retried,
       (SELECT count(*) FROM (SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id))
                              FROM inserted HAVING count(*) > 0) AS n) AS announced
FROM inserted;

-- name: dashboard_cancel
-- Cancel the matching hot jobs: waiting and scheduled ones move to `finished` as cancelled at
-- once; running ones are flagged and their workers told (they end the job as cancelled).
-- Fenced on lease_owner like cancel_waiting, so a job claimed meanwhile is not moved.
WITH hot AS (
    SELECT j.id, j.lease_owner
    FROM (SELECT id, queue, kind, owner, batch_id, payload, metadata, errors, lease_owner,
                 CASE WHEN lease_owner IS NOT NULL THEN 'running'
                      WHEN run_at > now() THEN 'scheduled' ELSE 'waiting' END AS state
          FROM jobqueue.jobs) AS j
    WHERE jobqueue.dashboard_match(
        j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
        j.errors, %(ids)s::bigint[], %(upto)s::bigint,
        %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
        %(state)s::text, %(text)s::text)
),
gone AS (
    DELETE FROM jobqueue.jobs
    WHERE id IN (SELECT id FROM hot WHERE lease_owner IS NULL) AND lease_owner IS NULL
    RETURNING id, queue, kind, payload, priority, run_at, attempts, max_attempts,
              timeout_seconds, errors, progress, owner, batch_id, idempotency_key, metadata,
              created_at, started_at
),
moved AS (
    INSERT INTO jobqueue.finished
        (id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
         state, result, errors, progress, owner, batch_id, idempotency_key, metadata,
         created_at, started_at)
    SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
           'cancelled', NULL, errors, progress, owner, batch_id, idempotency_key, metadata,
           created_at, started_at
    FROM gone
    RETURNING id
),
flagged AS (
    UPDATE jobqueue.jobs SET cancel_requested = true
    WHERE id IN (SELECT id FROM hot WHERE lease_owner IS NOT NULL) AND lease_owner IS NOT NULL
    RETURNING id
)
SELECT (SELECT count(*) FROM moved) AS cancelled,
       (SELECT count(pg_notify('jobqueue_cancel', id::text)) FROM flagged) AS requested,
       (SELECT count(*) FROM (SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id))
                              FROM moved HAVING count(*) > 0) AS n) AS announced;

-- name: dashboard_delete
-- Delete the matching jobs: finished ones, and hot ones that are not running (a running job
-- belongs to its worker; cancel it first). Their idempotency keys go too, so a key can be
-- used again. The finished_counts trigger keeps the counts right.
WITH cold AS (
    DELETE FROM jobqueue.finished AS j
    WHERE jobqueue.dashboard_match(
        j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
        j.errors, %(ids)s::bigint[], %(upto)s::bigint,
        %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
        %(state)s::text, %(text)s::text)
    RETURNING id
),
hot AS (
    DELETE FROM jobqueue.jobs
    WHERE lease_owner IS NULL AND id IN (
        SELECT j.id
        FROM (SELECT id, queue, kind, owner, batch_id, payload, metadata, errors,
                     CASE WHEN run_at > now() THEN 'scheduled' ELSE 'waiting' END AS state
              FROM jobqueue.jobs WHERE lease_owner IS NULL) AS j
        WHERE jobqueue.dashboard_match(
            j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
            j.errors, %(ids)s::bigint[], %(upto)s::bigint,
            %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
            %(state)s::text, %(text)s::text))
    RETURNING id
),
keys AS (
    DELETE FROM jobqueue.idempotency_keys
    WHERE job_id IN (SELECT id FROM cold UNION ALL SELECT id FROM hot)
)
-- Followers of these jobs (SSE, ?wait=) are told at once that something changed: they find
-- the job gone.
SELECT (SELECT count(*) FROM cold) + (SELECT count(*) FROM hot) AS deleted,
       (SELECT count(*) FROM (SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id))
                              FROM (SELECT id FROM cold UNION ALL SELECT id FROM hot) AS d
                              HAVING count(*) > 0) AS n) AS announced;

-- name: dashboard_dead
-- The newest dead jobs, optionally of one queue. The dead-letter index is per queue, so take
-- the newest `limit` of each queue that has dead jobs (from finished_counts) and merge them:
-- a few index probes instead of sorting every dead row.
SELECT d.id, d.queue, d.kind, d.attempts, d.finished_at, d.last_error
FROM jobqueue.finished_counts c
CROSS JOIN LATERAL (
    SELECT id, queue, kind, attempts, finished_at, errors -> -1 AS last_error
    FROM jobqueue.finished
    WHERE state = 'dead' AND queue = c.queue
    ORDER BY finished_at DESC
    LIMIT %(limit)s
) AS d
WHERE c.state = 'dead' AND c.count > 0
  AND (%(queue)s::text IS NULL OR c.queue = %(queue)s::text)
ORDER BY d.finished_at DESC
LIMIT %(limit)s;

-- name: dashboard_batches
-- A page of batches, newest first, each with its jobs counted by state through the batch
-- indexes of both tables.
WITH page AS (
    SELECT id, name, queue, owner, total, source, created_at
    FROM jobqueue.batches
    WHERE id < %(before)s
    ORDER BY id DESC
    LIMIT %(limit)s
)
SELECT p.id, p.name, p.queue, p.owner, p.total, p.source, p.created_at,
       h.waiting, h.scheduled, h.running, c.succeeded, c.dead, c.cancelled
FROM page p
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE lease_owner IS NULL AND run_at <= now()) AS waiting,
           count(*) FILTER (WHERE lease_owner IS NULL AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE lease_owner IS NOT NULL) AS running
    FROM jobqueue.jobs WHERE batch_id = p.id
) AS h
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state = 'dead') AS dead,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled
    FROM jobqueue.finished WHERE batch_id = p.id
) AS c
ORDER BY p.id DESC;

-- name: dashboard_workers
-- Worker processes with their heartbeat's age (database clock) and the leases they hold now.
SELECT w.id, w.host, w.pid, w.queue, w.concurrency, w.in_flight, w.started_at, w.last_seen_at,
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
