-- API tokens and the web app's settings (jobqueue/tokens.py, web/auth.py).

-- name: token_create
-- New tokens start with a full minute of requests, of reads and of writes.
INSERT INTO jobqueue.api_tokens
    (token_hash, prefix, owner, scopes, rate_limit, level, write_rate_limit, write_level, note)
VALUES (%(hash)s, %(prefix)s, %(owner)s, %(scopes)s, %(rate_limit)s, %(rate_limit)s,
        %(write_rate_limit)s::integer, coalesce(%(write_rate_limit)s::integer, %(rate_limit)s),
        %(note)s)
RETURNING id, prefix, owner, scopes, rate_limit, write_rate_limit, created_at;


-- name: token_use
-- Authenticate a request and charge its rate limit in one statement. Reads (GET, SSE,
-- ?wait) and writes have a bucket each (0013): a client that spent its writes can still read
-- what it made. Each bucket holds a minute of requests and refills continuously; FOR UPDATE
-- makes concurrent requests of one token queue on the row, so none of them spends the same
-- unit. `write` picks the bucket; the other is left exactly as it was.
-- The charge commits without waiting for its WAL flush (set_config(..., true) lasts for this
-- statement's transaction only): the row lock is then held for microseconds, not for an
-- fsync, so one busy token does not serialize its requests on the disk. A crash can forget
-- the last few charges, which only lets a few requests through for free.
WITH no_flush AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
),
t AS (
    SELECT id, coalesce(write_rate_limit, rate_limit) AS write_limit,
           least(rate_limit::float8,
                 level + extract(epoch FROM now() - updated_at) * rate_limit / 60.0) AS read_avail,
           least(coalesce(write_rate_limit, rate_limit)::float8,
                 write_level + extract(epoch FROM now() - write_updated_at)
                 * coalesce(write_rate_limit, rate_limit) / 60.0) AS write_avail
    FROM jobqueue.api_tokens
    WHERE token_hash = %(hash)s AND revoked_at IS NULL
    FOR UPDATE
)
UPDATE jobqueue.api_tokens a
SET level = CASE WHEN %(write)s::boolean THEN a.level
                 ELSE t.read_avail - CASE WHEN t.read_avail >= 1 THEN 1 ELSE 0 END END,
    updated_at = CASE WHEN %(write)s::boolean THEN a.updated_at ELSE now() END,
    write_level = CASE WHEN %(write)s::boolean
                       THEN t.write_avail - CASE WHEN t.write_avail >= 1 THEN 1 ELSE 0 END
                       ELSE a.write_level END,
    write_updated_at = CASE WHEN %(write)s::boolean THEN now() ELSE a.write_updated_at END,
    last_used_at = now()
FROM t, no_flush
WHERE a.id = t.id
RETURNING a.id, a.owner, a.scopes,
          CASE WHEN %(write)s::boolean THEN t.write_limit ELSE a.rate_limit END AS rate_limit,
          CASE WHEN %(write)s::boolean THEN t.write_avail ELSE t.read_avail END >= 1
              AS allowed,
          CASE WHEN %(write)s::boolean THEN a.write_level ELSE a.level END AS remaining;


-- name: token_list
SELECT id, prefix, owner, scopes, rate_limit, write_rate_limit, created_at, last_used_at, revoked_at, note
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
