-- The whole current schema in one file, for reading. It must equal what the numbered
-- migrations build (tests/test_migrations.py compares the two catalogs); change both together.
-- (The jobqueue.migrations bookkeeping table is left out: see migrations_table.sql.)

CREATE SCHEMA IF NOT EXISTS jobqueue;

-- One sequence for both job tables: an id stays valid when a job moves from `jobs` (hot) to
-- `finished` (cold), so lookups by id work for the whole life of a job.
CREATE SEQUENCE jobqueue.job_id_seq AS bigint;

-- The hot table: only work that is waiting, scheduled or running. It stays small (finished
-- rows leave at once), so the claim index is tiny and vacuum is cheap.
-- A job is running exactly when lease_owner is set; waiting when it is not and run_at has come;
-- scheduled or retrying (after a failed attempt) when run_at is in the future: see
-- jobqueue.job_state at the end of this file, the one definition every query uses.
CREATE TABLE jobqueue.jobs (
    id               bigint      PRIMARY KEY DEFAULT nextval('jobqueue.job_id_seq'),
    queue            text        NOT NULL,
    kind             text        NOT NULL,           -- the task name
    payload          jsonb       NOT NULL DEFAULT '{}',
    priority         smallint    NOT NULL DEFAULT 0, -- lower runs first (high = -10, low = 10)
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempts         integer     NOT NULL DEFAULT 0, -- attempts started, this one included
    max_attempts     integer     NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    timeout_seconds  real        CHECK (timeout_seconds > 0),
    -- lease_owner is the worker process id; together with `attempts` it is the fencing token:
    -- completion only applies while both still match what the worker claimed.
    lease_owner      uuid,
    lease_expires_at timestamptz,
    cancel_requested boolean     NOT NULL DEFAULT false,
    errors           jsonb       NOT NULL DEFAULT '[]', -- one object per failed attempt
    progress         jsonb,
    owner            text,
    batch_id         bigint,
    idempotency_key  text,
    metadata         jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    -- Drawn at random once by each claim statement (0006): with the id it names one
    -- execution, unlike (id, attempts), which a claim forgotten in a crash repeats.
    execution_id     uuid,
    -- The job's place in its owner's turn in a fair queue (0012); NULL in other queues.
    fair_round       bigint,
    -- Some blocked job depends on this one (0015): its end runs the release step.
    has_children     boolean     NOT NULL DEFAULT false,
    -- Where the claim takes it within its priority (0024, 0030): 0 a due retry placed before
    -- new work (its queue's retry_order 'first'), 1 everything else, 2 such a retry still
    -- backing off (parked after the due work; maintenance moves it to 0 once due).
    lane             smallint    NOT NULL DEFAULT 1 CONSTRAINT jobs_lane CHECK (lane IN (0, 1, 2)),
    CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
);

-- The claim: `WHERE queue = $1 AND lease_owner IS NULL AND run_at <= now()
-- ORDER BY priority, lane, run_at, id` (lane: 0024). Partial, so running rows never bloat it.
CREATE INDEX jobs_claim_idx ON jobqueue.jobs (queue, priority, lane, run_at, id)
    WHERE lease_owner IS NULL;
-- Heartbeats, hand-backs and the rescuer find running rows by owner and by expiry.
CREATE INDEX jobs_lease_idx ON jobqueue.jobs (lease_owner, lease_expires_at)
    WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_batch_idx ON jobqueue.jobs (batch_id) WHERE batch_id IS NOT NULL;
-- Maintenance's question, which parked retries are due (0030).
CREATE INDEX jobs_parked_idx ON jobqueue.jobs (run_at) WHERE lane = 2 AND lease_owner IS NULL;
-- The claim of a fair queue: `ORDER BY priority, fair_round, id` (0012_fair_caps.sql). Only
-- fair queues' waiting rows have a round, so other queues never enter it.
CREATE INDEX jobs_fair_idx ON jobqueue.jobs (queue, priority, fair_round, id)
    WHERE lease_owner IS NULL AND fair_round IS NOT NULL;

-- The cold table: succeeded, dead and cancelled jobs with their results. Written once, read by
-- id, batch or state, pruned by age.
CREATE TABLE jobqueue.finished (
    id               bigint      PRIMARY KEY,
    queue            text        NOT NULL,
    kind             text        NOT NULL,
    payload          jsonb       NOT NULL,
    priority         smallint    NOT NULL,
    run_at           timestamptz NOT NULL,
    attempts         integer     NOT NULL,
    max_attempts     integer     NOT NULL,
    timeout_seconds  real,
    state            text        NOT NULL CHECK (state IN ('succeeded', 'dead', 'cancelled')),
    result           jsonb,
    errors           jsonb       NOT NULL,
    progress         jsonb,
    owner            text,
    batch_id         bigint,
    idempotency_key  text,
    metadata         jsonb       NOT NULL,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz NOT NULL DEFAULT now(),
    execution_id     uuid         -- the claim token of the execution that ended it
);
-- Rows arrive in finished_at order, so a BRIN index serves pruning for almost nothing.
CREATE INDEX finished_finished_at_brin ON jobqueue.finished USING brin (finished_at);
-- (batch_id, id) since 0023: a batch's jobs in id order (the batch page's answers).
CREATE INDEX finished_batch_id_idx ON jobqueue.finished (batch_id, id)
    WHERE batch_id IS NOT NULL;
-- The dead-letter view lists dead jobs per queue, newest first.
CREATE INDEX finished_dead_idx ON jobqueue.finished (queue, finished_at DESC)
    WHERE state = 'dead';

-- Idempotency keys, unique per (owner, queue), across the job tables. A separate table
-- because a unique index cannot span `jobs`, `blocked` and `finished`; only keyed jobs pay
-- for it. Scoped by queue (0015): one prompt file sent to two platforms makes two jobs.
CREATE TABLE jobqueue.idempotency_keys (
    owner      text        NOT NULL DEFAULT '',
    key        text        NOT NULL,
    job_id     bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    queue      text        NOT NULL,
    PRIMARY KEY (owner, queue, key)
);
CREATE INDEX idempotency_keys_job_idx ON jobqueue.idempotency_keys (job_id);

-- Worker processes, registered at start and kept fresh by their heartbeat.
CREATE TABLE jobqueue.workers (
    id           uuid        PRIMARY KEY,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    queue        text        NOT NULL,
    concurrency  integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    in_flight    integer     NOT NULL DEFAULT 0,
    -- Connections the process holds open, reported with its heartbeat (0013): counted by the
    -- process itself, so the figure is right behind PgBouncer too.
    connections  integer     NOT NULL DEFAULT 0,
    -- An operator's request (0023): 'quiet' (claim nothing more) or 'stop' (finish in-flight
    -- work and exit), read by the worker's heartbeat; and who asked.
    control      text        CHECK (control IN ('quiet', 'stop')),
    control_by   text,
    -- Jobs claimed and outcomes written since the process started (0027), with each heartbeat.
    claimed      bigint      NOT NULL DEFAULT 0,
    finished     bigint      NOT NULL DEFAULT 0
);

-- Manual actions on jobs (0023): retry, cancel, run now, ... with who did them, for the job's
-- timeline (jobqueue/audit.py). Not a foreign key: a job moves between tables under one id.
CREATE TABLE jobqueue.job_actions (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  bigint      NOT NULL,
    action  text        NOT NULL CHECK (action <> ''),
    actor   text        NOT NULL,
    via     text        NOT NULL CHECK (via IN ('dashboard', 'api', 'cli')),
    at      timestamptz NOT NULL DEFAULT now(),
    detail  text
);
CREATE INDEX job_actions_job_idx ON jobqueue.job_actions (job_id, id);

-- What the job list shows of a job's payload (0023): an LLM job's prompt, i.e. its last user
-- message (a chat's `messages`) or its `prompt`; NULL for other payloads, which the list shows
-- as JSON. A content given as parts comes back as their JSON.
CREATE FUNCTION jobqueue.prompt_preview(payload jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        (SELECT CASE jsonb_typeof(m -> 'content') WHEN 'string' THEN m ->> 'content'
                                                  ELSE (m -> 'content')::text END
         FROM jsonb_array_elements(CASE jsonb_typeof(payload -> 'messages')
                                       WHEN 'array' THEN payload -> 'messages'
                                       ELSE '[]'::jsonb END) WITH ORDINALITY AS e(m, n)
         WHERE jsonb_typeof(m) = 'object' AND m ->> 'role' = 'user'
         ORDER BY n DESC LIMIT 1),
        CASE jsonb_typeof(payload -> 'prompt') WHEN 'string' THEN payload ->> 'prompt' END)
$$;

-- A job's queue wait and run time in seconds, for the job list (0023): the wait runs from
-- run_at (when it could start) to its start, or to now while it waits for a worker; the run
-- time from its start to its end, or to now while it runs. NULL where there is none yet (a
-- scheduled job's wait, a waiting job's run time, a job cancelled before it started).
CREATE FUNCTION jobqueue.queue_wait_seconds(state text, run_at timestamptz,
                                           started_at timestamptz) RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state IN ('waiting', 'retrying') THEN
                    greatest(0, extract(epoch FROM now() - run_at))::float8
                WHEN state IN ('running', 'succeeded', 'dead', 'cancelled')
                     AND started_at IS NOT NULL THEN
                    greatest(0, extract(epoch FROM started_at - run_at))::float8 END
$$;

CREATE FUNCTION jobqueue.run_seconds(state text, started_at timestamptz,
                                    finished_at timestamptz) RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN state = 'running' THEN
                    greatest(0, extract(epoch FROM now() - started_at))::float8
                WHEN finished_at IS NOT NULL AND started_at IS NOT NULL THEN
                    greatest(0, extract(epoch FROM finished_at - started_at))::float8 END
$$;

-- Rows leaving `finished` (0023): a retry moves a dead job back to `jobs`, deletes and pruning
-- remove rows. The dashboard keeps the per-minute counts of minutes that are over (they do
-- not change while nothing leaves `finished`) and reads this sequence to know when one may
-- have: then it reads them again, so its charts agree with the tables after retries (a job
-- retried and dead again counts once). A sequence, not a counter row: deleting statements
-- never wait on each other for it. Read on the primary (a standby sees sequences in steps).
CREATE SEQUENCE jobqueue.finished_removals;

CREATE FUNCTION jobqueue.note_finished_removal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM gone) THEN
        PERFORM nextval('jobqueue.finished_removals');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER finished_removal_noted
    AFTER DELETE ON jobqueue.finished
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION jobqueue.note_finished_removal();

-- Wake idle workers when runnable work arrives. Statement level, so a batch insert of 20,000
-- rows sends one notification per queue, not 20,000 (Postgres also folds duplicates within a
-- transaction). Scheduled rows send "queue epoch": when the earliest of them is due.
CREATE FUNCTION jobqueue.notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobqueue_insert', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE run_at <= now()) AS q;
    PERFORM pg_notify('jobqueue_insert', s.queue || ' ' || extract(epoch FROM s.due)::text)
    FROM (SELECT queue, min(run_at) AS due FROM inserted WHERE run_at > now()
          GROUP BY queue) AS s;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_inserted
    AFTER INSERT ON jobqueue.jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION jobqueue.notify_inserted();


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
    -- 0017 (the limiter under contention): see the comments in that migration.
    rate_factor            float8      NOT NULL DEFAULT 1
        CHECK (rate_factor > 0 AND rate_factor <= 1),  -- AIMD pace: x0.7 per 429, +0.02 per call
    in_flight_requests     integer     NOT NULL DEFAULT 0,  -- reserved, not yet settled
    in_flight_tokens       bigint      NOT NULL DEFAULT 0,
    provider_limited_until timestamptz,  -- the provider said the budget is gone (429, headers)
    PRIMARY KEY (platform, model, key_id)
);

-- Whether a platform's provider counts every model against the key ('key') or gives each
-- model its own budget ('model'); configured, or learned from a 429 naming no model or another.
CREATE TABLE jobqueue.rate_scopes (
    platform   text        PRIMARY KEY,
    scope      text        NOT NULL CHECK (scope IN ('key', 'model')),
    learned_at timestamptz NOT NULL DEFAULT now(),
    evidence   text
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
    metadata   jsonb       NOT NULL DEFAULT '{}',
    on_complete_job bigint,   -- the blocked job that waits for every member (0015)
    completed_at    timestamptz  -- when that job was released: the batch completed
);

-- Batches sent through the provider's Batch API (batch submit --via batch-api).
-- One row per provider batch: one input file of at most the provider's request and byte
-- limits, for one platform. Its jobs stay in jobqueue.jobs, leased to the row's `lease` (in
-- place of a worker id) for the whole time the provider holds them: no worker claims them, a
-- cancel marks them as for any running job, and the import finishes or releases them through
-- the same fenced statements a worker uses (finish_jobs, retry_jobs), so a lease the rescuer
-- took back meanwhile is never overwritten. The lease runs out after the completion window
-- and a margin (jobqueue/llm/batchapi.py): if nobody ever polls, the rescuer re-queues them.
--
-- status is ours: pending (made; its file not yet uploaded or the batch not yet created),
-- submitted (the provider has it; provider_status says how far it is), imported (its outputs
-- and errors are in the jobs). next_poll_at is when the maintenance leader looks next; the
-- leader moves it forward before it calls the provider, so one leader at a time polls a row.
CREATE TABLE jobqueue.provider_batches (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id          bigint      NOT NULL,
    platform          text        NOT NULL,
    lease             uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    key_env           text        NOT NULL,    -- the variable of the key it was sent with
    requests          integer     NOT NULL CHECK (requests > 0),
    on_expiry         text        NOT NULL CHECK (on_expiry IN ('requeue', 'dead')),
    status            text        NOT NULL DEFAULT 'pending'
                                  CHECK (status IN ('pending', 'submitted', 'imported')),
    provider_status   text,
    provider_batch_id text,
    input_file_id     text,
    output_file_id    text,
    error_file_id     text,
    polls             integer     NOT NULL DEFAULT 0,
    next_poll_at      timestamptz NOT NULL DEFAULT now(),
    last_error        text,
    succeeded         integer,
    failed            integer,
    requeued          integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    submitted_at      timestamptz,
    imported_at       timestamptz
);
-- The leader's question at every pass: which unfinished rows are due.
CREATE INDEX provider_batches_due_idx ON jobqueue.provider_batches (next_poll_at)
    WHERE status <> 'imported';
CREATE INDEX provider_batches_batch_idx ON jobqueue.provider_batches (batch_id);


-- Bearer tokens, stored as SHA-256 hashes (the token itself is shown once, at creation).
-- Each carries its own request bucket: authenticating a request and charging its rate limit
-- is one UPDATE on this row.
CREATE TABLE jobqueue.api_tokens (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash   text        NOT NULL UNIQUE,
    prefix       text        NOT NULL,          -- the first characters, to tell tokens apart
    owner        text        NOT NULL,
    -- viewer (0026): signs in to the dashboard read-only; adds nothing in the API
    scopes       text[]      NOT NULL CHECK (scopes <@ ARRAY['read', 'write', 'admin', 'viewer']),
    rate_limit   integer     NOT NULL DEFAULT 300 CHECK (rate_limit > 0),  -- per minute
    level        float8      NOT NULL DEFAULT 0,  -- requests available; refills rate_limit/min
    updated_at   timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    note         text,
    -- Writes have a bucket of their own (0013): `level` above is for reads (GET, SSE, ?wait)
    -- at `rate_limit` per minute; writes spend `write_level` at `write_rate_limit` per minute
    -- (NULL: rate_limit). A client that exhausted its writes can still poll what it made.
    write_rate_limit integer     CHECK (write_rate_limit > 0),
    write_level      float8      NOT NULL DEFAULT 0,
    write_updated_at timestamptz NOT NULL DEFAULT now()
);

-- Uploaded documents, kept in Postgres (the only store). The text is extracted by a job.
CREATE TABLE jobqueue.documents (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner        text,
    filename     text        NOT NULL,
    content_type text        NOT NULL,
    size         integer     NOT NULL,
    data         bytea       NOT NULL,
    text         text,
    job_id       bigint,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Queue settings an operator changes at run time, read by every claim (0012_fair_caps.sql):
-- paused (workers claim nothing until resumed); fleet-wide caps on running jobs, in all and
-- per owner (jobs without an owner count as one owner); fair shares between owners. A
-- per-owner cap needs the fair order, so it implies fairness. Most queues have no row.
CREATE TABLE jobqueue.queues (
    name                  text        PRIMARY KEY,
    paused                boolean     NOT NULL DEFAULT false,
    paused_at             timestamptz,
    max_running           integer     CHECK (max_running > 0),
    max_running_per_owner integer     CHECK (max_running_per_owner > 0),
    fair                  boolean     NOT NULL DEFAULT false,
    updated_at            timestamptz,
    -- Where retries go in the plain claim's order (0024): 'first' before new work of the same
    -- priority, 'last' after it.
    retry_order           text        NOT NULL DEFAULT 'first'
        CONSTRAINT queues_retry_order CHECK (retry_order IN ('first', 'last')),
    CONSTRAINT queues_per_owner_cap_is_fair CHECK (max_running_per_owner IS NULL OR fair)
);

-- Finished jobs counted per (queue, state), kept by statement-level triggers, so overviews
-- and metrics do not count a large `finished` table on every refresh.
CREATE TABLE jobqueue.finished_counts (
    queue text   NOT NULL,
    state text   NOT NULL,
    count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, state)
);

CREATE FUNCTION jobqueue.count_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO jobqueue.finished_counts AS c (queue, state, count)
        SELECT queue, state, count(*) FROM changed GROUP BY queue, state
        ORDER BY queue, state  -- one lock order for every writer: no deadlocks
        ON CONFLICT (queue, state) DO UPDATE SET count = c.count + excluded.count;
    ELSE
        UPDATE jobqueue.finished_counts c SET count = c.count - d.n
        FROM (SELECT queue, state, count(*) AS n FROM changed GROUP BY queue, state
              ORDER BY queue, state) AS d
        WHERE c.queue = d.queue AND c.state = d.state;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER finished_count_inserted
    AFTER INSERT ON jobqueue.finished
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION jobqueue.count_finished();

CREATE TRIGGER finished_count_deleted
    AFTER DELETE ON jobqueue.finished
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION jobqueue.count_finished();

-- Settings the web processes share, e.g. the session-signing secret when none is configured
-- (every Gunicorn worker and instance must sign cookies alike).
CREATE TABLE jobqueue.settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- The dashboard's job filter, defined once (see 0005_dashboard_filter.sql).
CREATE FUNCTION jobqueue.dashboard_match(
    id bigint, queue text, kind text, owner text, batch_id bigint, state text,
    payload jsonb, metadata jsonb, errors jsonb,
    f_ids bigint[], f_upto bigint, f_queue text, f_kind text, f_owner text,
    f_batch_id bigint, f_state text, f_text text
) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (f_ids IS NULL OR id = ANY(f_ids))
       AND (f_upto IS NULL OR id <= f_upto)
       AND (f_queue IS NULL OR queue = f_queue)
       AND (f_kind IS NULL OR kind = f_kind)
       AND (f_owner IS NULL OR owner = f_owner)
       AND (f_batch_id IS NULL OR batch_id = f_batch_id)
       AND (f_state IS NULL OR state = f_state)
       AND (f_text IS NULL
            OR (payload::text || E'\n' || metadata::text || E'\n' || errors::text) ILIKE f_text)
$$;

-- Jobs waiting for other jobs (depends_on) to end. Kept out of `jobs` altogether, so the
-- claim, its index and the hot table's vacuum never see them: 10,000 children of one parent
-- cost the claim of unrelated work nothing. A row moves to `jobs` (released) inside the
-- transaction that ends its last parent, or to `finished` as cancelled when a parent ended
-- dead or cancelled and on_parent_failure is 'cancel'. Its id is drawn from the job sequence
-- like any job's and stays its id after it moves.
CREATE TABLE jobqueue.blocked (
    id                bigint      PRIMARY KEY,
    queue             text        NOT NULL,
    kind              text        NOT NULL,
    payload           jsonb       NOT NULL DEFAULT '{}',
    priority          smallint    NOT NULL DEFAULT 0,
    run_at            timestamptz,  -- NULL: runnable the moment it is released
    max_attempts      integer     NOT NULL CHECK (max_attempts > 0),
    timeout_seconds   real        CHECK (timeout_seconds > 0),
    owner             text,
    batch_id          bigint,
    idempotency_key   text,
    metadata          jsonb       NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- What a parent ending dead or cancelled does to this job: cancel it (at once), or let
    -- it run anyway once every parent has ended.
    on_parent_failure text        NOT NULL DEFAULT 'cancel'
                                  CHECK (on_parent_failure IN ('cancel', 'run')),
    waiting_on        integer     NOT NULL CHECK (waiting_on >= 0),  -- parents not ended yet
    -- How its parents ended so far (a batch callback's counts come from these).
    parents_succeeded integer     NOT NULL DEFAULT 0,
    parents_dead      integer     NOT NULL DEFAULT 0,
    parents_cancelled integer     NOT NULL DEFAULT 0,
    has_children      boolean     NOT NULL DEFAULT false,  -- as in `jobs`
    -- Set on a batch's on_complete job: released, it receives the batch id and counts.
    completes_batch   bigint
);
CREATE INDEX blocked_batch_idx ON jobqueue.blocked (batch_id) WHERE batch_id IS NOT NULL;

-- One row per (parent, child) while the parent has not ended. The release step deletes a
-- parent's edges as it ends, so the table holds only pending waits.
CREATE TABLE jobqueue.job_dependencies (
    parent_id bigint NOT NULL,
    child_id  bigint NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX job_dependencies_child_idx ON jobqueue.job_dependencies (child_id);

-- Batch rows whose idempotency key already named a job: no job was made; the row points at
-- the existing one. `id` is the id drawn for the row (from the job sequence, in input
-- order), so a batch's rows, jobs and duplicates together, page in input order by id.
CREATE TABLE jobqueue.batch_duplicates (
    id       bigint PRIMARY KEY,
    batch_id bigint NOT NULL,
    job_id   bigint NOT NULL  -- the existing job
);
CREATE INDEX batch_duplicates_batch_idx ON jobqueue.batch_duplicates (batch_id, id);

-- A job's visible state and its move to `finished`, each defined once (see
-- 0007_job_state.sql for the reasons).
-- The state of a row of the hot table. The seven visible states:
--   running    leased by a worker (lease_owner is set);
--   waiting    not leased and runnable now (run_at has come): exactly what the claim takes,
--              `lease_owner IS NULL AND run_at <= now()`, the claim index's predicate;
--   retrying   not leased, run_at in the future, and an attempt has failed (attempts > 0
--              and errors non-empty): waiting out its backoff before the next attempt;
--   scheduled  not leased, run_at in the future, never failed (enqueued with a delay, or
--              revived: revival resets attempts to 0 and keeps the error history);
--   succeeded, dead, cancelled: the `state` column of `finished`.
-- A retrying job whose backoff is over is waiting again (as Oban's retryable jobs become
-- available): `waiting` always counts the whole runnable backlog.
-- A one-expression SQL function, STABLE (now()), not STRICT: the planner inlines it, so it
-- costs what the CASE written out would. Columns rather than the whole row, so a scan of
-- `jobs` does not build a composite value per row to call it.
-- A job paused over budget (progress.paused, 0025) is waiting too, though its run_at (when it
-- is looked at again) lies ahead.
CREATE FUNCTION jobqueue.job_state(
    lease_owner uuid, run_at timestamptz, attempts integer, errors jsonb, progress jsonb
) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN lease_owner IS NOT NULL THEN 'running'
                WHEN run_at <= now() THEN 'waiting'
                WHEN progress ->> 'paused' = 'over budget' THEN 'waiting'
                WHEN attempts > 0 AND errors <> '[]'::jsonb THEN 'retrying'
                ELSE 'scheduled' END
$$;

-- What a job keeps of its progress when it goes back to the queue for any reason but a pause
-- over budget (a retry, a rescue, a hand-back, a manual retry): the budget's marker
-- ({"paused": "over budget", ...}, jobqueue/llm/spend.py) goes, a handler's own progress stays
-- (0031). Inlined by the planner.
CREATE FUNCTION jobqueue.unpaused(progress jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN progress ->> 'paused' = 'over budget' THEN progress - 'paused'
                ELSE progress END
$$;

-- Every job, hot or finished, with its visible state: the one relation reads of "a job" or
-- "jobs matching X" go through (get_job, the dashboard's list and counts, batch pages);
-- blocked jobs (0015) are its third branch.
-- A job moves between the tables inside one transaction, so one snapshot of the view sees it
-- exactly once. UNION ALL of two plain selects: Postgres flattens it into an append of the two
-- tables and pushes each condition into both, so `WHERE id = $1` or `WHERE batch_id = $1` is
-- an index probe on each table, as when written by hand.
CREATE VIEW jobqueue.all_jobs AS
SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
       jobqueue.job_state(lease_owner, run_at, attempts, errors, progress) AS state,
       NULL::jsonb AS result, errors, progress, owner, batch_id, idempotency_key, metadata,
       created_at, started_at, NULL::timestamptz AS finished_at, lease_owner,
       cancel_requested, execution_id
FROM jobqueue.jobs
UNION ALL
SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
       state, result, errors, progress, owner, batch_id, idempotency_key, metadata,
       created_at, started_at, finished_at, NULL::uuid, false, execution_id
FROM jobqueue.finished
UNION ALL
SELECT id, queue, kind, payload, priority, coalesce(run_at, created_at), 0, max_attempts,
       timeout_seconds, 'blocked', NULL::jsonb, '[]'::jsonb, NULL::jsonb, owner, batch_id,
       idempotency_key, metadata, created_at, NULL::timestamptz, NULL::timestamptz,
       NULL::uuid, false, NULL::uuid
FROM jobqueue.blocked;

-- The move to `finished`, defined once: the `finished` row a deleted `jobs` row becomes, with
-- its final state, result and the errors to append (a JSON array: '[]' for none). Every move
-- is the same pattern (see sql/queries/jobs.sql):
--     WITH gone AS (DELETE FROM jobqueue.jobs j WHERE ... RETURNING j AS job)
--     INSERT INTO jobqueue.finished
--     SELECT (jobqueue.finished_row(job, 'cancelled', NULL, '[]')).* FROM gone
-- Which rows move, and the fencing, are each path's own; what a move writes is here. The
-- result is the table's own row type, so the INSERT needs no column list, and a column added
-- to `finished` without being added here makes every move fail loudly (the ROW no longer
-- casts) instead of being silently left NULL. Every argument is used once and the function is
-- one expression, so the planner inlines it: `(...).*` becomes the plain column expressions,
-- evaluated once each. The worker's finish_jobs (the hot path) spells the same columns out,
-- because building and taking apart the whole-row value cost it 1 us of 8 per job (see its
-- comment); tests/integration/test_states.py holds it to finished_row, column for column.
CREATE FUNCTION jobqueue.finished_row(
    job jobqueue.jobs, state text, result jsonb, new_errors jsonb
) RETURNS jobqueue.finished LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT ROW(job.id, job.queue, job.kind, job.payload, job.priority, job.run_at,
               job.attempts, job.max_attempts, job.timeout_seconds, state, result,
               job.errors || new_errors, job.progress, job.owner, job.batch_id,
               job.idempotency_key, job.metadata, job.created_at, job.started_at, now(),
               job.execution_id)::jobqueue.finished
$$;

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

-- Per-owner quotas, and the scaling signals' stable SQL contract (0013).

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


-- A schedule: a cron expression evaluated in a time zone, and what each fire enqueues.
-- `next_fire_at` is the earliest fire not yet decided; every worker's scheduler picks the
-- schedules whose next fire is due (partial index below) and moves it forward in the same
-- transaction that records the fire in schedule_runs.
CREATE TABLE jobqueue.schedules (
    name                 text        PRIMARY KEY,
    cron                 text        NOT NULL,
    timezone             text        NOT NULL DEFAULT 'UTC',
    -- What a fire enqueues: {"type": "job", "kind", "queue", "payload", "options"} or
    -- {"type": "batch", "platform", "format", "template", "source"} (jobqueue/schedules/spec.py).
    target               jsonb       NOT NULL,
    -- A batch target's file, stored when the schedule is saved: a worker on another host
    -- needs no copy of it, and a fire enqueues what was checked at `schedules add`.
    batch_content        text,
    -- What happens to fires missed while no scheduler ran (more than a minute late):
    -- skip them, run one catch-up (the latest), or run each of them.
    misfire              text        NOT NULL DEFAULT 'once'
                         CHECK (misfire IN ('skip', 'once', 'all')),
    -- A missed fire later than this is skipped whatever the policy (NULL: no limit).
    max_lateness_seconds float8      CHECK (max_lateness_seconds > 0),
    paused               boolean     NOT NULL DEFAULT false,
    owner                text,
    -- Where the definition comes from: 'api' (CLI, HTTP, dashboard), 'config' (jobqueue.toml)
    -- or 'task' (@task(cron=...)). Start-up sync only replaces and removes its own origins.
    origin               text        NOT NULL DEFAULT 'api'
                         CHECK (origin IN ('api', 'config', 'task')),
    next_fire_at         timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due ON jobqueue.schedules (next_fire_at) WHERE NOT paused;

-- One row per decided fire: the unique (schedule, fire_at) is what makes a fire enqueue
-- exactly once. The row is inserted in the same transaction as the job or batch it names,
-- so two schedulers deciding the same fire cannot both commit an enqueue, whatever
-- leadership or clock they believe in.
-- decision: 'enqueued' (on time), 'caught_up' (a missed fire run late by the policy),
-- 'manual' (run-now), 'skipped' (missed fires not run; `skipped` counts them, from
-- `skipped_from` to fire_at), 'failed' (the enqueue was refused; `reason` says why).
CREATE TABLE jobqueue.schedule_runs (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schedule     text        NOT NULL REFERENCES jobqueue.schedules (name) ON DELETE CASCADE,
    fire_at      timestamptz NOT NULL,
    decision     text        NOT NULL
                 CHECK (decision IN ('enqueued', 'caught_up', 'manual', 'skipped', 'failed')),
    reason       text,
    skipped      integer     NOT NULL DEFAULT 0,
    skipped_from timestamptz,
    job_id       bigint,
    batch_id     bigint,
    decided_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedule_runs_once UNIQUE (schedule, fire_at)
);
-- The runs list of a schedule, newest first.
CREATE INDEX schedule_runs_recent ON jobqueue.schedule_runs (schedule, id DESC);
-- Pruning by age (worker/scheduler.py's prune hook): rows arrive in decision order, so a BRIN
-- finds the old ones without scanning the table.
CREATE INDEX schedule_runs_decided ON jobqueue.schedule_runs USING brin (decided_at);

-- What became of a run, for the runs list and the dashboard: its job's state, or for a
-- batch 'succeeded', 'dead' (some member dead) or 'running' while any member is not
-- finished; 'pruned' once the finished rows are gone; NULL for a run that enqueued nothing.
-- STABLE and in SQL: the batch's counts come through the batch indexes of both tables.
CREATE FUNCTION jobqueue.schedule_run_outcome(job bigint, batch bigint)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN job IS NOT NULL THEN
            coalesce((SELECT state FROM jobqueue.all_jobs WHERE id = job), 'pruned')
        WHEN batch IS NOT NULL THEN (
            SELECT CASE WHEN count(*) = 0 THEN 'pruned'
                        WHEN count(*) FILTER (WHERE state NOT IN
                             ('succeeded', 'dead', 'cancelled')) > 0 THEN 'running'
                        WHEN count(*) FILTER (WHERE state = 'dead') > 0 THEN 'dead'
                        WHEN count(*) FILTER (WHERE state = 'cancelled') > 0 THEN 'cancelled'
                        ELSE 'succeeded' END
            FROM jobqueue.all_jobs WHERE batch_id = batch)
    END
$$;

-- Fair shares and caps (see 0012_fair_caps.sql for the reasons).
-- The round each owner's latest job got, per (queue, priority): the next job of the owner
-- goes one round later (or to the round being served, if that is later). `last_count` is how
-- many rounds the latest enqueue took (ON CONFLICT can read only the proposed row, so the
-- increment travels in it). One small row per owner that ever enqueued into a fair queue.
CREATE TABLE jobqueue.fair_owners (
    queue      text     NOT NULL,
    priority   smallint NOT NULL,
    owner      text     NOT NULL,  -- '' for jobs without an owner
    last_round bigint   NOT NULL,
    last_count bigint   NOT NULL,
    PRIMARY KEY (queue, priority, owner)
);
-- The round to start from when nothing of a (queue, priority) is waiting: the latest given.
CREATE INDEX fair_owners_last_idx ON jobqueue.fair_owners (queue, priority, last_round);

-- Rounds for the rows an INSERT (or COPY) puts into fair queues, in the same transaction.
-- Every insert takes the shared side of one advisory lock first; turning fairness on or off
-- (jobqueue/queues.py) takes the exclusive side and numbers (or clears) the queue's existing
-- rows under it. So no row can commit into a fair queue without a round (it would be invisible
-- to the fair claim), whichever commits first. Every INSERT into jobqueue.jobs gets its rows'
-- rounds from jobqueue.fair_rounds and writes them with the rows (one row version per job):
-- the enqueue statements (sql/queries/jobs.sql, 0020_fair_rounds_at_insert.sql), released
-- children (release_ready), webhook deliveries (webhook_fan_out, webhook_redeliver). There is
-- no net after the insert (0028_fair_rounds_everywhere.sql): raw SQL that inserts into a fair
-- queue must call fair_rounds itself, as those do.
-- The floor (the round being served) is the lowest round still runnable in the (queue,
-- priority), or, when none is, the latest round given there: so a new owner starts level with
-- the others, and an owner back after a pause does not jump ahead by its old count.
-- Rounds for n rows about to be inserted, in input order: element i is row i's round, or
-- NULL where row i's queue is not fair; the whole result is NULL when no row's queue is fair
-- (the common case: one lock and one probe of `queues`). A column with the same value in every
-- row may come as `<column>_all` with an empty array, as in insert_jobs.
-- Takes the shared side of the fairness lock (0012) and holds it to commit, so the queue
-- cannot turn fair or unfair between this answer and the rows' commit; as a VOLATILE
-- PL/pgSQL function its queries take a fresh snapshot after the lock, and see a change of
-- fairness that committed while the caller's statement waited for it.
-- The floor (the round being served) is as in 0012: the lowest round still runnable in the
-- (queue, priority), or, when none is, the latest round given there.
CREATE FUNCTION jobqueue.fair_rounds(
    n integer, each_queue text[], queue_all text, each_priority smallint[],
    priority_all smallint, each_owner text[], owner_all text
) RETURNS bigint[] LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    rounds bigint[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('jobqueue.fairness'));
    IF NOT EXISTS (SELECT 1 FROM jobqueue.queues
                   WHERE fair AND (name = queue_all OR name = ANY(each_queue))) THEN
        RETURN NULL;
    END IF;
    -- Every row, by position (unnest pads the shorter arrays with NULLs up to n; a
    -- subscript each_owner[i] would walk the text array from its start, quadratic). nth is
    -- the row's place among its owner's rows of this statement; used for fair rows only.
    WITH fresh AS MATERIALIZED (
        SELECT r.ord, r.queue, r.priority, r.owner,
               r.queue IN (SELECT name FROM jobqueue.queues WHERE fair) AS fair,
               row_number() OVER (PARTITION BY r.queue, r.priority, r.owner ORDER BY r.ord)
                   AS nth
        FROM (SELECT t.ord, coalesce(t.queue, queue_all) AS queue,
                     coalesce(t.priority, priority_all, 0::smallint) AS priority,
                     coalesce(t.owner, owner_all, '') AS owner
              FROM unnest(each_queue, each_priority, each_owner, array_fill(0, ARRAY[n]))
                   WITH ORDINALITY AS t(queue, priority, owner, pad, ord)) AS r
    ),
    floors AS MATERIALIZED (
        SELECT l.queue, l.priority,
               coalesce((SELECT j.fair_round - 1 FROM jobqueue.jobs j
                         WHERE j.queue = l.queue AND j.priority = l.priority
                           AND j.lease_owner IS NULL AND j.fair_round IS NOT NULL
                           AND j.run_at <= now()
                         ORDER BY j.fair_round LIMIT 1),
                        (SELECT max(o.last_round) FROM jobqueue.fair_owners o
                         WHERE o.queue = l.queue AND o.priority = l.priority),
                        0) AS floor
        FROM (SELECT DISTINCT queue, priority FROM fresh WHERE fair) AS l
    ),
    bases AS (
        INSERT INTO jobqueue.fair_owners AS o (queue, priority, owner, last_round, last_count)
        SELECT f.queue, f.priority, f.owner, fl.floor + count(*), count(*)
        FROM fresh f JOIN floors fl ON fl.queue = f.queue AND fl.priority = f.priority
        GROUP BY f.queue, f.priority, f.owner, fl.floor
        ORDER BY f.queue, f.priority, f.owner  -- one lock order for concurrent enqueues
        ON CONFLICT (queue, priority, owner) DO UPDATE
        SET last_round = greatest(o.last_round, excluded.last_round - excluded.last_count)
                         + excluded.last_count,
            last_count = excluded.last_count
        RETURNING o.queue, o.priority, o.owner, o.last_round - o.last_count AS base
    )
    SELECT array_agg(b.base + f.nth ORDER BY f.ord) INTO rounds
    FROM fresh f
    LEFT JOIN bases b ON f.fair AND b.queue = f.queue AND b.priority = f.priority
                     AND b.owner = f.owner;
    RETURN rounds;
END;
$$;

-- Running jobs of a queue by owner, for the claim of a capped queue. The claim statement
-- first locks the queue's row (so claims of a capped queue take turns) and then calls this:
-- PL/pgSQL and VOLATILE, so its query takes a fresh snapshot and counts the rows the
-- previous holder of the lock claimed and committed, which the claim statement's own
-- snapshot (taken before it waited) cannot see. Only claims add running rows, and they hold
-- the lock to their commit; finishing, retrying, handing back and rescuing only remove them,
-- so a count that misses one of those errs on the safe side, and no counter can drift.
-- Through jobs_lease_idx: it reads every running row of every queue (the fleet's in-flight
-- jobs, thousands at most), not the backlog. Jobs a provider batch holds (0019) are running
-- at the provider, in its own limit pool: they take no place under the queue's caps.
CREATE FUNCTION jobqueue.running_counts(q text) RETURNS TABLE (owner text, running bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    SELECT coalesce(j.owner, ''), count(*) FROM jobqueue.jobs j
    WHERE j.lease_owner IS NOT NULL AND j.queue = q
      AND NOT EXISTS (SELECT 1 FROM jobqueue.provider_batches p WHERE p.lease = j.lease_owner)
    GROUP BY 1;
END;
$$;

-- The second half of the release step (0015): of the blocked jobs `candidates`, those with
-- no parent left to wait for move to `jobs` (the insert trigger wakes the workers), those of
-- fair queues with their rounds, oldest first, as new jobs get them (insert_jobs). A batch's
-- callback (completes_batch) receives the batch id and how its members ended, and this is
-- the one place where a batch completes: batches.completed_at is set and
-- `jobqueue_batch_completed` carries its id. Called by release_children, and directly for a
-- job that waits for nothing (a callback of a batch whose rows were all duplicates).
CREATE FUNCTION jobqueue.release_ready(candidates bigint[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH ready AS (
        DELETE FROM jobqueue.blocked b
        WHERE b.id = ANY(candidates) AND b.waiting_on = 0
        RETURNING b.*
    ),
    numbered AS MATERIALIZED (
        SELECT ready.*, row_number() OVER (ORDER BY ready.id) AS nth FROM ready
    ),
    rounds AS MATERIALIZED (
        SELECT jobqueue.fair_rounds(count(*)::int, array_agg(queue ORDER BY nth), NULL,
                                    array_agg(priority ORDER BY nth), NULL,
                                    array_agg(owner ORDER BY nth), NULL) AS rounds
        FROM numbered HAVING count(*) > 0  -- nothing released: no call, no lock
    ),
    inserted AS (
        INSERT INTO jobqueue.jobs
            (id, queue, kind, payload, priority, run_at, max_attempts, timeout_seconds,
             owner, batch_id, idempotency_key, metadata, created_at, has_children, fair_round)
        SELECT r.id, r.queue, r.kind,
               CASE WHEN r.completes_batch IS NULL THEN r.payload
                    ELSE r.payload || jsonb_build_object(
                        'batch_id', r.completes_batch,
                        'counts', jsonb_build_object(
                            'total', bt.total,
                            'succeeded', r.parents_succeeded,
                            'dead', r.parents_dead,
                            'cancelled', r.parents_cancelled,
                            'duplicates', (SELECT count(*) FROM jobqueue.batch_duplicates d
                                           WHERE d.batch_id = r.completes_batch)))
               END,
               r.priority, coalesce(r.run_at, now()), r.max_attempts, r.timeout_seconds,
               r.owner, r.batch_id, r.idempotency_key, r.metadata, r.created_at,
               r.has_children, f.rounds[r.nth]
        FROM numbered r CROSS JOIN rounds f
        LEFT JOIN jobqueue.batches bt ON bt.id = r.completes_batch
        RETURNING id
    ),
    completed AS (
        UPDATE jobqueue.batches bt SET completed_at = now()
        FROM ready r WHERE bt.id = r.completes_batch
        RETURNING bt.id, pg_notify('jobqueue_batch_completed', bt.id::text)
    )
    SELECT count(*) INTO n
    FROM inserted
    LEFT JOIN (SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id))
               FROM inserted HAVING count(*) > 0) AS told ON true
    LEFT JOIN (SELECT count(*) FROM completed) AS c ON true;
    RETURN n;
END;
$$;

-- The release step: the parents `parent_ids` ended in `parent_states` (succeeded, dead,
-- cancelled); their children learn it. Called inside the statement (or transaction) that
-- ends the parents, so a child is released exactly when its last parent's end commits: no
-- polling, and never twice (each edge is deleted once; each child row is locked, in id
-- order so two completions never deadlock, before its counts change).
-- VOLATILE plpgsql: each statement inside takes a fresh snapshot, so it sees the edges of a
-- child enqueued by a transaction that committed while the caller's statement waited for
-- the parent's row lock (the enqueue sets the parent's has_children under that lock).
-- A child cancelled here may have children of its own: the loop carries on with them.
-- Returns how many children became runnable.
CREATE FUNCTION jobqueue.release_children(parent_ids bigint[], parent_states text[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    ended_ids bigint[] := parent_ids;
    ended_states text[] := parent_states;
    children bigint[];
    oks integer[];
    deads integer[];
    cancels integer[];
    released integer := 0;
BEGIN
    WHILE cardinality(ended_ids) > 0 LOOP
        WITH gone AS (
            DELETE FROM jobqueue.job_dependencies d
            USING unnest(ended_ids, ended_states) AS p(id, state)
            WHERE d.parent_id = p.id
            RETURNING d.child_id, p.state
        )
        SELECT array_agg(child_id ORDER BY child_id), array_agg(ok ORDER BY child_id),
               array_agg(dead ORDER BY child_id), array_agg(cancelled ORDER BY child_id)
        INTO children, oks, deads, cancels
        FROM (SELECT child_id,
                     count(*) FILTER (WHERE state = 'succeeded')::int AS ok,
                     count(*) FILTER (WHERE state = 'dead')::int AS dead,
                     count(*) FILTER (WHERE state NOT IN ('succeeded', 'dead'))::int
                         AS cancelled
              FROM gone GROUP BY child_id) AS t;
        EXIT WHEN children IS NULL;

        PERFORM 1 FROM jobqueue.blocked WHERE id = ANY(children) ORDER BY id FOR UPDATE;
        UPDATE jobqueue.blocked b
        SET waiting_on = b.waiting_on - (t.ok + t.dead + t.cancelled),
            parents_succeeded = b.parents_succeeded + t.ok,
            parents_dead = b.parents_dead + t.dead,
            parents_cancelled = b.parents_cancelled + t.cancelled
        FROM unnest(children, oks, deads, cancels) AS t(id, ok, dead, cancelled)
        WHERE b.id = t.id;

        -- A parent failed and the child's policy is cancel: cancelled now, even if other
        -- parents are still running; its remaining edges go, and its own children follow.
        WITH doomed AS (
            DELETE FROM jobqueue.blocked b
            WHERE b.id = ANY(children) AND b.on_parent_failure = 'cancel'
              AND b.parents_dead + b.parents_cancelled > 0
            RETURNING b.*
        ),
        moved AS (
            INSERT INTO jobqueue.finished
                (id, queue, kind, payload, priority, run_at, attempts, max_attempts,
                 timeout_seconds, state, result, errors, progress, owner, batch_id,
                 idempotency_key, metadata, created_at, started_at, execution_id)
            SELECT id, queue, kind, payload, priority, coalesce(run_at, now()), 0,
                   max_attempts, timeout_seconds, 'cancelled', NULL,
                   jsonb_build_array(jsonb_build_object(
                       'attempt', 0, 'at', now(), 'type', 'ParentFailed',
                       'message', format('%s of the jobs it depends on ended dead, %s '
                                         'cancelled (on_parent_failure: cancel)',
                                         parents_dead, parents_cancelled))),
                   NULL, owner, batch_id, idempotency_key, metadata, created_at, NULL, NULL
            FROM doomed
            RETURNING id
        ),
        unlinked AS (
            DELETE FROM jobqueue.job_dependencies
            WHERE child_id IN (SELECT id FROM doomed)
        ),
        told AS (
            SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id)) FROM moved
            HAVING count(*) > 0
        )
        SELECT coalesce(array_agg(id) FILTER (WHERE has_children), '{}')
        INTO ended_ids
        FROM doomed LEFT JOIN told ON true;
        ended_states := array_fill('cancelled'::text, ARRAY[cardinality(ended_ids)]);

        -- Nothing left to wait for: runnable now.
        released := released + jobqueue.release_ready(children);
    END LOOP;
    RETURN released;
END;
$$;

-- Webhooks and alerts (see 0016_webhooks_alerts.sql for the reasons).
-- A subscription: an owner's URL and the event types it wants. `owner` is the API token's
-- owner ('' for jobs enqueued without one). Alert events (alert.firing, alert.resolved) have
-- no owner and go to every subscription that names them: only admins may create those.
-- The secret signs each request (HMAC-SHA256). It is stored as given, not hashed: the server
-- needs the key itself to sign. It is shown once, at creation, and never returned after.
CREATE TABLE jobqueue.webhook_subscriptions (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner        text        NOT NULL DEFAULT '',
    url          text        NOT NULL CHECK (url ~ '^https?://'),
    events       text[]      NOT NULL CHECK (cardinality(events) > 0 AND events <@ ARRAY[
                     'job.succeeded', 'job.dead', 'batch.completed', 'schedule.failed',
                     'alert.firing', 'alert.resolved']),
    secret       text        NOT NULL,
    format       text        NOT NULL DEFAULT 'json' CHECK (format IN ('json', 'slack')),
    max_attempts integer     NOT NULL DEFAULT 10 CHECK (max_attempts BETWEEN 1 AND 50),
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_subscriptions_owner_idx ON jobqueue.webhook_subscriptions (owner);

-- One event sent to one subscription: the body is fixed when the event happens (a redelivery
-- sends the same body and event id), the rest is the delivery's latest news. Its job on the
-- `webhooks` queue has the id drawn here (job_id), so the row can name it before it exists;
-- a redelivery draws a new one.
CREATE TABLE jobqueue.webhook_deliveries (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id  bigint      NOT NULL
                     REFERENCES jobqueue.webhook_subscriptions (id) ON DELETE CASCADE,
    event_id         text        NOT NULL,  -- the receiver's idempotency key
    event_type       text        NOT NULL,
    body             jsonb       NOT NULL,  -- {"id", "type", "created_at", "data"}
    state            text        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'retrying', 'succeeded', 'dead')),
    attempts         integer     NOT NULL DEFAULT 0,   -- requests made, redeliveries included
    response_code    integer,                          -- of the latest attempt (NULL: none)
    last_error       text,
    job_id           bigint      NOT NULL DEFAULT nextval('jobqueue.job_id_seq'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- An event reaches a subscription once, however many paths report it (two finishers of
    -- a batch's last jobs, a fan-out repeated after a lost reply).
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX webhook_deliveries_recent_idx ON jobqueue.webhook_deliveries (created_at);

-- Send events to the subscriptions that want them (0016): one delivery row and one job on
-- the `webhooks` queue each (the job's payload names the delivery; the worker's built-in
-- `webhook.deliver` task sends it), with its round when that queue is fair. Arrays in, so
-- one call serves a whole finish statement. An event whose owner is NULL (alerts) goes to
-- every subscription naming its type. Returns the deliveries made. Callable by anyone's
-- SQL: jobqueue.webhooks.emit() wraps it.
CREATE FUNCTION jobqueue.webhook_fan_out(
    event_ids text[], event_types text[], owners text[], data jsonb[]
) RETURNS integer LANGUAGE sql VOLATILE AS $$
    WITH events AS (
        SELECT * FROM unnest(event_ids, event_types, owners, data) AS e(id, type, owner, data)
    ),
    delivered AS (
        INSERT INTO jobqueue.webhook_deliveries (subscription_id, event_id, event_type, body)
        SELECT s.id, e.id, e.type, jsonb_build_object(
                   'id', e.id, 'type', e.type, 'created_at', now(), 'data', e.data)
        FROM events e
        JOIN jobqueue.webhook_subscriptions s
          ON e.type = ANY(s.events) AND (e.owner IS NULL OR s.owner = e.owner)
        ORDER BY s.id, e.id
        ON CONFLICT (subscription_id, event_id) DO NOTHING
        RETURNING id, subscription_id, job_id
    ),
    -- Every job goes to one queue, at the default priority, without an owner: fair_rounds
    -- takes those as `_all` values.
    numbered AS MATERIALIZED (
        SELECT d.id, d.job_id, s.max_attempts, row_number() OVER (ORDER BY d.job_id) AS nth
        FROM delivered d JOIN jobqueue.webhook_subscriptions s ON s.id = d.subscription_id
    ),
    rounds AS MATERIALIZED (
        SELECT jobqueue.fair_rounds(count(*)::int, '{}', 'webhooks', '{}', NULL, '{}', NULL)
                   AS rounds
        FROM numbered HAVING count(*) > 0  -- no delivery: no call, no lock
    ),
    queued AS (
        INSERT INTO jobqueue.jobs (id, queue, kind, payload, max_attempts, fair_round)
        SELECT n.job_id, 'webhooks', 'webhook.deliver', jsonb_build_object('delivery_id', n.id),
               n.max_attempts, r.rounds[n.nth]
        FROM numbered n, rounds r
        RETURNING id
    )
    SELECT count(*)::integer FROM queued
$$;

-- Which of these batches have just completed: none of their jobs is left in the hot table.
-- The batch rows are locked first (in id order: no deadlock between finishers), and each
-- statement of a VOLATILE function takes a fresh snapshot, so when the last jobs of a batch
-- finish at once in two transactions, the second to take the lock sees the first's jobs gone
-- and reports the batch: one of them always does. (Both may, when the first committed
-- between the other's delete and its lock; webhook_fan_out's unique event id keeps that to
-- one delivery.) The one definition of "a batch completed" for the completion path.
-- (0021: members still blocked, waiting for other jobs, keep a batch from completing.)
CREATE FUNCTION jobqueue.batches_completed(batch_ids bigint[])
RETURNS SETOF bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM jobqueue.batches WHERE id = ANY(batch_ids) ORDER BY id FOR UPDATE;
    RETURN QUERY
        SELECT b.id FROM jobqueue.batches b
        WHERE b.id = ANY(batch_ids)
          AND NOT EXISTS (SELECT 1 FROM jobqueue.jobs j WHERE j.batch_id = b.id)
          AND NOT EXISTS (SELECT 1 FROM jobqueue.blocked k WHERE k.batch_id = b.id);
END;
$$;

-- job.succeeded, job.dead and batch.completed arise here, when jobs arrive in `finished`
-- (the worker's finish_jobs, the rescuer's dead letters, cancellations). A statement-level
-- trigger over the rows the statement moved, like finished_count_inserted: when nobody
-- subscribes it costs one probe of an empty table per statement (~1,000 jobs); otherwise the
-- subscribing owners are hashed once per statement and only their jobs are joined further.
-- The delivery jobs themselves never raise events (a dead delivery would otherwise feed
-- itself).
CREATE FUNCTION jobqueue.webhook_job_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM jobqueue.webhook_subscriptions) THEN
        RETURN NULL;
    END IF;
    -- Webhooks never cost a job its outcome: should queueing the events fail, the outcome
    -- batch still commits, without them, and the Postgres log says why. (A subtransaction,
    -- entered only when subscriptions exist; a cancelled statement is not caught.)
    BEGIN
        PERFORM jobqueue.webhook_fan_out(
            array_agg('job.' || c.state || ':' || c.id || ':'
                      || coalesce(c.execution_id::text, '')),
            array_agg('job.' || c.state), array_agg(coalesce(c.owner, '')),
            array_agg(jsonb_build_object('job', jsonb_build_object(
                'id', c.id, 'queue', c.queue, 'kind', c.kind, 'state', c.state,
                'attempts', c.attempts, 'owner', c.owner, 'batch_id', c.batch_id,
                'metadata', c.metadata, 'finished_at', c.finished_at,
                -- a large result is left out (fetch it from GET /api/jobs/<id>)
                'result', CASE WHEN pg_column_size(c.result) <= 65536 THEN c.result END,
                'result_omitted', pg_column_size(c.result) > 65536,
                'error', (c.errors -> -1) - 'traceback'))))
        FROM changed c
        WHERE c.state IN ('succeeded', 'dead') AND c.kind <> 'webhook.deliver'
          -- a hashed semi-join: subscribing owners are read once per statement, not per row
          AND coalesce(c.owner, '') IN (SELECT s.owner FROM jobqueue.webhook_subscriptions s
                                        WHERE s.events && ARRAY['job.succeeded', 'job.dead'])
        HAVING count(*) > 0;
        PERFORM jobqueue.webhook_fan_out(
            array_agg('batch.completed:' || b.id), array_agg('batch.completed'::text),
            array_agg(coalesce(b.owner, '')),
            array_agg(jsonb_build_object('batch', jsonb_build_object(
                'id', b.id, 'name', b.name, 'queue', b.queue, 'owner', b.owner,
                'total', b.total,
                'counts', (SELECT jsonb_object_agg(state, n) FROM (
                    SELECT state, count(*) AS n FROM jobqueue.all_jobs
                    WHERE batch_id = b.id GROUP BY state) AS counted)))))
        FROM jobqueue.batches b
        WHERE b.id IN (SELECT jobqueue.batches_completed(array_agg(DISTINCT c.batch_id))
                       FROM changed c
                       WHERE c.batch_id IS NOT NULL
                         AND coalesce(c.owner, '') IN (
                             SELECT s.owner FROM jobqueue.webhook_subscriptions s
                             WHERE 'batch.completed' = ANY(s.events))
                       HAVING count(*) > 0)
        HAVING count(*) > 0;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'jobqueue: webhook events not queued: % (%)', SQLERRM, SQLSTATE;
    END;
    RETURN NULL;
END;
$$;

CREATE TRIGGER finished_webhook_events
    AFTER INSERT ON jobqueue.finished
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION jobqueue.webhook_job_events();

-- Alert thresholds per queue and metric, and whether each is firing. The maintenance leader
-- evaluates them (alert_evaluate in sql/queries/alerts.sql): crossing the threshold sends one
-- alert.firing event, falling back under it one alert.resolved; nothing in between.
--   depth    runnable jobs waiting (jobqueue.job_state's 'waiting')
--   latency  seconds the oldest runnable job has waited
--   dead     dead jobs of the queue not yet retried, purged or pruned
CREATE TABLE jobqueue.alert_rules (
    queue        text        NOT NULL,
    metric       text        NOT NULL CHECK (metric IN ('depth', 'latency', 'dead')),
    threshold    float8      NOT NULL CHECK (threshold >= 0),
    firing_since timestamptz,           -- NULL: not firing
    last_value   float8,
    evaluated_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, metric)
);

-- The rollup of LLM spend: one row per UTC day, platform, model and scope (owner, batch,
-- campaign), added to after every provider call and every cache hit. Sums per batch, owner,
-- platform or day read a few rows instead of every job's result, and the job tables (the
-- claim's hot path) are not touched. '' and 0 stand for "none" so the key has no NULLs.
CREATE TABLE jobqueue.llm_spend (
    day               date    NOT NULL,
    platform          text    NOT NULL,
    model             text    NOT NULL,             -- the model asked for (the priced one)
    owner             text    NOT NULL DEFAULT '',
    batch_id          bigint  NOT NULL DEFAULT 0,
    campaign          text    NOT NULL DEFAULT '',  -- campaigns do not exist yet: always ''
    calls             bigint  NOT NULL DEFAULT 0,   -- answered provider calls
    fallback_calls    bigint  NOT NULL DEFAULT 0,   -- of those, answered by the fallback model
    prompt_tokens     bigint  NOT NULL DEFAULT 0,   -- as the provider counted them
    cached_tokens     bigint  NOT NULL DEFAULT 0,   -- of prompt_tokens, billed at cached price
    completion_tokens bigint  NOT NULL DEFAULT 0,
    cost_usd          numeric NOT NULL DEFAULT 0,   -- priced calls only
    unpriced_calls    bigint  NOT NULL DEFAULT 0,   -- calls of models with no price: cost unknown
    cache_hits        bigint  NOT NULL DEFAULT 0,   -- answers from the response cache (free)
    saved_tokens      bigint  NOT NULL DEFAULT 0,   -- what those hits would have cost
    saved_usd         numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (day, platform, model, owner, batch_id, campaign)
);
CREATE INDEX llm_spend_batch_idx ON jobqueue.llm_spend (batch_id) WHERE batch_id <> 0;
CREATE INDEX llm_spend_owner_idx ON jobqueue.llm_spend (owner, day) WHERE owner <> '';

-- Budgets: at most limit_usd per UTC day, calendar month or in total, for an owner, a batch
-- (scope_id = the batch id as text) or a campaign. What was spent is read from llm_spend, so
-- a budget set after spending starts counting from the right figure.
CREATE TABLE jobqueue.llm_budgets (
    scope      text        NOT NULL CHECK (scope IN ('owner', 'batch', 'campaign')),
    scope_id   text        NOT NULL CHECK (scope_id <> ''),
    period     text        NOT NULL CHECK (period IN ('day', 'month', 'total')),
    limit_usd  numeric     NOT NULL CHECK (limit_usd >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, scope_id, period)
);

-- Calls in flight under a budget: each reserved its estimated cost (an upper bound) before
-- it was sent, under a lock on the budget rows, and is deleted when the call settles. A
-- worker that dies leaves its row behind; expires_at (past the call's timeout) retires it.
CREATE TABLE jobqueue.llm_reservations (
    id         uuid        NOT NULL,
    scope      text        NOT NULL,
    scope_id   text        NOT NULL,
    amount_usd numeric     NOT NULL CHECK (amount_usd >= 0),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (scope, scope_id, id)
);
CREATE INDEX llm_reservations_id_idx ON jobqueue.llm_reservations (id);

-- ---- 0022: AI-visibility campaigns (see sql/migrations/0022_campaigns.sql) ----

CREATE TABLE jobqueue.campaigns (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text        NOT NULL UNIQUE,
    owner         text,
    -- [{"messages": [...], "metadata": {...}}], checked like a batch file's rows
    prompts       jsonb       NOT NULL,
    prompt_source text,       -- the prompt file they were read from, if any
    platforms     text[]      NOT NULL CHECK (cardinality(platforms) > 0),
    samples       integer     NOT NULL DEFAULT 1 CHECK (samples BETWEEN 1 AND 100),
    -- [{"name", "aliases": [...], "competitor": bool}]: what the extract step looks for
    brands        jsonb       NOT NULL,
    -- {"platform": NAME} to analyse answers with an LLM call (JSON schema, validated; the
    -- deterministic pass is the fallback); {} for the deterministic pass alone
    extract       jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per analysed answer: written by the extract job in the transaction that adds the
-- answer to the rollup. The primary key on the answer's job id makes a second run of the
-- same extract job (at-least-once execution) add nothing.
CREATE TABLE jobqueue.campaign_answers (
    job_id      bigint      PRIMARY KEY,      -- the chat job that answered
    campaign_id bigint      NOT NULL REFERENCES jobqueue.campaigns (id) ON DELETE CASCADE,
    platform    text        NOT NULL,
    day         date        NOT NULL,         -- UTC day the campaign run asked the question
    method      text        NOT NULL CHECK (method IN ('rules', 'llm')),
    extracted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaign_answers_campaign_idx ON jobqueue.campaign_answers (campaign_id, day);

-- One row per answer x tracked brand: whether it was mentioned, its rank among the tracked
-- brands in order of first mention (1 = first), where (characters into the answer), and
-- the sentiment of the sentences mentioning it (-1..1, a lexicon pass or the LLM's).
CREATE TABLE jobqueue.campaign_mentions (
    job_id      bigint  NOT NULL REFERENCES jobqueue.campaign_answers (job_id) ON DELETE CASCADE,
    brand       text    NOT NULL,
    mentioned   boolean NOT NULL,
    position    integer CHECK (position > 0),   -- NULL when not mentioned
    char_offset integer,
    sentiment   real    CHECK (sentiment BETWEEN -1 AND 1),
    PRIMARY KEY (job_id, brand)
);

-- The URLs an answer cited, with their domain.
CREATE TABLE jobqueue.campaign_citations (
    job_id bigint NOT NULL REFERENCES jobqueue.campaign_answers (job_id) ON DELETE CASCADE,
    url    text   NOT NULL,
    domain text   NOT NULL,
    PRIMARY KEY (job_id, url)
);

-- The report's source: per campaign x UTC day x platform x brand, sums added in the extract
-- transaction. `answers` counts every analysed answer of that day and platform (the same in
-- each brand's row), so visibility = mentions / answers and share of voice = mentions /
-- sum(mentions) over the brands, for any period, from a few rows.
CREATE TABLE jobqueue.campaign_daily (
    campaign_id     bigint  NOT NULL REFERENCES jobqueue.campaigns (id) ON DELETE CASCADE,
    day             date    NOT NULL,
    platform        text    NOT NULL,
    brand           text    NOT NULL,
    answers         bigint  NOT NULL DEFAULT 0,
    mentions        bigint  NOT NULL DEFAULT 0,
    position_sum    bigint  NOT NULL DEFAULT 0,   -- over the answers that mention it
    sentiment_sum   float8  NOT NULL DEFAULT 0,   -- likewise
    PRIMARY KEY (campaign_id, day, platform, brand)
);

-- Cited domains per campaign x day x platform (top cited domains without the answers).
CREATE TABLE jobqueue.campaign_domains_daily (
    campaign_id bigint NOT NULL REFERENCES jobqueue.campaigns (id) ON DELETE CASCADE,
    day         date   NOT NULL,
    platform    text   NOT NULL,
    domain      text   NOT NULL,
    citations   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, day, platform, domain)
);
