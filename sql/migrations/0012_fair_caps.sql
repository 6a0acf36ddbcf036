-- 0012: fleet-wide caps on running jobs, and fair shares between owners, per queue.
--
-- Both are settings of a queue, kept on its `queues` row and read by the claim statement
-- (sql/queries/jobs.sql, `claim`), so every worker process on every host obeys the same
-- numbers and an operator changes them at run time (`jobqueue queues set`, the API, the
-- dashboard). A queue without a row, or with no caps and fairness off, is claimed exactly
-- as before.

-- max_running: jobs of the queue running at once across the whole fleet.
-- max_running_per_owner: the same, per owner (jobs without an owner count as one owner).
-- fair: claim round robin between owners within a priority level (below). A per-owner cap
-- needs the fair order (else one owner at its cap hides everyone else's work behind its own
-- backlog), so it implies fairness.
ALTER TABLE jobqueue.queues
    ADD COLUMN max_running integer CHECK (max_running > 0),
    ADD COLUMN max_running_per_owner integer CHECK (max_running_per_owner > 0),
    ADD COLUMN fair boolean NOT NULL DEFAULT false,
    ADD COLUMN updated_at timestamptz,
    ADD CONSTRAINT queues_per_owner_cap_is_fair CHECK (max_running_per_owner IS NULL OR fair);

-- Fairness is an order fixed at insert time (as Hatchet's block ids): the n-th job an owner
-- has waiting in a (queue, priority) gets round n, counted on from the round the queue is
-- serving now, and a fair queue is claimed in (priority, fair_round, id) order. One owner's
-- 10,000 jobs take rounds r..r+9,999; another owner's 10 jobs, enqueued later, take rounds
-- from the round being served then, so they interleave with the next 10 of the first owner's
-- instead of waiting behind all of them. The claim stays one ordered index scan of the rows
-- it takes (no per-owner counting or window over the backlog at claim time).
-- NULL outside fair queues: only fair queues' waiting rows are in jobs_fair_idx, so the
-- plain claim, its index and every other queue pay nothing.
ALTER TABLE jobqueue.jobs ADD COLUMN fair_round bigint;

CREATE INDEX jobs_fair_idx ON jobqueue.jobs (queue, priority, fair_round, id)
    WHERE lease_owner IS NULL AND fair_round IS NOT NULL;

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

-- Rounds for the rows an INSERT (or COPY) put into fair queues, in the same transaction.
-- Every insert takes the shared side of one advisory lock first; turning fairness on or off
-- (jobqueue/queues.py) takes the exclusive side and numbers (or clears) the queue's existing
-- rows under it. So no row can commit into a fair queue without a round (it would be invisible
-- to the fair claim), whichever commits first. Then, as a VOLATILE function, each query here
-- runs on a fresh snapshot and sees a change that committed while it waited for the lock.
-- With no fair queue at all this costs an insert statement one lock and one probe of
-- `queues`; rows of fair queues are written twice (inserted, then numbered).
-- The floor (the round being served) is the lowest round still runnable in the (queue,
-- priority), or, when none is, the latest round given there: so a new owner starts level with
-- the others, and an owner back after a pause does not jump ahead by its old count.
CREATE FUNCTION jobqueue.assign_fair_rounds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('jobqueue.fairness'));
    IF NOT EXISTS (SELECT 1 FROM jobqueue.queues WHERE fair) THEN
        RETURN NULL;
    END IF;
    WITH fresh AS MATERIALIZED (
        SELECT i.id, i.queue, i.priority, coalesce(i.owner, '') AS owner,
               row_number() OVER (PARTITION BY i.queue, i.priority, coalesce(i.owner, '')
                                  ORDER BY i.id) AS nth
        FROM inserted i
        WHERE i.queue IN (SELECT name FROM jobqueue.queues WHERE fair)
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
        FROM (SELECT DISTINCT queue, priority FROM fresh) AS l
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
    -- In claim order: the new row versions then lie in the heap in the order the fair claim
    -- reads them (a claim of 500 touches a few heap pages, not 500).
    UPDATE jobqueue.jobs j SET fair_round = o.round
    FROM (SELECT f.id, b.base + f.nth AS round
          FROM fresh f JOIN bases b ON b.queue = f.queue AND b.priority = f.priority
                                   AND b.owner = f.owner
          ORDER BY f.queue, f.priority, b.base + f.nth, f.id) AS o
    WHERE j.id = o.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_fair_rounds
    AFTER INSERT ON jobqueue.jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION jobqueue.assign_fair_rounds();

-- Running jobs of a queue by owner, for the claim of a capped queue. The claim statement
-- first locks the queue's row (so claims of a capped queue take turns) and then calls this:
-- PL/pgSQL and VOLATILE, so its query takes a fresh snapshot and counts the rows the
-- previous holder of the lock claimed and committed, which the claim statement's own
-- snapshot (taken before it waited) cannot see. Only claims add running rows, and they hold
-- the lock to their commit; finishing, retrying, handing back and rescuing only remove them,
-- so a count that misses one of those errs on the safe side, and no counter can drift.
-- Through jobs_lease_idx: it reads every running row of every queue (the fleet's in-flight
-- jobs, thousands at most), not the backlog.
CREATE FUNCTION jobqueue.running_counts(q text) RETURNS TABLE (owner text, running bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    SELECT coalesce(j.owner, ''), count(*) FROM jobqueue.jobs j
    WHERE j.lease_owner IS NOT NULL AND j.queue = q
    GROUP BY 1;
END;
$$;
