-- 0030: a retry waiting out its backoff no longer sits ahead of the due work in the claim
-- index (a regression of 0024, measured: claiming 10 of 20,000 due jobs took 0.93 ms with no
-- retries backing off, 1.15 ms with 10,000 and 5.99 ms with 100,000).
--
-- 0024 gave a retry of a queue whose retry_order is 'first' lane 0 at once, with run_at = now()
-- + backoff. The claim orders by (priority, lane, run_at, id) and keeps only rows with run_at
-- <= now(); as `lane` sits before run_at in jobs_claim_idx, that condition cannot stop the scan,
-- so each claim walked every lane-0 row still backing off before it reached the due rows of
-- lane 1. During a provider outage that is every failed job.
--
-- Now such a retry is parked, lane 2: after the queue's due work of its priority, where the
-- claim's scan stops (LIMIT) before it reaches it when a backlog waits, as all rows ordered
-- by a future run_at were before 0024. Once due, maintenance moves it to lane 0 (store.
-- promote_retries, at every pass: the leader's `--maintenance-seconds`, 5 s by default), so
-- lane 0 only ever holds rows that are due. With no backlog a parked retry is claimed when
-- due, from lane 2, as before. A retry with no backoff (rescue, a delay of 0) goes to lane 0
-- directly.
ALTER TABLE jobqueue.jobs DROP CONSTRAINT jobs_lane;
-- NOT VALID, then VALIDATE: the check of the rows already there takes no exclusive lock.
ALTER TABLE jobqueue.jobs ADD CONSTRAINT jobs_lane CHECK (lane IN (0, 1, 2)) NOT VALID;
ALTER TABLE jobqueue.jobs VALIDATE CONSTRAINT jobs_lane;

-- Retries already backing off in lane 0 are parked too: otherwise they would slow every claim
-- until each is claimed (during a provider outage, the whole backlog).
UPDATE jobqueue.jobs SET lane = 2 WHERE lane = 0 AND run_at > now() AND lease_owner IS NULL;

-- Maintenance's question, which parked retries are due: only parked rows are in it.
CREATE INDEX jobs_parked_idx ON jobqueue.jobs (run_at) WHERE lane = 2 AND lease_owner IS NULL;
