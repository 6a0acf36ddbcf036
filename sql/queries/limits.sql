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
       blocked_until, disabled_reason, requests_total, tokens_total, throttled_total,
       burst_seconds
FROM jobqueue.rate_buckets
WHERE (%(platform)s::text IS NULL OR platform = %(platform)s::text)
ORDER BY platform, model, key_id;
