-- Every query jobqueue runs, loaded once into a dict by jobqueue/queries.py. Each starts with a
-- `-- name: NAME` line; parameters are psycopg's named placeholders and are always bound.
-- Column lists are spelled out (no `*` across tables) so a migration cannot silently reorder
-- what a move from `jobs` to `finished` writes.

-- name: insert_jobs
-- Batch enqueue in one round trip: one array per column, unnest()ed into rows (single jobs use
-- insert_job, batches of 1,000 or more COPY).
-- A column with the same value in every row is sent once as `<column>_all` with an empty
-- array (unnest pads a shorter array with NULLs): 20,000 copies of "default" cost nothing.
INSERT INTO jobqueue.jobs
    (queue, kind, payload, priority, run_at, max_attempts, timeout_seconds, owner, batch_id,
     metadata)
SELECT coalesce(queue, %(queue_all)s::text), coalesce(kind, %(kind_all)s::text),
       payload::jsonb, coalesce(priority, %(priority_all)s::smallint),
       coalesce(run_at, %(run_at_all)s::timestamptz, now()),
       coalesce(max_attempts, %(max_attempts_all)s::int),
       coalesce(timeout_seconds, %(timeout_seconds_all)s::real),
       coalesce(owner, %(owner_all)s::text), coalesce(batch_id, %(batch_id_all)s::bigint),
       coalesce(metadata, %(metadata_all)s::text)::jsonb
FROM unnest(%(queue)s::text[], %(kind)s::text[], %(payload)s::text[], %(priority)s::smallint[],
            %(run_at)s::timestamptz[], %(max_attempts)s::int[], %(timeout_seconds)s::real[],
            %(owner)s::text[], %(batch_id)s::bigint[], %(metadata)s::text[])
    AS t(queue, kind, payload, priority, run_at, max_attempts, timeout_seconds, owner, batch_id,
         metadata)
RETURNING id;

-- name: insert_job
-- One job without an idempotency key (Client.enqueue, the web API's POST): plain VALUES, so
-- neither side builds or unpacks arrays for a single row.
INSERT INTO jobqueue.jobs
    (queue, kind, payload, priority, run_at, max_attempts, timeout_seconds, owner, batch_id,
     metadata)
VALUES (%(queue)s, %(kind)s, %(payload)s::jsonb, %(priority)s,
        coalesce(%(run_at)s::timestamptz, now()), %(max_attempts)s, %(timeout_seconds)s,
        %(owner)s, %(batch_id)s, %(metadata)s::jsonb)
RETURNING id;

-- name: reserve_job_ids
-- Large batches load with COPY, which returns nothing: draw their ids first (in input order),
-- with the database's clock for rows that give no run_at.
-- Sorted, so rows keep their input order in the claim's (priority, run_at, id) order.
SELECT now() AS now, array_agg(id ORDER BY id) AS ids
FROM (SELECT nextval('jobqueue.job_id_seq') AS id FROM generate_series(1, %(n)s)) AS drawn;

-- name: copy_jobs
-- {columns} is filled with column names only (psycopg.sql.Identifier): id, queue, kind,
-- payload, and of the others those where some row differs from the table's default, so a
-- batch of plain jobs sends four columns per row, not eleven.
COPY jobqueue.jobs ({columns}) FROM STDIN;

-- name: insert_jobs_idempotent
-- The same insert for batches where some rows carry an idempotency key. Ids are drawn first
-- so a key can be claimed for its row before the row exists; a row whose key is already held
-- (by an earlier job, or an earlier row of this batch) is not inserted and reports the holder.
-- `held_by` is NULL only when a concurrent transaction took the key after this statement's
-- snapshot; the caller then reads it again.
WITH input AS MATERIALIZED (
    SELECT t.*, nextval('jobqueue.job_id_seq') AS new_id
    FROM unnest(%(queue)s::text[], %(kind)s::text[], %(payload)s::text[],
                %(priority)s::smallint[], %(run_at)s::timestamptz[], %(max_attempts)s::int[],
                %(timeout_seconds)s::real[], %(owner)s::text[], %(batch_id)s::bigint[],
                %(metadata)s::text[], %(idempotency_key)s::text[])
        WITH ORDINALITY AS t(queue, kind, payload, priority, run_at, max_attempts,
                             timeout_seconds, owner, batch_id, metadata, idempotency_key, ord)
),
claimed AS (
    INSERT INTO jobqueue.idempotency_keys (owner, key, job_id)
    SELECT coalesce(owner, ''), idempotency_key, new_id FROM input
    WHERE idempotency_key IS NOT NULL
    ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING owner, key, job_id
),
inserted AS (
    INSERT INTO jobqueue.jobs
        (id, queue, kind, payload, priority, run_at, max_attempts, timeout_seconds, owner,
         batch_id, idempotency_key, metadata)
    SELECT new_id, queue, kind, payload::jsonb, priority, coalesce(run_at, now()),
           max_attempts, timeout_seconds, owner, batch_id, idempotency_key, metadata::jsonb
    FROM input
    WHERE idempotency_key IS NULL OR new_id IN (SELECT job_id FROM claimed)
    RETURNING id
)
SELECT i.ord,
       coalesce(ins.id, c.job_id, k.job_id) AS id,
       ins.id IS NOT NULL AS created
FROM input i
LEFT JOIN inserted ins ON ins.id = i.new_id
LEFT JOIN claimed c ON c.owner = coalesce(i.owner, '') AND c.key = i.idempotency_key
LEFT JOIN jobqueue.idempotency_keys k
       ON k.owner = coalesce(i.owner, '') AND k.key = i.idempotency_key
ORDER BY i.ord;

-- name: find_idempotent
SELECT job_id FROM jobqueue.idempotency_keys WHERE owner = %(owner)s AND key = %(key)s;

-- name: get_job
-- One statement over both tables: a job moves between them inside one transaction, so a single
-- snapshot sees it in exactly one.
SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
       CASE WHEN lease_owner IS NOT NULL THEN 'running'
            WHEN run_at > now() THEN 'scheduled'
            ELSE 'waiting' END AS state,
       NULL::jsonb AS result, errors, progress, owner, batch_id, idempotency_key, metadata,
       created_at, started_at, NULL::timestamptz AS finished_at, lease_owner, cancel_requested
FROM jobqueue.jobs WHERE id = %(id)s
UNION ALL
SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
       state, result, errors, progress, owner, batch_id, idempotency_key, metadata,
       created_at, started_at, finished_at, NULL::uuid, false
FROM jobqueue.finished WHERE id = %(id)s;

-- name: claim
-- The worker's claim: lock up to `limit` runnable rows, skipping rows other workers hold, and
-- lease them in the same statement. The MATERIALIZED CTE keeps the planner from pushing the
-- LIMIT below the lock and updating more rows than asked for. A paused queue yields nothing.
-- The claimed id range is announced on jobqueue_events (running).
WITH picked AS MATERIALIZED (
    SELECT id FROM jobqueue.jobs
    WHERE queue = %(queue)s AND lease_owner IS NULL AND run_at <= now()
      AND NOT EXISTS (SELECT 1 FROM jobqueue.queues p WHERE p.name = %(queue)s AND p.paused)
    ORDER BY priority, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    -- id = ANY(ARRAY(...)) probes the primary key per picked id; a join with `picked` would
    -- hash the whole table.
    UPDATE jobqueue.jobs j
    SET lease_owner = %(worker)s,
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        attempts = j.attempts + 1,
        started_at = now()
    WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
    -- payload as text: the worker parses it with json.loads, a third of the cost of
    -- psycopg's Python-level jsonb loader per row.
    RETURNING j.id, j.kind, j.payload::text, j.attempts, j.max_attempts, j.timeout_seconds
),
announced AS MATERIALIZED (
    SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id)) FROM claimed
    HAVING count(*) > 0
)
SELECT c.* FROM claimed c CROSS JOIN announced;

-- name: next_run_at
-- When an idle worker should look again for scheduled work (no notification announces it).
SELECT min(run_at) FROM jobqueue.jobs WHERE queue = %(queue)s AND lease_owner IS NULL;

-- name: finish_jobs
-- Move jobs a worker finished (succeeded, dead or cancelled) to `finished`. The fencing token
-- (lease_owner, attempts) must still be the worker's: a worker whose lease expired and whose
-- job was taken over moves nothing, and learns so from the ids missing in RETURNING.
WITH done AS (
    DELETE FROM jobqueue.jobs j
    USING unnest(%(id)s::bigint[], %(attempt)s::int[], %(state)s::text[], %(result)s::text[],
                 %(error)s::text[]) AS d(id, attempt, state, result, error)
    WHERE j.id = d.id AND j.attempts = d.attempt AND j.lease_owner = %(worker)s
    RETURNING j.id, j.queue, j.kind, j.payload, j.priority, j.run_at, j.attempts,
              j.max_attempts, j.timeout_seconds, d.state, d.result, j.errors, d.error,
              j.progress, j.owner, j.batch_id, j.idempotency_key, j.metadata, j.created_at,
              j.started_at
),
moved AS (
    INSERT INTO jobqueue.finished
        (id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds, state,
         result, errors, progress, owner, batch_id, idempotency_key, metadata, created_at,
         started_at)
    SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
           state, result::jsonb,
           CASE WHEN error IS NULL THEN errors ELSE errors || jsonb_build_array(error::jsonb) END,
           progress, owner, batch_id, idempotency_key, metadata, created_at, started_at
    FROM done
    RETURNING id
),
announced AS MATERIALIZED (
    SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id)) FROM moved
    HAVING count(*) > 0
)
SELECT m.id FROM moved m CROSS JOIN announced;

-- name: retry_jobs
-- Failed attempts that will be tried again: release the lease, keep the error, and schedule
-- the next attempt after the backoff the worker computed. Fenced like finish_jobs.
WITH retried AS (
    UPDATE jobqueue.jobs j
    SET lease_owner = NULL, lease_expires_at = NULL, cancel_requested = false,
        run_at = now() + make_interval(secs => f.delay),
        errors = j.errors || jsonb_build_array(f.error::jsonb)
    FROM unnest(%(id)s::bigint[], %(attempt)s::int[], %(delay)s::float8[], %(error)s::text[])
        AS f(id, attempt, delay, error)
    WHERE j.id = f.id AND j.attempts = f.attempt AND j.lease_owner = %(worker)s
    RETURNING j.id
),
announced AS MATERIALIZED (
    SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id)) FROM retried
    HAVING count(*) > 0
)
SELECT r.id FROM retried r CROSS JOIN announced;

-- name: hand_back
-- Shutdown: give running jobs back untouched. The attempt did not fail, so it is not counted.
WITH released AS (
    UPDATE jobqueue.jobs
    SET lease_owner = NULL, lease_expires_at = NULL, attempts = greatest(attempts - 1, 0),
        run_at = now()
    WHERE id = ANY(%(ids)s) AND lease_owner = %(worker)s
    RETURNING id, queue
)
SELECT count(*) AS released,
       count(pg_notify('jobqueue_insert', queue)) AS notified,
       count(pg_notify('jobqueue_events', id || '-' || id)) AS announced
FROM released;

-- name: renew_leases
-- Heartbeat: extend every lease this worker holds. Returns what it holds, so the worker learns
-- of cancellations (without LISTEN) and of leases it lost.
UPDATE jobqueue.jobs
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
WHERE lease_owner = %(worker)s
RETURNING id, cancel_requested;

-- name: set_progress
WITH updated AS (
    UPDATE jobqueue.jobs SET progress = %(progress)s::jsonb
    WHERE id = %(id)s AND lease_owner = %(worker)s AND attempts = %(attempt)s
    RETURNING id
)
SELECT pg_notify('jobqueue_events', id || '-' || id) FROM updated;

-- name: register_worker
INSERT INTO jobqueue.workers (id, host, pid, queue, concurrency)
VALUES (%(id)s, %(host)s, %(pid)s, %(queue)s, %(concurrency)s)
ON CONFLICT (id) DO UPDATE SET last_seen_at = now();

-- name: touch_worker
INSERT INTO jobqueue.workers (id, host, pid, queue, concurrency, in_flight)
VALUES (%(id)s, %(host)s, %(pid)s, %(queue)s, %(concurrency)s, %(in_flight)s)
ON CONFLICT (id) DO UPDATE SET last_seen_at = now(), in_flight = excluded.in_flight;

-- name: unregister_worker
DELETE FROM jobqueue.workers WHERE id = %(id)s;

-- name: list_workers
SELECT id, host, pid, queue, concurrency, started_at, last_seen_at, in_flight
FROM jobqueue.workers ORDER BY queue, started_at;

-- name: try_maintenance_lock
-- Maintenance runs under one leader at a time: whoever holds this transaction-level lock.
SELECT pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance'));

-- name: rescue_dead
-- Expired leases on jobs that have used every attempt: dead-letter them with the reason.
WITH expired AS (
    DELETE FROM jobqueue.jobs
    WHERE id IN (SELECT id FROM jobqueue.jobs
                 WHERE lease_owner IS NOT NULL AND lease_expires_at < now()
                   AND attempts >= max_attempts
                 FOR UPDATE SKIP LOCKED)
    RETURNING id, queue, kind, payload, priority, run_at, attempts, max_attempts,
              timeout_seconds, errors, progress, owner, batch_id, idempotency_key, metadata,
              created_at, started_at, lease_owner
)
INSERT INTO jobqueue.finished
    (id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds, state,
     result, errors, progress, owner, batch_id, idempotency_key, metadata, created_at,
     started_at)
SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
       'dead', NULL,
       errors || jsonb_build_array(jsonb_build_object(
           'attempt', attempts, 'at', now(), 'type', 'LeaseExpired',
           'message', 'worker ' || lease_owner || ' stopped renewing its lease',
           'worker', lease_owner)),
       progress, owner, batch_id, idempotency_key, metadata, created_at, started_at
FROM expired
RETURNING id, pg_notify('jobqueue_events', id || '-' || id);

-- name: rescue_retry
-- Expired leases with attempts left: the worker is gone (crash, kill -9, partition); make the
-- job runnable now and wake the workers of its queue.
WITH rescued AS (
    UPDATE jobqueue.jobs j
    SET lease_owner = NULL, lease_expires_at = NULL, run_at = now(),
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempts, 'at', now(), 'type', 'LeaseExpired',
            'message', 'worker ' || j.lease_owner || ' stopped renewing its lease',
            'worker', j.lease_owner))
    WHERE j.id IN (SELECT id FROM jobqueue.jobs
                   WHERE lease_owner IS NOT NULL AND lease_expires_at < now()
                     AND attempts < max_attempts
                   FOR UPDATE SKIP LOCKED)
    RETURNING j.id, j.queue
)
SELECT count(*) AS rescued,
       count(pg_notify('jobqueue_events', id || '-' || id)) AS announced,
       (SELECT count(pg_notify('jobqueue_insert', q)) FROM (SELECT DISTINCT queue AS q
                                                           FROM rescued) AS queues) AS notified
FROM rescued;

-- name: prune_finished
-- Drop finished jobs past their retention, a bounded slice at a time, with their keys.
WITH doomed AS (
    DELETE FROM jobqueue.finished
    WHERE id IN (SELECT id FROM jobqueue.finished
                 WHERE finished_at < now() - make_interval(secs => %(retention_seconds)s)
                 LIMIT %(limit)s)
    RETURNING id
),
keys AS (
    DELETE FROM jobqueue.idempotency_keys WHERE job_id IN (SELECT id FROM doomed)
)
SELECT count(*) FROM doomed;

-- name: prune_workers
-- Worker rows whose heartbeat stopped long ago (the process died without unregistering).
DELETE FROM jobqueue.workers
WHERE last_seen_at < now() - make_interval(secs => %(stale_seconds)s);

-- name: lock_job
SELECT id, lease_owner FROM jobqueue.jobs WHERE id = %(id)s FOR UPDATE;

-- name: cancel_waiting
WITH gone AS (
    DELETE FROM jobqueue.jobs WHERE id = %(id)s AND lease_owner IS NULL
    RETURNING id, queue, kind, payload, priority, run_at, attempts, max_attempts,
              timeout_seconds, errors, progress, owner, batch_id, idempotency_key, metadata,
              created_at, started_at
)
INSERT INTO jobqueue.finished
    (id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds, state,
     result, errors, progress, owner, batch_id, idempotency_key, metadata, created_at,
     started_at)
SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
       'cancelled', NULL, errors, progress, owner, batch_id, idempotency_key, metadata,
       created_at, started_at
FROM gone
RETURNING id, pg_notify('jobqueue_events', id || '-' || id);

-- name: request_cancel
-- A running job is cancelled by its worker, which hears of it at once through NOTIFY (or at
-- its next heartbeat in poll-only mode) and ends the job as cancelled.
WITH flagged AS (
    UPDATE jobqueue.jobs SET cancel_requested = true
    WHERE id = %(id)s AND lease_owner IS NOT NULL
    RETURNING id
)
SELECT id, pg_notify('jobqueue_cancel', id::text) FROM flagged;

-- name: revive_finished
-- Retry dead (or cancelled) jobs: back to the hot table with a fresh attempt budget. Their
-- error history stays. The insert trigger wakes the workers.
WITH revived AS (
    DELETE FROM jobqueue.finished
    WHERE state = ANY(%(states)s)
      AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
    RETURNING id, queue, kind, payload, priority, max_attempts, timeout_seconds, errors,
              progress, owner, batch_id, idempotency_key, metadata, created_at
)
INSERT INTO jobqueue.jobs
    (id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
     errors, progress, owner, batch_id, idempotency_key, metadata, created_at)
SELECT id, queue, kind, payload, priority, now(), 0, max_attempts, timeout_seconds, errors,
       progress, owner, batch_id, idempotency_key, metadata, created_at
FROM revived
RETURNING id, pg_notify('jobqueue_events', id || '-' || id);

-- name: list_dead
SELECT id, queue, kind, attempts, finished_at, errors -> -1 AS last_error
FROM jobqueue.finished
WHERE state = 'dead' AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
ORDER BY finished_at DESC
LIMIT %(limit)s;

-- name: purge_dead
WITH doomed AS (
    DELETE FROM jobqueue.finished
    WHERE state = 'dead' AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
    RETURNING id
),
keys AS (
    DELETE FROM jobqueue.idempotency_keys WHERE job_id IN (SELECT id FROM doomed)
)
SELECT count(*) FROM doomed;

-- name: queue_status
-- One row per queue known anywhere: depth by state and the oldest waiting job's age from the
-- hot table; finished counts from the trigger-kept finished_counts (never a count over all of
-- `finished`, which grows to millions); how many finished in the last minute (a bounded scan
-- through the BRIN index); and whether the queue is paused. Used by `jobqueue status`,
-- /api/queues and the dashboard.
WITH hot AS (
    SELECT queue,
           count(*) FILTER (WHERE lease_owner IS NULL AND run_at <= now()) AS waiting,
           count(*) FILTER (WHERE lease_owner IS NULL AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE lease_owner IS NOT NULL) AS running,
           extract(epoch FROM now() - min(run_at)
                   FILTER (WHERE lease_owner IS NULL AND run_at <= now()))::float8
               AS oldest_waiting_seconds
    FROM jobqueue.jobs GROUP BY queue
),
cold AS (
    SELECT queue,
           sum(count) FILTER (WHERE state = 'succeeded')::bigint AS succeeded,
           sum(count) FILTER (WHERE state = 'dead')::bigint AS dead,
           sum(count) FILTER (WHERE state = 'cancelled')::bigint AS cancelled
    FROM jobqueue.finished_counts GROUP BY queue
    HAVING sum(count) > 0  -- a queue whose finished jobs were all pruned is gone
),
recent AS (
    SELECT queue, count(*) AS finished_last_minute
    FROM jobqueue.finished WHERE finished_at > now() - interval '1 minute'
    GROUP BY queue
),
names AS (
    SELECT queue FROM hot UNION SELECT queue FROM cold
    UNION SELECT name FROM jobqueue.queues WHERE paused
)
SELECT n.queue,
       coalesce(h.waiting, 0) AS waiting, coalesce(h.scheduled, 0) AS scheduled,
       coalesce(h.running, 0) AS running, coalesce(c.succeeded, 0) AS succeeded,
       coalesce(c.dead, 0) AS dead, coalesce(c.cancelled, 0) AS cancelled,
       h.oldest_waiting_seconds, coalesce(r.finished_last_minute, 0) AS finished_last_minute,
       coalesce(p.paused, false) AS paused, p.paused_at
FROM names n
LEFT JOIN hot h ON h.queue = n.queue
LEFT JOIN cold c ON c.queue = n.queue
LEFT JOIN recent r ON r.queue = n.queue
LEFT JOIN jobqueue.queues p ON p.name = n.queue
ORDER BY n.queue;

-- name: rate_ensure
-- A worker starting on a platform makes sure each (model, key) has its buckets, with the
-- configured limits. New buckets start empty and fill within burst_seconds, so a fleet that
-- restarts together does not open with a burst. A restart also re-enables a key that was
-- disabled for insufficient quota (the operator restarts after topping up).
INSERT INTO jobqueue.rate_buckets
    (platform, model, key_id, rpm_configured, tpm_configured, rpm, tpm, burst_seconds,
     req_level, tok_level)
SELECT %(platform)s, %(model)s, k, %(rpm)s, %(tpm)s, %(rpm)s, %(tpm)s, %(burst_seconds)s, 0, 0
FROM unnest(%(keys)s::text[]) AS k
ON CONFLICT (platform, model, key_id) DO UPDATE
SET rpm_configured = excluded.rpm_configured, tpm_configured = excluded.tpm_configured,
    rpm = excluded.rpm, tpm = excluded.tpm, burst_seconds = excluded.burst_seconds,
    disabled_reason = NULL;

-- name: rate_reserve
-- Take 1 request and `cost` tokens from the key with the most headroom, in one statement.
-- Buckets refill from the database clock (now()), so every host agrees on time. Locking the
-- platform's rows for the few hundred microseconds this takes makes "most headroom" exact.
-- A request bigger than a bucket's capacity is let through when the bucket is full and
-- leaves it in debt; the average rate still holds. The request bucket holds at least 2, so
-- refill that arrives while the head waiter sleeps is not thrown away at a tiny burst. When no key can serve now, `wait_seconds`
-- says when the first one can.
WITH state AS (
    SELECT key_id, rpm, tpm, blocked_until, disabled_reason,
           greatest(2.0, rpm * burst_seconds / 60.0) AS req_cap,
           greatest(1.0, tpm * burst_seconds / 60.0) AS tok_cap,
           least(greatest(2.0, rpm * burst_seconds / 60.0),
                 req_level + extract(epoch FROM now() - updated_at) * rpm / 60.0) AS req_now,
           least(greatest(1.0, tpm * burst_seconds / 60.0),
                 tok_level + extract(epoch FROM now() - updated_at) * tpm / 60.0) AS tok_now
    FROM jobqueue.rate_buckets
    WHERE platform = %(platform)s AND model = %(model)s AND key_id = ANY(%(keys)s)
    ORDER BY key_id
    FOR UPDATE
),
usable AS (
    SELECT * FROM state
    WHERE disabled_reason IS NULL AND (blocked_until IS NULL OR blocked_until <= now())
),
pick AS (
    SELECT key_id, req_now, tok_now FROM usable
    WHERE req_now >= 1 AND tok_now >= least(%(cost)s, tok_cap)
    ORDER BY least(req_now / req_cap, tok_now / tok_cap) DESC, key_id
    LIMIT 1
),
granted AS (
    UPDATE jobqueue.rate_buckets b
    SET req_level = p.req_now - 1, tok_level = p.tok_now - %(cost)s, updated_at = now(),
        requests_total = b.requests_total + 1
    FROM pick p
    WHERE b.platform = %(platform)s AND b.model = %(model)s AND b.key_id = p.key_id
    RETURNING b.key_id
)
SELECT (SELECT key_id FROM granted) AS key_id,
       (SELECT min(greatest(
                   0,
                   extract(epoch FROM coalesce(blocked_until, now()) - now()),
                   (1 - req_now) * 60.0 / rpm,
                   (least(%(cost)s, tok_cap) - tok_now) * 60.0 / tpm))
        FROM state WHERE disabled_reason IS NULL)::float8 AS wait_seconds;

-- name: rate_settle
-- After a call: charge what the real usage exceeded the estimate by (never refund: providers
-- count the estimate, prompt plus max_tokens, at admission, so a refund would overshoot TPM),
-- and believe the provider when its headers say less is left than we think, or that the
-- limits are lower than configured.
UPDATE jobqueue.rate_buckets
SET tok_level = least(tok_level - greatest(0, %(actual)s - %(estimated)s),
                      coalesce(%(remaining_tokens)s::float8, 'Infinity')),
    req_level = least(req_level, coalesce(%(remaining_requests)s::float8, 'Infinity')),
    rpm = least(rpm_configured, coalesce(%(limit_requests)s::int, rpm_configured)),
    tpm = least(tpm_configured, coalesce(%(limit_tokens)s::int, tpm_configured)),
    tokens_total = tokens_total + %(actual)s
WHERE platform = %(platform)s AND model = %(model)s AND key_id = %(key_id)s;

-- name: rate_block
-- A 429: nobody in any process uses this key until the provider's retry-after has passed,
-- and it restarts from empty buckets rather than bursting again.
UPDATE jobqueue.rate_buckets
SET blocked_until = greatest(coalesce(blocked_until, now()),
                             now() + make_interval(secs => %(seconds)s)),
    req_level = least(req_level, 0), tok_level = least(tok_level, 0), updated_at = now(),
    throttled_total = throttled_total + 1
WHERE platform = %(platform)s AND model = %(model)s AND key_id = %(key_id)s;

-- name: rate_disable
UPDATE jobqueue.rate_buckets SET disabled_reason = %(reason)s
WHERE platform = %(platform)s AND key_id = %(key_id)s;

-- name: rate_state
-- Rate-limit use per platform key, for status and the dashboard (levels refilled to now).
SELECT platform, model, key_id, rpm, tpm, rpm_configured, tpm_configured,
       least(greatest(2.0, rpm * burst_seconds / 60.0),
             req_level + extract(epoch FROM now() - updated_at) * rpm / 60.0) AS req_available,
       least(greatest(1.0, tpm * burst_seconds / 60.0),
             tok_level + extract(epoch FROM now() - updated_at) * tpm / 60.0) AS tok_available,
       blocked_until, disabled_reason, requests_total, tokens_total, throttled_total
FROM jobqueue.rate_buckets
WHERE (%(platform)s::text IS NULL OR platform = %(platform)s::text)
ORDER BY platform, model, key_id;

-- name: cache_get
UPDATE jobqueue.llm_cache SET hits = hits + 1
WHERE key = %(key)s AND response IS NOT NULL AND expires_at > now()
RETURNING response;

-- name: cache_claim
-- Become the one caller of this request: insert a pending row, or take over one that expired
-- or whose caller gave up. No row back means another caller has it (or has the answer).
INSERT INTO jobqueue.llm_cache (key, pending_until, expires_at)
VALUES (%(key)s, now() + make_interval(secs => %(pending_seconds)s),
        now() + make_interval(secs => %(pending_seconds)s))
ON CONFLICT (key) DO UPDATE
SET pending_until = excluded.pending_until, expires_at = excluded.expires_at, response = NULL
WHERE jobqueue.llm_cache.expires_at <= now()
   OR (jobqueue.llm_cache.response IS NULL AND jobqueue.llm_cache.pending_until <= now())
RETURNING key;

-- name: cache_put
UPDATE jobqueue.llm_cache
SET response = %(response)s, pending_until = NULL,
    expires_at = now() + make_interval(secs => %(ttl_seconds)s)
WHERE key = %(key)s;

-- name: cache_release
-- The caller failed: let the next identical request call instead of waiting.
DELETE FROM jobqueue.llm_cache WHERE key = %(key)s AND response IS NULL;

-- name: cache_stats
SELECT count(*) FILTER (WHERE response IS NOT NULL AND expires_at > now()) AS entries,
       coalesce(sum(hits), 0)::bigint AS hits
FROM jobqueue.llm_cache;

-- name: prune_cache
DELETE FROM jobqueue.llm_cache
WHERE key IN (SELECT key FROM jobqueue.llm_cache WHERE expires_at < now() LIMIT %(limit)s);

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

-- name: token_create
-- New tokens start with a full minute of requests.
INSERT INTO jobqueue.api_tokens (token_hash, prefix, owner, scopes, rate_limit, level, note)
VALUES (%(hash)s, %(prefix)s, %(owner)s, %(scopes)s, %(rate_limit)s, %(rate_limit)s, %(note)s)
RETURNING id, prefix, owner, scopes, rate_limit, created_at;

-- name: token_use
-- Authenticate a request and charge its rate limit in one statement. The bucket holds a
-- minute of requests and refills continuously; FOR UPDATE makes concurrent requests of one
-- token queue on the row, so none of them spends the same unit.
-- The charge commits without waiting for its WAL flush (set_config(..., true) lasts for this
-- statement's transaction only): the row lock is then held for microseconds, not for an
-- fsync, so one busy token does not serialize its requests on the disk. A crash can forget
-- the last few charges, which only lets a few requests through for free.
WITH no_flush AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
),
t AS (
    SELECT id, least(rate_limit::float8,
                     level + extract(epoch FROM now() - updated_at) * rate_limit / 60.0) AS avail
    FROM jobqueue.api_tokens
    WHERE token_hash = %(hash)s AND revoked_at IS NULL
    FOR UPDATE
)
UPDATE jobqueue.api_tokens a
SET level = t.avail - CASE WHEN t.avail >= 1 THEN 1 ELSE 0 END,
    updated_at = now(), last_used_at = now()
FROM t, no_flush
WHERE a.id = t.id
RETURNING a.id, a.owner, a.scopes, a.rate_limit, t.avail >= 1 AS allowed, a.level AS remaining;

-- name: token_list
SELECT id, prefix, owner, scopes, rate_limit, created_at, last_used_at, revoked_at, note
FROM jobqueue.api_tokens ORDER BY id;

-- name: token_revoke
UPDATE jobqueue.api_tokens SET revoked_at = now()
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id;

-- name: setting_get_or_create
-- A shared setting, created with the given value by whoever asks first.
WITH created AS (
    INSERT INTO jobqueue.settings (name, value) VALUES (%(name)s, %(value)s)
    ON CONFLICT (name) DO NOTHING
    RETURNING value
)
SELECT value FROM created
UNION ALL
SELECT value FROM jobqueue.settings WHERE name = %(name)s
LIMIT 1;

-- name: queue_pause
INSERT INTO jobqueue.queues (name, paused, paused_at) VALUES (%(name)s, %(paused)s,
    CASE WHEN %(paused)s THEN now() END)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, paused_at = excluded.paused_at;

-- name: document_insert
INSERT INTO jobqueue.documents (owner, filename, content_type, size, data)
VALUES (%(owner)s, %(filename)s, %(content_type)s, %(size)s, %(data)s)
RETURNING id;

-- name: document_set_job
UPDATE jobqueue.documents SET job_id = %(job_id)s WHERE id = %(id)s;

-- name: document_get
SELECT id, owner, filename, content_type, size, job_id, created_at,
       length(text) AS text_chars
FROM jobqueue.documents WHERE id = %(id)s;

-- name: document_data
SELECT filename, content_type, data FROM jobqueue.documents WHERE id = %(id)s;

-- name: document_set_text
UPDATE jobqueue.documents SET text = %(text)s WHERE id = %(id)s;

-- name: metrics_jobs
-- Jobs by queue and state for /metrics: the hot table counted, finished states from the
-- trigger-kept counts (never a scan of `finished`).
SELECT queue, state, count FROM (
    SELECT queue,
           CASE WHEN lease_owner IS NOT NULL THEN 'running'
                WHEN run_at > now() THEN 'scheduled' ELSE 'waiting' END AS state,
           count(*) AS count
    FROM jobqueue.jobs GROUP BY 1, 2
    UNION ALL
    SELECT queue, state, count FROM jobqueue.finished_counts
) AS t ORDER BY queue, state;

-- name: metrics_oldest
SELECT queue, extract(epoch FROM now() - min(run_at))::float8 AS seconds
FROM jobqueue.jobs WHERE lease_owner IS NULL AND run_at <= now()
GROUP BY queue;

-- name: metrics_recent
-- Durations (started -> finished) and waits (run_at -> started) of jobs finished in the last
-- five minutes, per queue, bucketed for a histogram. The BRIN index bounds the scan.
SELECT queue, state,
       extract(epoch FROM finished_at - started_at)::float8 AS duration,
       extract(epoch FROM started_at - run_at)::float8 AS wait
FROM jobqueue.finished
WHERE finished_at > now() - interval '5 minutes' AND started_at IS NOT NULL
LIMIT 100000;

-- name: purge_queue
-- Remove every job of a queue, hot and finished (jobqueue bench cleans up its scratch queue).
WITH hot AS (DELETE FROM jobqueue.jobs WHERE queue = %(queue)s RETURNING id),
     cold AS (DELETE FROM jobqueue.finished WHERE queue = %(queue)s RETURNING id)
SELECT (SELECT count(*) FROM hot) + (SELECT count(*) FROM cold) AS deleted;
