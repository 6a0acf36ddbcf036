-- 0026: the dashboard's read-only role is a scope of its own, `viewer`.
--
-- The dashboard shows every owner's jobs. Its read-only role (every page, no action) must
-- therefore be something an operator grants on purpose, not any token that happens to hold
-- only `read` (which an application gives its own users for GET /api/jobs of their jobs).
-- `viewer` lets a token sign in to the dashboard read-only; in the API it adds nothing (the
-- token's other scopes decide, and it sees only its own owner's jobs unless it is admin).
ALTER TABLE jobqueue.api_tokens DROP CONSTRAINT api_tokens_scopes_check;
ALTER TABLE jobqueue.api_tokens ADD CONSTRAINT api_tokens_scopes_check
    CHECK (scopes <@ ARRAY['read', 'write', 'admin', 'viewer']);
