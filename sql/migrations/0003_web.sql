-- 0003: what the web app needs: API tokens with their rate limits, uploaded documents, queue
-- pause, counts the dashboard can read without scanning a million finished rows, and the
-- app's own settings.

-- Bearer tokens, stored as SHA-256 hashes (the token itself is shown once, at creation).
-- Each carries its own request bucket: authenticating a request and charging its rate limit
-- is one UPDATE on this row.
CREATE TABLE jobqueue.api_tokens (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash   text        NOT NULL UNIQUE,
    prefix       text        NOT NULL,          -- the first characters, to tell tokens apart
    owner        text        NOT NULL,
    scopes       text[]      NOT NULL CHECK (scopes <@ ARRAY['read', 'write', 'admin']),
    rate_limit   integer     NOT NULL DEFAULT 300 CHECK (rate_limit > 0),  -- per minute
    level        float8      NOT NULL DEFAULT 0,  -- requests available; refills rate_limit/min
    updated_at   timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    note         text
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

-- Queues an operator paused: workers claim nothing from them until resumed.
CREATE TABLE jobqueue.queues (
    name      text        PRIMARY KEY,
    paused    boolean     NOT NULL DEFAULT false,
    paused_at timestamptz
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
