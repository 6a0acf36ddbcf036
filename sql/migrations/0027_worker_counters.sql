-- 0027: per-worker counters on the Workers page: jobs claimed and outcomes written since the
-- process started, reported with each heartbeat (the process's own counts, like in_flight).
ALTER TABLE jobqueue.workers
    ADD COLUMN claimed  bigint NOT NULL DEFAULT 0,
    ADD COLUMN finished bigint NOT NULL DEFAULT 0;
