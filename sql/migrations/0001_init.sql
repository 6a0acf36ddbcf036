-- 0001: the queue core. Everything lives in the `jobqueue` schema so the tables sit beside an
-- application's own without clashing.
CREATE SCHEMA IF NOT EXISTS jobqueue;

-- One sequence for both job tables: an id stays valid when a job moves from `jobs` (hot) to
-- `finished` (cold), so lookups by id work for the whole life of a job.
CREATE SEQUENCE jobqueue.job_id_seq AS bigint;

-- The hot table: only work that is waiting, scheduled or running. It stays small (finished
-- rows leave at once), so the claim index is tiny and vacuum is cheap.
-- A job is running exactly when lease_owner is set; waiting when it is not and run_at has come;
-- scheduled when run_at is in the future.
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
    CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
);

-- The claim: `WHERE queue = $1 AND lease_owner IS NULL AND run_at <= now()
-- ORDER BY priority, run_at, id`. Partial, so running rows never bloat it.
CREATE INDEX jobs_claim_idx ON jobqueue.jobs (queue, priority, run_at, id)
    WHERE lease_owner IS NULL;
-- Heartbeats, hand-backs and the rescuer find running rows by owner and by expiry.
CREATE INDEX jobs_lease_idx ON jobqueue.jobs (lease_owner, lease_expires_at)
    WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_batch_idx ON jobqueue.jobs (batch_id) WHERE batch_id IS NOT NULL;

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
    finished_at      timestamptz NOT NULL DEFAULT now()
);
-- Rows arrive in finished_at order, so a BRIN index serves pruning for almost nothing.
CREATE INDEX finished_finished_at_brin ON jobqueue.finished USING brin (finished_at);
CREATE INDEX finished_batch_idx ON jobqueue.finished (batch_id) WHERE batch_id IS NOT NULL;
-- The dead-letter view lists dead jobs per queue, newest first.
CREATE INDEX finished_dead_idx ON jobqueue.finished (queue, finished_at DESC)
    WHERE state = 'dead';

-- Idempotency keys, unique per owner, across both job tables. A separate table because a
-- unique index cannot span `jobs` and `finished`; only keyed jobs pay for it.
CREATE TABLE jobqueue.idempotency_keys (
    owner      text        NOT NULL DEFAULT '',
    key        text        NOT NULL,
    job_id     bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, key)
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
    in_flight    integer     NOT NULL DEFAULT 0
);

-- Wake idle workers when runnable work arrives. Statement level, so a batch insert of 20,000
-- rows sends one notification per queue, not 20,000 (Postgres also folds duplicates within a
-- transaction). Scheduled rows notify nobody: workers poll for them.
CREATE FUNCTION jobqueue.notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobqueue_insert', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE run_at <= now()) AS q;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_inserted
    AFTER INSERT ON jobqueue.jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION jobqueue.notify_inserted();
