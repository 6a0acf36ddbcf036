-- Per-owner quotas on new work (jobqueue/quotas.py): the quotas themselves, and each owner's
-- two token buckets per quota (jobs, estimated LLM tokens), charged at enqueue.

-- name: quota_set
-- Create or replace one quota. A changed budget applies at once: levels are clamped to the
-- new capacity when next read (quota_usage_lock), never raised.
INSERT INTO jobqueue.quotas AS q
    (scope, name, jobs, jobs_seconds, tokens, tokens_seconds, source)
VALUES (%(scope)s, %(name)s, %(jobs)s, %(jobs_seconds)s, %(tokens)s, %(tokens_seconds)s,
        %(source)s)
ON CONFLICT (scope, name) DO UPDATE
SET jobs = excluded.jobs, jobs_seconds = excluded.jobs_seconds, tokens = excluded.tokens,
    tokens_seconds = excluded.tokens_seconds, source = excluded.source, updated_at = now();


-- name: quota_remove
-- Its usage rows go with it (ON DELETE CASCADE).
DELETE FROM jobqueue.quotas WHERE scope = %(scope)s AND name = %(name)s
RETURNING scope, name;


-- name: quota_remove_config_except
-- A config apply: the 'config' rows that jobqueue.toml no longer names go; 'api' rows stay.
DELETE FROM jobqueue.quotas
WHERE source = 'config'
  AND (scope || ':' || name) <> ALL(%(keep)s::text[])
RETURNING scope, name;


-- name: quota_list
SELECT scope, name, jobs, jobs_seconds, tokens, tokens_seconds, source, updated_at
FROM jobqueue.quotas ORDER BY scope, name;


-- name: quota_find
-- The quotas that apply to jobs of these queues and kinds: the enqueue path's first question,
-- an index probe on the primary key per name (and nothing at all to read when none is set).
SELECT scope, name, jobs, jobs_seconds, tokens, tokens_seconds
FROM jobqueue.quotas
WHERE (scope = 'queue' AND name = ANY(%(queues)s::text[]))
   OR (scope = 'kind' AND name = ANY(%(kinds)s::text[]));


-- name: quota_usage_ensure
-- Each (quota, owner) about to be charged gets its bucket row, full, if it has none yet.
-- Sorted, so concurrent enqueues of overlapping owners insert (and wait) in one order.
INSERT INTO jobqueue.quota_usage (scope, name, owner, jobs_level, tokens_level)
SELECT w.scope, w.name, w.owner, coalesce(q.jobs, 0), coalesce(q.tokens, 0)
FROM unnest(%(scopes)s::text[], %(names)s::text[], %(owners)s::text[]) AS w(scope, name, owner)
JOIN jobqueue.quotas q ON q.scope = w.scope AND q.name = w.name
ORDER BY w.scope, w.name, w.owner
ON CONFLICT (scope, name, owner) DO NOTHING;


-- name: quota_usage_lock
-- Lock the buckets to charge (in one order: no deadlocks) and read their levels refilled to
-- now, capped at the quota's full budget. The lock is held until the enqueue commits, so two
-- enqueues of one owner never spend the same unit: N concurrent callers never exceed the
-- quota. Under READ COMMITTED a caller that waited re-reads the row the other committed.
-- `greatest(0, ...)`: a transaction's now() is its start, which can be earlier than the
-- updated_at another transaction wrote while this one waited; no time runs backwards.
-- include: quota_levels_now
WHERE (u.scope, u.name, u.owner) IN (
    SELECT * FROM unnest(%(scopes)s::text[], %(names)s::text[], %(owners)s::text[]))
ORDER BY u.scope, u.name, u.owner
FOR UPDATE OF u;


-- name: quota_usage_charge
-- Write the levels left after this enqueue (computed from quota_usage_lock's, under its lock).
-- updated_at never moves backwards (see quota_usage_lock).
UPDATE jobqueue.quota_usage u
SET jobs_level = c.jobs_level, tokens_level = c.tokens_level,
    updated_at = greatest(u.updated_at, now())
FROM unnest(%(scopes)s::text[], %(names)s::text[], %(owners)s::text[],
            %(jobs_levels)s::float8[], %(tokens_levels)s::float8[])
     AS c(scope, name, owner, jobs_level, tokens_level)
WHERE u.scope = c.scope AND u.name = c.name AND u.owner = c.owner;


-- name: quota_usage_debit
-- Charge tokens known only after enqueue (an uploaded PDF's estimate, once its text is out):
-- never refused, the bucket may go into debt, and the owner's next enqueues wait it out.
-- Levels are refilled to now first, as quota_usage_lock does; no row (the owner's bucket was
-- full and pruned) starts from full.
INSERT INTO jobqueue.quota_usage AS u (scope, name, owner, jobs_level, tokens_level)
SELECT q.scope, q.name, %(owner)s, coalesce(q.jobs, 0), q.tokens - %(tokens)s
FROM jobqueue.quotas q
WHERE q.tokens IS NOT NULL
  AND ((q.scope = 'queue' AND q.name = %(queue)s) OR (q.scope = 'kind' AND q.name = %(kind)s))
ORDER BY q.scope, q.name
ON CONFLICT (scope, name, owner) DO UPDATE
SET tokens_level = least(
        (SELECT q.tokens FROM jobqueue.quotas q WHERE q.scope = u.scope AND q.name = u.name),
        u.tokens_level + greatest(0, extract(epoch FROM now() - u.updated_at))
        * (SELECT q.tokens / q.tokens_seconds FROM jobqueue.quotas q
           WHERE q.scope = u.scope AND q.name = u.name)) - %(tokens)s,
    jobs_level = least(
        (SELECT coalesce(q.jobs, 0) FROM jobqueue.quotas q
         WHERE q.scope = u.scope AND q.name = u.name),
        u.jobs_level + greatest(0, extract(epoch FROM now() - u.updated_at))
        * (SELECT coalesce(q.jobs / q.jobs_seconds, 0) FROM jobqueue.quotas q
           WHERE q.scope = u.scope AND q.name = u.name)),
    updated_at = greatest(u.updated_at, now());


-- name: quota_usage_of
-- An owner's standing on every quota it has used (levels refilled to now), for
-- `jobqueue quotas usage` and GET /api/quotas.
-- include: quota_levels_now
WHERE u.owner = %(owner)s
ORDER BY u.scope, u.name;


-- name: quota_usage_prune
-- Buckets that are full again remember nothing a fresh row would not: delete them, so the
-- table holds only owners active within a period. Maintenance: gated by the leader's lock.
DELETE FROM jobqueue.quota_usage u
USING jobqueue.quotas q
WHERE q.scope = u.scope AND q.name = u.name
  AND (q.jobs IS NULL OR u.jobs_level + extract(epoch FROM now() - u.updated_at)
                         * q.jobs / q.jobs_seconds >= q.jobs)
  AND (q.tokens IS NULL OR u.tokens_level + extract(epoch FROM now() - u.updated_at)
                           * q.tokens / q.tokens_seconds >= q.tokens)
  AND pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance'));


-- part: quota_levels_now
-- An owner's buckets with their quotas and their levels refilled to now, capped at the
-- quota's full budget (quota_usage_lock, quota_usage_of): one formula for the refill.
SELECT u.scope, u.name, u.owner, q.jobs, q.jobs_seconds, q.tokens, q.tokens_seconds,
       CASE WHEN q.jobs IS NULL THEN NULL ELSE
           least(q.jobs::float8, u.jobs_level + greatest(0, extract(epoch FROM now() - u.updated_at))
                 * q.jobs / q.jobs_seconds) END AS jobs_now,
       CASE WHEN q.tokens IS NULL THEN NULL ELSE
           least(q.tokens::float8, u.tokens_level + greatest(0, extract(epoch FROM now() - u.updated_at))
                 * q.tokens / q.tokens_seconds) END AS tokens_now
FROM jobqueue.quota_usage u
JOIN jobqueue.quotas q ON q.scope = u.scope AND q.name = u.name
