-- 0023: what the dashboard (issue 15) records and asks for.

-- Manual actions on jobs (retry, cancel, run now, ...), who did them and when: the job's
-- timeline shows them between its attempts, so "attempt 2 failed" followed by "attempt 1
-- started" reads as the retry it was. Written by the dashboard's and the API's actions
-- (jobqueue/audit.py); read a job at a time through the index. Not a foreign key: a job
-- moves between jobs, finished and blocked under the same id, and the record outlives a
-- deleted job.
CREATE TABLE jobqueue.job_actions (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  bigint      NOT NULL,
    action  text        NOT NULL CHECK (action <> ''),
    actor   text        NOT NULL,               -- the token's owner (dashboard user or API)
    via     text        NOT NULL CHECK (via IN ('dashboard', 'api', 'cli')),
    at      timestamptz NOT NULL DEFAULT now(),
    detail  text
);
CREATE INDEX job_actions_job_idx ON jobqueue.job_actions (job_id, id);

-- An operator's request that a worker process stop: its heartbeat reads the column and the
-- worker stops warm (claims nothing more, finishes what it runs, exits). 'quiet' stops the
-- claiming only: the process stays up, running what it holds, until stopped.
ALTER TABLE jobqueue.workers
    ADD COLUMN control text CHECK (control IN ('quiet', 'stop')),
    ADD COLUMN control_by text;

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

-- A batch's finished jobs in id order (the batch page's answers, a page at a time): the
-- batch index with the id in it, so a page reads its rows in order and stops, instead of
-- sorting the whole batch or walking the primary key through other batches' rows. It
-- replaces the index on batch_id alone, which it serves as well (the batch counts).
CREATE INDEX finished_batch_id_idx ON jobqueue.finished (batch_id, id)
    WHERE batch_id IS NOT NULL;
DROP INDEX jobqueue.finished_batch_idx;
