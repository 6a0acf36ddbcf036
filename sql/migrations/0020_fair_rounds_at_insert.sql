-- 0020: a fair queue's rows get their round in the insert that writes them, not after.
--
-- 0012 numbered them in an AFTER INSERT statement trigger, with an UPDATE: every row of a fair
-- queue was written twice, and the dead first versions slowed the drain after a bulk enqueue
-- until vacuum (one owner: 32% slower than a plain queue). Now the enqueue statements
-- (sql/queries/jobs.sql: insert_job, insert_jobs, insert_jobs_idempotent, revive_jobs, and
-- reserve_job_ids for COPY) ask jobqueue.fair_rounds for the rounds of the rows they are about
-- to write and write them with the row: one row version per job. The trigger stays, as a net
-- for any other INSERT (raw SQL, the webhook queue): it numbers only rows that arrive in a
-- fair queue without a round, which the enqueue statements never leave.

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

-- The net: rows an INSERT or COPY put into a fair queue without a round (statements other
-- than the enqueue queries) are numbered here, as 0012 did for every row; rows that came with
-- their round are left alone, so the enqueue path writes each row once. Same lock as
-- fair_rounds; with no fair queue it costs one lock and one probe of `queues`.
CREATE OR REPLACE FUNCTION jobqueue.assign_fair_rounds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('jobqueue.fairness'));
    IF NOT EXISTS (SELECT 1 FROM jobqueue.queues WHERE fair)
       OR NOT EXISTS (SELECT 1 FROM inserted i
                      WHERE i.fair_round IS NULL
                        AND i.queue IN (SELECT name FROM jobqueue.queues WHERE fair)) THEN
        RETURN NULL;
    END IF;
    WITH fresh AS MATERIALIZED (
        SELECT i.id, i.queue, i.priority, coalesce(i.owner, '') AS owner,
               row_number() OVER (PARTITION BY i.queue, i.priority, coalesce(i.owner, '')
                                  ORDER BY i.id) AS nth
        FROM inserted i
        WHERE i.fair_round IS NULL AND i.queue IN (SELECT name FROM jobqueue.queues WHERE fair)
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
    UPDATE jobqueue.jobs j SET fair_round = o.round
    FROM (SELECT f.id, b.base + f.nth AS round
          FROM fresh f JOIN bases b ON b.queue = f.queue AND b.priority = f.priority
                                   AND b.owner = f.owner
          ORDER BY f.queue, f.priority, b.base + f.nth, f.id) AS o
    WHERE j.id = o.id;
    RETURN NULL;
END;
$$;
