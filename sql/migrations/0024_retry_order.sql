-- 0024: where a failed job's next attempt goes in the claim order (issue 15, "failures surface
-- late": `batch wait` said "0 dead" until 85%, then 36 dead jobs appeared in the last 40 s).
--
-- The plain claim took `ORDER BY priority, run_at, id`, and a retry is rescheduled with
-- run_at = now() + backoff: later than every job already waiting, so each retry waited for the
-- whole backlog, and a batch's failures only showed at its end. Now a queue says where its
-- retries go, `retry_order`:
--   'first' (the default): before new work of the same priority, so failures surface early;
--   'last': after it (the order before 0024: by when they become due).
-- The retry statements (retry_jobs, rescue_retry in sql/queries/jobs.sql) read the setting
-- and write it on the row as `lane`: 0 for a retry placed first, 1 for everything else. The
-- claim orders by (priority, lane, run_at, id), through the claim index widened by that
-- column, so the claim stays one ordered index scan and reads no setting for it.
-- A retry still waits for its backoff: lane only orders runnable rows (run_at <= now()).
-- Fair queues keep their order (priority, fair_round, id): a retry keeps the round it got at
-- insert, which is at or near the head already.
ALTER TABLE jobqueue.queues ADD COLUMN retry_order text NOT NULL DEFAULT 'first'
    CONSTRAINT queues_retry_order CHECK (retry_order IN ('first', 'last'));

-- Jobs waiting now keep the order they had (lane 1). The default adds the column without a
-- rewrite; smallint beside `priority` fits the claim index's alignment padding.
ALTER TABLE jobqueue.jobs ADD COLUMN lane smallint NOT NULL DEFAULT 1
    CONSTRAINT jobs_lane CHECK (lane IN (0, 1));

DROP INDEX jobqueue.jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON jobqueue.jobs (queue, priority, lane, run_at, id)
    WHERE lease_owner IS NULL;
