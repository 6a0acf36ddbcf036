-- Dashboard sessions (web/auth.py) and failed authentications per client address.

-- name: session_create
INSERT INTO jobqueue.web_sessions (secret_hash, token_id, owner, expires_at)
VALUES (%(hash)s, %(token_id)s, %(owner)s, now() + make_interval(secs => %(seconds)s))
RETURNING id;


-- name: session_use
-- A live session (not revoked, not expired, its token not revoked): the token's hash, for
-- token_use to authenticate and charge, as for an API request. Marks the session seen; like
-- token_use, without waiting for the WAL flush (a crash may forget a last_seen_at).
WITH no_flush AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
)
UPDATE jobqueue.web_sessions s SET last_seen_at = now()
FROM jobqueue.api_tokens t, no_flush
WHERE s.secret_hash = %(hash)s AND s.revoked_at IS NULL AND s.expires_at > now()
  AND t.id = s.token_id AND t.revoked_at IS NULL
RETURNING s.id, t.token_hash;


-- name: session_end
-- Sign-out: the session is over on the server, whatever became of the cookie.
UPDATE jobqueue.web_sessions SET revoked_at = now()
WHERE secret_hash = %(hash)s AND revoked_at IS NULL;


-- name: session_list
-- An owner's sessions (every owner's for NULL), newest first; never the secret's hash.
SELECT s.id, s.owner, s.token_id, t.prefix AS token_prefix, s.created_at, s.expires_at,
       s.last_seen_at, s.revoked_at,
       s.revoked_at IS NULL AND s.expires_at > now() AND t.revoked_at IS NULL AS active
FROM jobqueue.web_sessions s JOIN jobqueue.api_tokens t ON t.id = s.token_id
WHERE %(owner)s::text IS NULL OR s.owner = %(owner)s
ORDER BY s.id DESC
LIMIT 500;


-- name: session_revoke
-- Revoke one session if the owner may see it (NULL: any); `revoked` is false when it was
-- already revoked, and no row means not found.
WITH s AS (
    SELECT id, revoked_at FROM jobqueue.web_sessions
    WHERE id = %(id)s AND (%(owner)s::text IS NULL OR owner = %(owner)s)
),
r AS (
    UPDATE jobqueue.web_sessions w SET revoked_at = now()
    FROM s WHERE w.id = s.id AND s.revoked_at IS NULL
    RETURNING w.id
)
SELECT s.id, EXISTS (SELECT 1 FROM r) AS revoked FROM s;


-- name: auth_failure_charge
-- One failed authentication from an address. Its bucket holds a minute of failures and
-- refills continuously, like a token's; `level` below 0 means over the limit (429), and it
-- stops at -1, so a client that keeps failing waits at most one refill, not longer and
-- longer. No WAL flush wait, as in token_use: a crash may forget a few failures.
WITH no_flush AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
)
INSERT INTO jobqueue.auth_failures AS f (address, level, updated_at)
SELECT %(address)s, %(per_minute)s::float8 - 1, now() FROM no_flush
ON CONFLICT (address) DO UPDATE
SET level = greatest(-1.0, least(%(per_minute)s::float8,
                                 f.level + extract(epoch FROM now() - f.updated_at)
                                           * %(per_minute)s / 60.0) - 1),
    updated_at = now()
RETURNING level;


-- name: auth_failures_prune
-- Addresses whose bucket has long been full again: their rows say nothing.
DELETE FROM jobqueue.auth_failures WHERE updated_at < now() - interval '1 hour';


-- name: prune_sessions
-- A maintenance hook (jobqueue/worker/maintenance.py): sessions that can no longer be used
-- (expired, or revoked at sign-out) stay keep_seconds (a day), so an owner's list shows
-- today's sign-outs, then go, a slice at a time, gated by the maintenance leader's lock like
-- the queue's own pruning. Sessions whose token was revoked go once they expire (12 h);
-- a deleted token's sessions go with it (ON DELETE CASCADE).
DELETE FROM jobqueue.web_sessions
WHERE id IN (SELECT id FROM jobqueue.web_sessions
             WHERE least(expires_at, revoked_at)
                   < now() - make_interval(secs => %(keep_seconds)s)
               AND pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance'))
             LIMIT %(limit)s);
