-- 0015: workflows. Jobs that wait for other jobs (`blocked`), batch rows that were
-- duplicates of existing jobs, batch completion callbacks, and idempotency keys scoped by
-- queue as well as owner.

-- Idempotency keys are unique per (owner, queue, key): the same prompt file submitted to two
-- platforms makes two jobs, not one. Existing keys take the queue of the job they name; a
-- key whose job is gone names nothing and is dropped (pruning deletes both together, so
-- there should be none).
ALTER TABLE jobqueue.idempotency_keys ADD COLUMN queue text;
UPDATE jobqueue.idempotency_keys k SET queue = j.queue
FROM (SELECT id, queue FROM jobqueue.jobs UNION ALL SELECT id, queue FROM jobqueue.finished) AS j
WHERE j.id = k.job_id;
DELETE FROM jobqueue.idempotency_keys WHERE queue IS NULL;
ALTER TABLE jobqueue.idempotency_keys ALTER COLUMN queue SET NOT NULL;
ALTER TABLE jobqueue.idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE jobqueue.idempotency_keys ADD PRIMARY KEY (owner, queue, key);

-- A hot job some blocked job depends on. The completion paths (finish_jobs, cancel, rescue)
-- run the release step only for rows with the flag, so a drain of jobs without children
-- pays one boolean per row and nothing else.
ALTER TABLE jobqueue.jobs ADD COLUMN has_children boolean NOT NULL DEFAULT false;

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

-- A batch's completion callback (the blocked job that waits for every member) and when the
-- batch completed (set when that job is released).
ALTER TABLE jobqueue.batches ADD COLUMN on_complete_job bigint;
ALTER TABLE jobqueue.batches ADD COLUMN completed_at timestamptz;

-- Every job with its visible state: a third branch for blocked jobs (state 'blocked').
CREATE OR REPLACE VIEW jobqueue.all_jobs AS
SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
       jobqueue.job_state(lease_owner, run_at, attempts, errors) AS state,
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

-- The second half of the release step: of the blocked jobs `candidates`, those with no
-- parent left to wait for move to `jobs` (the insert trigger wakes the workers). A batch's
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
    inserted AS (
        INSERT INTO jobqueue.jobs
            (id, queue, kind, payload, priority, run_at, max_attempts, timeout_seconds,
             owner, batch_id, idempotency_key, metadata, created_at, has_children)
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
               r.has_children
        FROM ready r LEFT JOIN jobqueue.batches bt ON bt.id = r.completes_batch
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
