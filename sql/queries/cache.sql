-- The LLM response cache (jobqueue/llm/cache.py).

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


-- name: cache_keep_pending
-- The caller is still waiting for budget or for the answer: its claim stays.
UPDATE jobqueue.llm_cache
SET pending_until = now() + make_interval(secs => %(pending_seconds)s),
    expires_at = greatest(expires_at, now() + make_interval(secs => %(pending_seconds)s))
WHERE key = %(key)s AND response IS NULL;


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
-- A maintenance hook of the LLM cache (registered by jobqueue/llm/cache.py), gated by the
-- maintenance leader's lock like the queue's own pruning.
DELETE FROM jobqueue.llm_cache
WHERE key IN (SELECT key FROM jobqueue.llm_cache
              WHERE expires_at < now()
                AND pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance'))
              LIMIT %(limit)s);
