-- 0019: batches sent through the provider's Batch API (issue 14.3).
--
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

-- The caps of 0012 count a queue's running jobs. Jobs a provider batch holds run at the
-- provider, in its own limit pool, for up to a day: they must not take the places of the
-- realtime workers' jobs under max_running / max_running_per_owner.
CREATE OR REPLACE FUNCTION jobqueue.running_counts(q text)
RETURNS TABLE (owner text, running bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    SELECT coalesce(j.owner, ''), count(*) FROM jobqueue.jobs j
    WHERE j.lease_owner IS NOT NULL AND j.queue = q
      AND NOT EXISTS (SELECT 1 FROM jobqueue.provider_batches p WHERE p.lease = j.lease_owner)
    GROUP BY 1;
END;
$$;
