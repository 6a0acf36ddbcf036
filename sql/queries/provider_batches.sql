-- Batches sent through the provider's Batch API (jobqueue/llm/batchapi.py). A provider
-- batch's jobs are leased to its row's `lease`, as if it were a worker; finishing and
-- releasing them reuses finish_jobs and retry_jobs (jobs.sql), fenced by that lease.

-- name: pb_jobs_to_hold
-- The jobs a --via batch-api submit just inserted for one platform, in the submit's own
-- transaction (so no worker has seen them yet). Jobs an idempotency key matched elsewhere
-- belong to their own batch and are not here.
SELECT id, payload
FROM jobqueue.jobs
WHERE batch_id = %(batch_id)s AND queue = %(platform)s AND lease_owner IS NULL
ORDER BY id;


-- name: pb_create
INSERT INTO jobqueue.provider_batches (batch_id, platform, key_env, requests, on_expiry)
VALUES (%(batch_id)s, %(platform)s, %(key_env)s, %(requests)s, %(on_expiry)s)
RETURNING id, lease;


-- name: pb_lease_jobs
-- Hand jobs to a provider batch: the lease names the row, not a worker, and lasts the
-- completion window and a margin (hold_seconds). The attempt counts as one, as a claim's.
WITH token AS MATERIALIZED (SELECT gen_random_uuid() AS t),
leased AS (
    UPDATE jobqueue.jobs
    SET lease_owner = %(lease)s,
        lease_expires_at = now() + make_interval(secs => %(hold_seconds)s),
        attempts = attempts + 1,
        started_at = now(),
        execution_id = (SELECT t FROM token)
    WHERE id = ANY(%(ids)s::bigint[]) AND lease_owner IS NULL
    RETURNING id
),
-- announced like a claim: the jobs are running from now on (the provider runs them)
announced AS MATERIALIZED (
    SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id)) FROM leased
    HAVING count(*) > 0
)
SELECT count(*) AS leased FROM leased LEFT JOIN announced ON true;


-- name: pb_leased_jobs
-- A provider batch's jobs that are still its own (a rescue or a retry elsewhere took any
-- other back), in id order: the order of its input file.
SELECT id, payload, attempts, max_attempts, execution_id, cancel_requested
FROM jobqueue.jobs
WHERE lease_owner = %(lease)s
ORDER BY id;


-- name: pb_take
-- The CLI's first submit takes its row as a leader's pass does (pb_claim_due): only if no pass
-- holds it, moving next_poll_at forward by hold_seconds. The new next_poll_at is the claim,
-- the fencing token of every later step (pb_lock): the CLI's first submit and a leader's retry
-- never both send a file.
UPDATE jobqueue.provider_batches
SET next_poll_at = now() + make_interval(secs => %(hold_seconds)s)
WHERE id = %(id)s AND status = %(status)s AND next_poll_at <= now()
RETURNING *, next_poll_at AS claim;


-- name: pb_lock
-- One row to submit, poll or import, if it still needs doing and the caller's claim still
-- holds (next_poll_at is what pb_take or pb_claim_due set: no other pass took the row over
-- after the hold ran out). Locked for the short transaction that writes its outcome; a
-- provider call never runs inside one (the worker's finish link waits for the transaction).
SELECT * FROM jobqueue.provider_batches
WHERE id = %(id)s AND status = %(status)s AND next_poll_at = %(claim)s
FOR UPDATE;


-- name: pb_claim_due
-- Maintenance, under the leader's lock like the rest of it: the rows due a submit or a poll
-- on platforms this process can call. Their next_poll_at moves forward by hold_seconds before
-- any call is made, so another leader's pass does not poll them meanwhile; the call's outcome
-- then sets the real next poll. The rows come back whole, their new next_poll_at also as the
-- pass's claim (pb_lock).
WITH leader AS MATERIALIZED (
    SELECT pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance')) AS ok
)
UPDATE jobqueue.provider_batches p
SET next_poll_at = now() + make_interval(secs => %(hold_seconds)s)
WHERE p.id IN (SELECT id FROM jobqueue.provider_batches
               WHERE status <> 'imported' AND next_poll_at <= now()
                 AND platform = ANY(%(platforms)s::text[]) AND (SELECT ok FROM leader)
               ORDER BY next_poll_at
               LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED)
RETURNING p.*, p.next_poll_at AS claim;


-- name: pb_any_due
-- The leader's cheap look before it starts a thread for the calls.
SELECT EXISTS (SELECT 1 FROM jobqueue.provider_batches
               WHERE status <> 'imported' AND next_poll_at <= now()
                 AND platform = ANY(%(platforms)s::text[])) AS due;


-- name: pb_submitted
UPDATE jobqueue.provider_batches
SET status = 'submitted', provider_batch_id = %(provider_batch_id)s,
    input_file_id = %(input_file_id)s, provider_status = %(provider_status)s,
    submitted_at = now(), polls = 0, last_error = NULL,
    next_poll_at = now() + make_interval(secs => %(delay)s)
WHERE id = %(id)s;


-- name: pb_retry_later
-- A call that failed (network, 5xx, 429): try again after the backoff, saying why.
UPDATE jobqueue.provider_batches
SET last_error = %(error)s, polls = polls + 1,
    next_poll_at = now() + make_interval(secs => %(delay)s)
WHERE id = %(id)s;


-- name: pb_polled
UPDATE jobqueue.provider_batches
SET provider_status = %(provider_status)s, polls = polls + 1, last_error = NULL,
    next_poll_at = now() + make_interval(secs => %(delay)s)
WHERE id = %(id)s;


-- name: pb_imported
-- (status on the right is the old one: a submitted row was polled once more to learn this)
UPDATE jobqueue.provider_batches
SET status = 'imported', provider_status = %(provider_status)s,
    polls = polls + CASE WHEN status = 'submitted' THEN 1 ELSE 0 END,
    output_file_id = %(output_file_id)s, error_file_id = %(error_file_id)s,
    succeeded = %(succeeded)s, failed = %(failed)s, requeued = %(requeued)s,
    last_error = %(error)s, imported_at = now()
WHERE id = %(id)s;


-- name: pb_of_batch
-- A batch's provider batches, for `batch show`.
SELECT id, platform, status, provider_status, provider_batch_id, requests, on_expiry, polls,
       next_poll_at, last_error, succeeded, failed, requeued, created_at, submitted_at,
       imported_at
FROM jobqueue.provider_batches
WHERE batch_id = %(batch_id)s
ORDER BY id;
