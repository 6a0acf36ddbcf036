-- 0021: a batch whose last members are blocked (waiting for other jobs, 0015) has not
-- completed: batches_completed (0016, which fires batch.completed) looks at `blocked` too.
-- (0015 came before 0016 in number but not in time; this joins the two.)
CREATE OR REPLACE FUNCTION jobqueue.batches_completed(batch_ids bigint[])
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
