-- 0008: dashboard sessions kept on the server, and failed authentications per client address.

-- A dashboard sign-in. The cookie carries only a random secret; this row keeps its SHA-256,
-- so reading the database gives no usable session (nor a token: the cookie used to carry the
-- token's hash, which is what api_tokens stores). Each request checks the row (not revoked,
-- not expired) and the token behind it (not revoked). Sign-out revokes the row; owners list
-- and revoke theirs through /api/sessions.
CREATE TABLE jobqueue.web_sessions (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    secret_hash  text        NOT NULL UNIQUE,
    token_id     bigint      NOT NULL REFERENCES jobqueue.api_tokens (id) ON DELETE CASCADE,
    owner        text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX web_sessions_owner ON jobqueue.web_sessions (owner, id);

-- Failed authentications per client address: a bucket of `level` failures that refills at
-- the configured rate per minute, shared by every process like the tokens' buckets. An empty
-- bucket turns the address's bad tokens into 429 with Retry-After (web/auth.py).
CREATE TABLE jobqueue.auth_failures (
    address    text        PRIMARY KEY,
    level      float8      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
