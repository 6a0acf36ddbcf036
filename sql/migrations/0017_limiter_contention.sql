-- 0017: the limiter under contention (issue 13.5).
--
-- rate_factor: additive-increase / multiplicative-decrease of a key's own pace. Each 429 on a
--   key multiplies the refill rate the limiter allows itself by 0.7 (down to 0.1); each call
--   the provider accepts adds 0.02 back (up to 1). A provider whose real limit is below what
--   is configured, or that counts refused requests against the limit, is approached from
--   below instead of being knocked at in step.
-- in_flight_requests / in_flight_tokens: reservations made and not yet settled. The provider's
--   x-ratelimit-remaining-* headers count everything it has admitted; what is still on its
--   way to the provider is not in them, so a level taken from the headers subtracts it.
-- provider_limited_until: the provider itself said the budget is gone (a 429, or a header
--   with nothing remaining). Only then may a fallback model answer for the main one.
ALTER TABLE jobqueue.rate_buckets
    ADD COLUMN rate_factor            float8      NOT NULL DEFAULT 1
        CHECK (rate_factor > 0 AND rate_factor <= 1),
    ADD COLUMN in_flight_requests     integer     NOT NULL DEFAULT 0,
    ADD COLUMN in_flight_tokens       bigint      NOT NULL DEFAULT 0,
    ADD COLUMN provider_limited_until timestamptz;

-- Whether a platform's provider counts every model against the key ('key') or gives each
-- model its own budget ('model'). Configured per platform (limit_scope); a 429 that names no
-- model, or another model than the one asked for, teaches 'key' to every process.
CREATE TABLE jobqueue.rate_scopes (
    platform   text        PRIMARY KEY,
    scope      text        NOT NULL CHECK (scope IN ('key', 'model')),
    learned_at timestamptz NOT NULL DEFAULT now(),
    evidence   text        -- the provider's message that taught it (keys scrubbed)
);
