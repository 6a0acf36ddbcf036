-- The shared LLM rate limiter: token buckets per (platform, model, key)
-- (jobqueue/llm/ratelimit.py).

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
-- Buckets refill from the database clock (now()), so every host agrees on time, at the
-- configured rate times the key's AIMD pace (rate_factor), up to `burst_seconds` of budget.
-- A level above that capacity (the provider's headers said more is left: rate_settle) is
-- kept, not cut back: refill never adds past the capacity, but what the provider grants is
-- spent. Locking the platform's rows for the few hundred microseconds this takes makes "most
-- headroom" exact. A request bigger than a bucket's capacity is let through when the bucket
-- is full and leaves it in debt; the average rate still holds. The request bucket holds at
-- least 2, so refill that arrives while the head waiter sleeps is not thrown away at a tiny
-- burst. Headroom is compared at two decimals and ties are broken at random: equal keys
-- share the calls instead of the first taking them all. A key blocked after a 429 has its
-- `updated_at` at the end of the block (rate_block), so it refills from then: it restarts
-- empty. When no key can serve now, `wait_seconds` says when the first one can, and
-- `provider_limited` whether the provider itself (not our own pacing) holds every usable key.
WITH state AS (
    SELECT key_id, rpm, tpm, blocked_until, disabled_reason, provider_limited_until,
           greatest(2.0, rpm * burst_seconds / 60.0) AS req_cap,
           greatest(1.0, tpm * burst_seconds / 60.0) AS tok_cap,
           greatest(req_level, least(greatest(2.0, rpm * burst_seconds / 60.0),
                 req_level + extract(epoch FROM now() - updated_at) * rpm * rate_factor / 60.0))
               AS req_now,
           greatest(tok_level, least(greatest(1.0, tpm * burst_seconds / 60.0),
                 tok_level + extract(epoch FROM now() - updated_at) * tpm * rate_factor / 60.0))
               AS tok_now,
           rpm * rate_factor AS req_rate, tpm * rate_factor AS tok_rate
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
    ORDER BY round(least(req_now / req_cap, tok_now / tok_cap)::numeric, 2) DESC, random()
    LIMIT 1
),
granted AS (
    UPDATE jobqueue.rate_buckets b
    SET req_level = p.req_now - 1, tok_level = p.tok_now - %(cost)s, updated_at = now(),
        requests_total = b.requests_total + 1,
        in_flight_requests = b.in_flight_requests + 1,
        in_flight_tokens = b.in_flight_tokens + %(cost)s
    FROM pick p
    WHERE b.platform = %(platform)s AND b.model = %(model)s AND b.key_id = p.key_id
    RETURNING b.key_id
)
SELECT (SELECT key_id FROM granted) AS key_id,
       (SELECT min(greatest(
                   0,
                   extract(epoch FROM coalesce(blocked_until, now()) - now()),
                   (1 - req_now) * 60.0 / req_rate,
                   (least(%(cost)s, tok_cap) - tok_now) * 60.0 / tok_rate))
        FROM state WHERE disabled_reason IS NULL)::float8 AS wait_seconds,
       coalesce((SELECT bool_and(blocked_until > now() OR provider_limited_until > now())
                 FROM state WHERE disabled_reason IS NULL), false) AS provider_limited;


-- name: rate_settle
-- After a call the provider accepted: charge what the real usage exceeded the estimate by
-- (never refund: providers count the estimate, prompt plus max_tokens, at admission), and
-- believe the provider's x-ratelimit-remaining-*, its own count for every process together at
-- the moment it answered, minus what is still on its way to it (reserved by anyone, not yet
-- settled, this call excluded):
-- - down always: when it says less is left than we think;
-- - up too when we are configured to use the provider's whole limit (rpm/tpm configured at
--   least what x-ratelimit-limit-* says): the level becomes the provider's count, capped at
--   its limit, as of now. A fresh fleet then spends the provider's initial burst instead of
--   leaving it unused. Configured below the provider's limit (room left for others), we keep
--   to our own pace.
-- The key's pace recovers additively (+0.02 per accepted call). A header saying nothing is
-- left marks the key as limited by the provider for the time one request takes to refill.
WITH believed AS (
    SELECT platform, model, key_id,
           %(remaining_requests)s::float8 - greatest(0, in_flight_requests - 1) AS req_left,
           %(remaining_tokens)s::float8 - greatest(0, in_flight_tokens - %(estimated)s)
               AS tok_left,
           %(limit_requests)s::int IS NOT NULL AND rpm_configured >= %(limit_requests)s::int
               AS req_up,
           %(limit_tokens)s::int IS NOT NULL AND tpm_configured >= %(limit_tokens)s::int
               AS tok_up
    FROM jobqueue.rate_buckets
    WHERE platform = %(platform)s AND model = %(model)s AND key_id = %(key_id)s
)
UPDATE jobqueue.rate_buckets b
SET tok_level = CASE
        WHEN v.tok_left IS NULL THEN b.tok_level - greatest(0, %(actual)s - %(estimated)s)
        WHEN v.tok_up THEN least(%(limit_tokens)s::float8, v.tok_left)
        ELSE least(b.tok_level - greatest(0, %(actual)s - %(estimated)s), v.tok_left)
        END,
    req_level = CASE
        WHEN v.req_left IS NULL THEN b.req_level
        WHEN v.req_up THEN least(%(limit_requests)s::float8, v.req_left)
        ELSE least(b.req_level, v.req_left)
        END,
    -- Levels taken from the headers whole are as of now. (Both come in one answer; when only
    -- one is believed upward the other's refill since updated_at is counted once more.)
    updated_at = CASE WHEN (v.req_up AND v.req_left IS NOT NULL)
                        OR (v.tok_up AND v.tok_left IS NOT NULL)
                      THEN greatest(b.updated_at, now()) ELSE b.updated_at END,
    rpm = least(b.rpm_configured, coalesce(%(limit_requests)s::int, b.rpm_configured)),
    tpm = least(b.tpm_configured, coalesce(%(limit_tokens)s::int, b.tpm_configured)),
    provider_limited_until = CASE
        WHEN %(remaining_requests)s::float8 < 1
            THEN now() + make_interval(secs => 60.0 / b.rpm)
        WHEN %(remaining_tokens)s::float8 < %(estimated)s
            THEN now() + make_interval(secs => 60.0 * %(estimated)s / b.tpm)
        ELSE b.provider_limited_until END,
    rate_factor = least(1.0, b.rate_factor + 0.02),
    in_flight_requests = greatest(0, b.in_flight_requests - 1),
    in_flight_tokens = greatest(0, b.in_flight_tokens - %(estimated)s),
    tokens_total = b.tokens_total + %(actual)s
FROM believed v
WHERE b.platform = v.platform AND b.model = v.model AND b.key_id = v.key_id;


-- name: rate_release
-- A call that ended without the provider's verdict on the budget (5xx, timeout, connection
-- error, an auth error): it is no longer in flight.
UPDATE jobqueue.rate_buckets
SET in_flight_requests = greatest(0, in_flight_requests - 1),
    in_flight_tokens = greatest(0, in_flight_tokens - %(estimated)s)
WHERE platform = %(platform)s AND model = %(model)s AND key_id = %(key_id)s;


-- name: rate_block
-- A 429: nobody in any process uses this key until the provider's retry-after has passed.
-- The buckets then restart empty: levels at most 0 and `updated_at` at the end of the block,
-- so refill is counted from when the key may be used again, not from when it was blocked
-- (which would hand it a full bucket to burst into the next 429). The key's pace drops
-- multiplicatively (x0.7, not below 0.1): a key refused again and again slows down until the
-- provider stops refusing, then recovers additively in rate_settle.
UPDATE jobqueue.rate_buckets
SET blocked_until = greatest(coalesce(blocked_until, now()),
                             now() + make_interval(secs => %(seconds)s)),
    provider_limited_until = greatest(coalesce(provider_limited_until, now()),
                                      now() + make_interval(secs => %(seconds)s)),
    req_level = least(req_level, 0), tok_level = least(tok_level, 0),
    updated_at = greatest(coalesce(blocked_until, now()),
                          now() + make_interval(secs => %(seconds)s)),
    rate_factor = greatest(0.1, rate_factor * 0.7),
    in_flight_requests = greatest(0, in_flight_requests - 1),
    in_flight_tokens = greatest(0, in_flight_tokens - %(estimated)s),
    throttled_total = throttled_total + 1
WHERE platform = %(platform)s AND model = %(model)s AND key_id = %(key_id)s;


-- name: rate_scope_get
SELECT scope FROM jobqueue.rate_scopes WHERE platform = %(platform)s;


-- name: rate_scope_learn
-- A 429 showed that the provider counts every model against the key: every process switches
-- to one budget per key when it next looks (rate_scope_get).
INSERT INTO jobqueue.rate_scopes (platform, scope, evidence)
VALUES (%(platform)s, 'key', %(evidence)s)
ON CONFLICT (platform) DO NOTHING;


-- name: rate_disable
UPDATE jobqueue.rate_buckets SET disabled_reason = %(reason)s
WHERE platform = %(platform)s AND key_id = %(key_id)s;


-- name: rate_state
-- Rate-limit use per platform key, for status and the dashboard (levels refilled to now).
SELECT platform, model, key_id, rpm, tpm, rpm_configured, tpm_configured,
       greatest(req_level, least(greatest(2.0, rpm * burst_seconds / 60.0),
             req_level + greatest(0, extract(epoch FROM now() - updated_at))
                         * rpm * rate_factor / 60.0)) AS req_available,
       greatest(tok_level, least(greatest(1.0, tpm * burst_seconds / 60.0),
             tok_level + greatest(0, extract(epoch FROM now() - updated_at))
                         * tpm * rate_factor / 60.0)) AS tok_available,
       rate_factor, in_flight_requests,
       blocked_until, disabled_reason, requests_total, tokens_total, throttled_total,
       burst_seconds,
       -- Seconds since the key last took a reservation (or a worker started on it): `status`
       -- shows the keys used in the last hour. Negative while a block's end is ahead.
       extract(epoch FROM now() - updated_at)::float8 AS idle_seconds
FROM jobqueue.rate_buckets
WHERE (%(platform)s::text IS NULL OR platform = %(platform)s::text)
ORDER BY platform, model, key_id;


-- name: rate_any_usable
-- Whether a platform has a key that is not disabled: while it has none its workers stop
-- claiming (jobs stay waiting, attempts untouched) until `jobqueue keys enable`.
-- `incident` names the set of disabled keys and their reasons, the same in every process: the
-- alert it raises is sent once, whichever worker noticed first.
SELECT coalesce(bool_or(disabled_reason IS NULL), true) AS usable,
       md5(coalesce(string_agg(DISTINCT key_id || ':' || disabled_reason, ','), '')) AS incident
FROM jobqueue.rate_buckets
WHERE platform = %(platform)s AND key_id = ANY(%(keys)s);


-- name: rate_key_set_disabled
-- `jobqueue keys enable|disable NAME`: NAME is a key id (VAR:hash) or its variable's name
-- (every key read from that variable). Workers see the change at their next reservation.
UPDATE jobqueue.rate_buckets
SET disabled_reason = %(reason)s
WHERE (key_id = %(name)s OR split_part(key_id, ':', 1) = %(name)s)
  AND (%(platform)s::text IS NULL OR platform = %(platform)s::text)
RETURNING platform, model, key_id;


-- name: platform_budgets
-- The ETA of a batch on a rate-limited platform (jobqueue/batches/eta.py): per platform,
-- whether it is limited now and the requests per second its usable keys allow: per key the
-- largest of its models' RPM times the AIMD pace (a key's models share the key in the
-- worst case, limit_scope = "key"), summed over the keys, over 60.
SELECT p.platform, jobqueue.queue_rate_limited(p.platform) AS rate_limited,
       (SELECT sum(k.rpm) / 60.0 FROM (
            SELECT max(b.rpm * b.rate_factor) AS rpm FROM jobqueue.rate_buckets b
            WHERE b.platform = p.platform AND b.disabled_reason IS NULL
            GROUP BY b.key_id) AS k)::float8 AS requests_per_second
FROM unnest(%(platforms)s::text[]) AS p(platform);
