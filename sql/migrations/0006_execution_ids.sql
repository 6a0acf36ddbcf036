-- 0006: every claim gets an execution token of its own.
-- (job id, attempt) does not name one execution: a claim committed without waiting for the
-- WAL flush can be forgotten by a crash, and the job is then claimed again with the same
-- attempt number. A random token drawn by each claim statement cannot repeat that way (a
-- sequence could: its WAL record is no more durable than the claim's). (job id, token) names
-- one execution: handlers see it as ctx.execution_id ("id:token"), each attempt's error and the
-- finished row keep it, completion is fenced by it, and a completion whose reply was lost is
-- recognised by it.
ALTER TABLE jobqueue.jobs ADD COLUMN execution_id uuid;
ALTER TABLE jobqueue.finished ADD COLUMN execution_id uuid;
