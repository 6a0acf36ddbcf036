-- 0014: schedules (recurring work) and their runs.

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
