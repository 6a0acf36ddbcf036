-- 0004: announce scheduled inserts too. A runnable insert still sends the queue's name; an
-- insert of jobs due later sends "queue epoch" (when its earliest job is due), so an idle
-- worker knows when to look without asking the database after every wake-up.
CREATE OR REPLACE FUNCTION jobqueue.notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('jobqueue_insert', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE run_at <= now()) AS q;
    PERFORM pg_notify('jobqueue_insert', s.queue || ' ' || extract(epoch FROM s.due)::text)
    FROM (SELECT queue, min(run_at) AS due FROM inserted WHERE run_at > now()
          GROUP BY queue) AS s;
    RETURN NULL;
END;
$$;
