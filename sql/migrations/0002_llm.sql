-- 0002: what LLM platforms need: shared rate-limit state, the response cache, batches.

-- One token bucket pair per (platform, model, api key), shared by every worker process.
-- Providers limit per model and key; the fallback model has buckets of its own.
-- Levels refill continuously from the database clock (one clock for every host), up to a
-- capacity of `burst_seconds` of budget: providers enforce per-minute limits at sub-minute
-- granularity, so a full minute's burst would draw 429s.
CREATE TABLE jobqueue.rate_buckets (
    platform        text        NOT NULL,
    model           text        NOT NULL,
    key_id          text        NOT NULL,  -- env var name + a short hash: never the key itself
    rpm_configured  integer     NOT NULL CHECK (rpm_configured > 0),
    tpm_configured  integer     NOT NULL CHECK (tpm_configured > 0),
    rpm             integer     NOT NULL CHECK (rpm > 0),  -- in force: configured, or less
    tpm             integer     NOT NULL CHECK (tpm > 0),  -- when the provider says less
    burst_seconds   real        NOT NULL DEFAULT 3 CHECK (burst_seconds > 0),
    req_level       float8      NOT NULL,  -- requests that may start now
    tok_level       float8      NOT NULL,  -- tokens that may be spent now (may go negative)
    updated_at      timestamptz NOT NULL DEFAULT now(),
    blocked_until   timestamptz,           -- after a 429: nobody uses the key until then
    disabled_reason text,                  -- insufficient_quota: skipped until workers restart
    requests_total  bigint      NOT NULL DEFAULT 0,
    tokens_total    bigint      NOT NULL DEFAULT 0,
    throttled_total bigint      NOT NULL DEFAULT 0,  -- 429s received
    PRIMARY KEY (platform, model, key_id)
);

-- Responses by hash of (base_url, model, messages, parameters). A row with no response yet is
-- a call in flight: identical requests wait for it instead of calling again.
CREATE TABLE jobqueue.llm_cache (
    key           text        PRIMARY KEY,  -- sha256 hex of the canonical request
    response      jsonb,
    pending_until timestamptz,              -- in flight until then (the caller's timeout)
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    hits          bigint      NOT NULL DEFAULT 0
);
CREATE INDEX llm_cache_expires_idx ON jobqueue.llm_cache (expires_at);

-- A named group of jobs created by one submit; counts come from the jobs themselves.
CREATE TABLE jobqueue.batches (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text,
    queue      text        NOT NULL,
    owner      text,
    total      integer     NOT NULL DEFAULT 0,
    source     text,                        -- the file it came from, for people
    created_at timestamptz NOT NULL DEFAULT now(),
    metadata   jsonb       NOT NULL DEFAULT '{}'
);
