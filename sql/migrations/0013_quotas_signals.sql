-- Per-owner quotas on new work (jobqueue/quotas.py), separate read and write buckets for API
-- tokens, connections per worker process, and the scaling signals' stable SQL contract.

-- A quota: at most `jobs` new jobs per `jobs_seconds`, and at most `tokens` estimated LLM
-- tokens per `tokens_seconds`, for each owner, on one queue or one job kind. Either budget may
-- be absent. `source` says who wrote the row: 'config' rows mirror jobqueue.toml's [quotas]
-- (replaced on each `jobqueue migrate` / `jobqueue quotas apply`), 'api' rows were set with the
-- CLI or the HTTP API and are left alone by a config apply.
CREATE TABLE jobqueue.quotas (
    scope          text        NOT NULL CHECK (scope IN ('queue', 'kind')),
    name           text        NOT NULL,
    jobs           integer     CHECK (jobs > 0),
    jobs_seconds   real        CHECK (jobs_seconds > 0),
    tokens         bigint      CHECK (tokens > 0),
    tokens_seconds real        CHECK (tokens_seconds > 0),
    source         text        NOT NULL DEFAULT 'api' CHECK (source IN ('config', 'api')),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name),
    CHECK ((jobs IS NULL) = (jobs_seconds IS NULL)),
    CHECK ((tokens IS NULL) = (tokens_seconds IS NULL)),
    CHECK (jobs IS NOT NULL OR tokens IS NOT NULL)
);

-- Each owner's use of a quota: two token buckets like the provider limiter's, refilled
-- continuously from the database clock up to the quota's full budget (a whole period's worth:
-- "10/min" lets 10 through at once, then one every 6 s). Rows appear on an owner's first
-- enqueue and are pruned once full again (nothing to remember).
CREATE TABLE jobqueue.quota_usage (
    scope        text        NOT NULL,
    name         text        NOT NULL,
    owner        text        NOT NULL,
    jobs_level   float8      NOT NULL,  -- jobs that may be created now
    tokens_level float8      NOT NULL,  -- tokens that may be spent now (may go negative)
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name, owner),
    FOREIGN KEY (scope, name) REFERENCES jobqueue.quotas (scope, name)
        ON DELETE CASCADE ON UPDATE CASCADE
);

-- The HTTP rate limit in two buckets per token: reads (GET, SSE, ?wait) spend `level` at
-- `rate_limit` per minute; writes spend `write_level` at `write_rate_limit` per minute (NULL:
-- the same rate as reads). A client that exhausted its writes can still poll what it made.
ALTER TABLE jobqueue.api_tokens
    ADD COLUMN write_rate_limit integer CHECK (write_rate_limit > 0),
    ADD COLUMN write_level      float8      NOT NULL DEFAULT 0,
    ADD COLUMN write_updated_at timestamptz NOT NULL DEFAULT now();
UPDATE jobqueue.api_tokens SET write_level = level, write_updated_at = updated_at;

-- Connections each worker process holds open, reported with its heartbeat (counted by the
-- process itself, so the figure is right behind PgBouncer too, where pg_stat_activity shows
-- the pooler's connections rather than the workers').
ALTER TABLE jobqueue.workers ADD COLUMN connections integer NOT NULL DEFAULT 0;

-- The scaling contract (deploy/keda-scaledobject.yaml queries it): jobs of a queue that need
-- a worker now, i.e. waiting (runnable, unleased) plus running (leased). Scheduled and
-- retrying jobs are not counted: no worker can start them yet. Stable: its name, argument and
-- meaning do not change without a new function name. Two index scans (the claim index for
-- waiting rows, the lease index for running ones), so it stays cheap on a deep queue.
CREATE FUNCTION jobqueue.queue_depth(queue_name text) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (SELECT count(*) FROM jobqueue.jobs
            WHERE queue = queue_name AND lease_owner IS NULL AND run_at <= now())
         + (SELECT count(*) FROM jobqueue.jobs
            WHERE queue = queue_name AND lease_owner IS NOT NULL)
$$;

-- Whether a queue is a platform whose provider has no headroom now: it has rate buckets and no
-- key of any of its models could start a request this moment (disabled, blocked after a 429,
-- or out of requests or tokens, levels refilled to now at the configured rate; updated_at may
-- lie ahead, at the end of a block). A sample: under a steady saturating load the buckets
-- hover near empty and this flips with each refill, which is the point: the queue goes as
-- fast as the provider lets it. (The limiter's own slowed pace after 429s, rate_factor, is
-- left out: a key it paces down still reads as having headroom a little sooner.)
CREATE FUNCTION jobqueue.queue_rate_limited(queue_name text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM jobqueue.rate_buckets WHERE platform = queue_name)
       AND NOT EXISTS (
           SELECT 1 FROM jobqueue.rate_buckets
           WHERE platform = queue_name AND disabled_reason IS NULL
             AND (blocked_until IS NULL OR blocked_until <= now())
             AND req_level + greatest(0, extract(epoch FROM now() - updated_at)) * rpm / 60.0
                 >= 1
             AND tok_level + greatest(0, extract(epoch FROM now() - updated_at)) * tpm / 60.0
                 > 0)
$$;

-- Age in seconds of the oldest job of a queue that could run now and waits for a worker
-- (0 when none): the latency signal. Jobs waiting for a provider's rate limit hold their
-- lease while they wait (jobqueue/llm/ratelimit.py), so they are running, not counted here;
-- and while the queue's platform has no headroom on any key (see jobqueue.queue_rate_limited)
-- the waiting jobs wait for the provider, not for a worker, and the latency is 0: more
-- workers would not help. Stable like queue_depth.
CREATE FUNCTION jobqueue.queue_latency(queue_name text) RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jobqueue.queue_rate_limited(queue_name) THEN 0
                ELSE coalesce(extract(epoch FROM now() - (
                         SELECT min(run_at) FROM jobqueue.jobs
                         WHERE queue = queue_name AND lease_owner IS NULL
                           AND run_at <= now()))::float8, 0) END
$$;
