-- Job state transitions and reads: enqueue, claim, finish, retry, hand back, rescue, cancel,
-- revive, delete, progress; and every read of a job's state (one job, lists, counts, batch
-- pages, metrics). Only jobqueue/db/store.py runs these. Loaded by jobqueue/db/queries.py; each
-- query starts with a `-- name: NAME` line; parameters are psycopg's named placeholders,
-- always bound. SQL that several statements share is a `-- part: NAME` section, which a
-- statement takes with a line `-- include: NAME` (replaced by the part when the file loads).
-- A job's visible state is derived in one place, jobqueue.job_state (with the view
-- jobqueue.all_jobs over both tables), and every move from `jobs` to `finished` writes the
-- row jobqueue.finished_row builds (finish_jobs, the hot path, writes the same columns out by
-- hand, and a test holds it to that): see sql/migrations/0007_job_state.sql.


-- name: insert_jobs
-- Batch enqueue in one round trip: one array per column, unnest()ed into rows (single jobs use
-- insert_job, batches of 1,000 or more COPY).
-- A column with the same value in every row is sent once as `<column>_all` with an empty
-- array (unnest pads a shorter array with NULLs): 20,000 copies of "default" cost nothing.
-- Rows of fair queues carry their round from jobqueue.fair_rounds (NULL, one lock and one probe,
-- when no queue here is fair): written once, never numbered afterwards (0020). payload is
-- never sent as `_all`, so its length is the number of rows. MATERIALIZED: computed once, never
-- re-run as the inner side of a join.
WITH f AS MATERIALIZED (
    SELECT jobqueue.fair_rounds(cardinality(%(payload)s::text[]), %(queue)s::text[],
                                %(queue_all)s::text, %(priority)s::smallint[],
                                %(priority_all)s::smallint, %(owner)s::text[],
                                %(owner_all)s::text) AS rounds
)
INSERT INTO jobqueue.jobs
    (queue, kind, payload, priority, run_at, max_attempts, timeout_seconds, owner, batch_id,
     metadata, fair_round)
SELECT coalesce(queue, %(queue_all)s::text), coalesce(kind, %(kind_all)s::text),
       payload::jsonb, coalesce(priority, %(priority_all)s::smallint),
       coalesce(run_at, %(run_at_all)s::timestamptz, now()),
       coalesce(max_attempts, %(max_attempts_all)s::int),
       coalesce(timeout_seconds, %(timeout_seconds_all)s::real),
       coalesce(owner, %(owner_all)s::text), coalesce(batch_id, %(batch_id_all)s::bigint),
       coalesce(metadata, %(metadata_all)s::text)::jsonb, f.rounds[t.ord]
FROM unnest(%(queue)s::text[], %(kind)s::text[], %(payload)s::text[], %(priority)s::smallint[],
            %(run_at)s::timestamptz[], %(max_attempts)s::int[], %(timeout_seconds)s::real[],
            %(owner)s::text[], %(batch_id)s::bigint[], %(metadata)s::text[]) WITH ORDINALITY
    AS t(queue, kind, payload, priority, run_at, max_attempts, timeout_seconds, owner, batch_id,
         metadata, ord),
     f
RETURNING id;


-- name: insert_job
-- One job without an idempotency key (Client.enqueue, the web API's POST): plain VALUES, so
-- neither side builds or unpacks arrays for a single row. Its round, in a fair queue, as in
-- insert_jobs.
INSERT INTO jobqueue.jobs
    (queue, kind, payload, priority, run_at, max_attempts, timeout_seconds, owner, batch_id,
     metadata, fair_round)
VALUES (%(queue)s, %(kind)s, %(payload)s::jsonb, %(priority)s,
        coalesce(%(run_at)s::timestamptz, now()), %(max_attempts)s, %(timeout_seconds)s,
        %(owner)s, %(batch_id)s, %(metadata)s::jsonb,
        (jobqueue.fair_rounds(1, '{}', %(queue)s::text, '{}', %(priority)s::smallint, '{}',
                              %(owner)s::text))[1])
RETURNING id;


-- name: reserve_job_ids
-- Large batches load with COPY, which returns nothing and computes nothing: draw their ids
-- first (in input order), with the database's clock for rows that give no run_at, and the
-- rounds of rows in fair queues (NULL when none is: see insert_jobs), which COPY then writes
-- with the rows. fair_rounds' lock is held to commit, so they stay right until the COPY's.
-- Sorted, so rows keep their input order in the claim's (priority, run_at, id) order.
SELECT now() AS now, array_agg(id ORDER BY id) AS ids,
       jobqueue.fair_rounds(%(n)s, %(queue)s::text[], %(queue_all)s::text,
                            %(priority)s::smallint[], %(priority_all)s::smallint,
                            %(owner)s::text[], %(owner_all)s::text) AS rounds
FROM (SELECT nextval('jobqueue.job_id_seq') AS id FROM generate_series(1, %(n)s)) AS drawn;


-- name: copy_jobs
-- {columns} is filled with column names only (psycopg.sql.Identifier): id, queue, kind,
-- payload, and of the others those where some row differs from the table's default, so a
-- batch of plain jobs sends four columns per row, not eleven.
COPY jobqueue.jobs ({columns}) FROM STDIN;


-- part: idempotency_claim
-- Of the inserts with idempotency keys (insert_jobs_idempotent, and insert_blocked in
-- workflows.sql), after their CTE `input` (one row per job: its columns, `new_id` drawn from
-- job_id_seq, `ord` its place): claim each key for its row, in input order; a key already
-- held (by an earlier job, or an earlier row of this batch) claims nothing, and that row is
-- not inserted.
claimed AS (
    INSERT INTO jobqueue.idempotency_keys (owner, queue, key, job_id)
    SELECT coalesce(owner, ''), queue, idempotency_key, new_id FROM input
    WHERE idempotency_key IS NOT NULL
    ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING owner, queue, key, job_id
),


-- part: idempotency_answer
-- Their answer, after their CTE `inserted` (RETURNING id): per input row in order, the job
-- that holds its key (`created` when that is the row itself), and the id drawn for it.
SELECT i.ord,
       coalesce(ins.id, c.job_id, k.job_id) AS id,
       ins.id IS NOT NULL AS created, i.new_id
FROM input i
LEFT JOIN inserted ins ON ins.id = i.new_id
LEFT JOIN claimed c ON c.owner = coalesce(i.owner, '') AND c.queue = i.queue
                   AND c.key = i.idempotency_key
LEFT JOIN jobqueue.idempotency_keys k
       ON k.owner = coalesce(i.owner, '') AND k.queue = i.queue AND k.key = i.idempotency_key
ORDER BY i.ord


-- part: kept_rounds
-- The rounds in fair queues (NULL when none is: see insert_jobs) of the rows an insert writes,
-- its CTE `kept` numbered `nth` in their order: one call of jobqueue.fair_rounds for all.
rounds AS MATERIALIZED (
    SELECT jobqueue.fair_rounds(count(*)::int, array_agg(queue ORDER BY nth), NULL,
                                array_agg(priority ORDER BY nth), NULL,
                                array_agg(owner ORDER BY nth), NULL) AS rounds
    FROM kept
),


-- name: insert_jobs_idempotent
-- The same insert for batches where some rows carry an idempotency key. Ids are drawn first
-- so a key can be claimed for its row before the row exists; a row whose key is already held
-- (by an earlier job, or an earlier row of this batch) is not inserted and reports the holder.
-- `id` is NULL only when a concurrent transaction took the key after this statement's
-- snapshot; the caller then reads it again. Keys are unique per (owner, queue) (0015).
-- `new_id` is the id drawn for the row: a batch row that was a duplicate keeps it as its
-- place in the batch (jobqueue.batch_duplicates).
WITH input AS MATERIALIZED (
    SELECT t.*, nextval('jobqueue.job_id_seq') AS new_id
    FROM unnest(%(queue)s::text[], %(kind)s::text[], %(payload)s::text[],
                %(priority)s::smallint[], %(run_at)s::timestamptz[], %(max_attempts)s::int[],
                %(timeout_seconds)s::real[], %(owner)s::text[], %(batch_id)s::bigint[],
                %(metadata)s::text[], %(idempotency_key)s::text[])
        WITH ORDINALITY AS t(queue, kind, payload, priority, run_at, max_attempts,
                             timeout_seconds, owner, batch_id, metadata, idempotency_key, ord)
),
-- include: idempotency_claim
-- Only the rows that will be written take rounds (a duplicate must not push its owner back).
kept AS MATERIALIZED (
    SELECT input.*, row_number() OVER (ORDER BY ord) AS nth FROM input
    WHERE idempotency_key IS NULL OR new_id IN (SELECT job_id FROM claimed)
),
-- include: kept_rounds
inserted AS (
    INSERT INTO jobqueue.jobs
        (id, queue, kind, payload, priority, run_at, max_attempts, timeout_seconds, owner,
         batch_id, idempotency_key, metadata, fair_round)
    SELECT new_id, queue, kind, payload::jsonb, priority, coalesce(run_at, now()),
           max_attempts, timeout_seconds, owner, batch_id, idempotency_key, metadata::jsonb,
           r.rounds[nth]
    FROM kept, rounds r
    RETURNING id
)
-- include: idempotency_answer


-- name: find_idempotent
SELECT job_id FROM jobqueue.idempotency_keys
WHERE owner = %(owner)s AND queue = %(queue)s AND key = %(key)s;


-- name: jobs_unfinished
-- How many of these jobs have not ended yet (waiting, running, blocked...): `jobqueue demo`
-- waits on its jobs with it.
SELECT (SELECT count(*) FROM jobqueue.jobs WHERE id = ANY(%(ids)s::bigint[]))
     + (SELECT count(*) FROM jobqueue.blocked WHERE id = ANY(%(ids)s::bigint[])) AS n;


-- name: get_job
-- One job from either table with its state (jobqueue.all_jobs: one snapshot sees it once).
SELECT id, queue, kind, state, payload, priority, run_at, attempts, max_attempts,
       timeout_seconds, result, errors, progress, owner, batch_id, idempotency_key, metadata,
       created_at, started_at, finished_at, lease_owner, cancel_requested
FROM jobqueue.all_jobs WHERE id = %(id)s;


-- part: claim_queue
-- The first CTEs of `claim` and `claim_fair`: the claim's fencing token, drawn once, and the
-- queue's settings (no row in `queues`: not paused, plain), read with one probe.
WITH token AS MATERIALIZED (
    -- once per claim, not per row: gen_random_uuid() per row cost ~2 µs of Postgres CPU a job
    SELECT gen_random_uuid() AS t
),
queue AS MATERIALIZED (
    SELECT coalesce(bool_or(paused), false) AS paused,
           coalesce(bool_or(max_running IS NOT NULL OR max_running_per_owner IS NOT NULL),
                    false) AS capped,
           coalesce(bool_or(fair), false) AS fair
    FROM jobqueue.queues WHERE name = %(queue)s
),


-- part: claim_lease
-- The end of all three claim statements, after their CTE `picked` (the ids they locked):
-- lease those rows (owner, expiry, one more attempt, the claim's `token` as execution id),
-- announce the leased id range on jobqueue_events, and answer the leased rows; each statement
-- appends its marker rows (UNION ALL).
claimed AS (
    -- `picked` answers the locked rows' ctids, and ctid = ANY(ARRAY(...)) is a TID scan that
    -- goes straight to each row. By id, each row cost a descent of the primary key, a fifth
    -- of the claim's CPU (scripts/profile_drain.py --handler real --jobs 200000, the claim
    -- backend: 15.6 -> 12.3 us/job). A locked row cannot move before this UPDATE.
    -- (A row another transaction updated after this statement's snapshot but before the
    -- lock is locked in its newest version, which the snapshot does not see: it is left
    -- out of this claim, still waiting, and free again at the commit.)
    UPDATE jobqueue.jobs j
    SET lease_owner = %(worker)s,
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        attempts = j.attempts + 1,
        started_at = now(),
        execution_id = (SELECT t FROM token)
    WHERE j.ctid = ANY(ARRAY(SELECT at FROM picked))
    -- payload as text: the worker parses it with the C scanner, a third of the cost of
    -- psycopg's Python-level jsonb loader per row (and a payload that cannot be decoded then
    -- fails its own job, not the claim).
    RETURNING j.id, j.kind, j.payload::text, j.attempts, j.max_attempts, j.timeout_seconds,
              j.execution_id::text
),
announced AS MATERIALIZED (
    SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id)) FROM claimed
    HAVING count(*) > 0
)
SELECT c.* FROM claimed c CROSS JOIN announced


-- name: claim
-- The worker's claim: lock up to `limit` runnable rows, skipping rows other workers hold, and
-- lease them in the same statement. The MATERIALIZED CTE keeps the planner from pushing the
-- LIMIT below the lock and updating more rows than asked for. A paused queue yields nothing.
-- Each claim draws one random token (see 0006_execution_ids.sql) for all the rows it leases:
-- with the job id it names one execution (a handler sees "job id:token"), the fencing
-- token of this execution. The claimed id range is announced on jobqueue_events (running).
-- Three claim statements, one per kind of queue (0012_fair_caps.sql): this one for queues
-- without caps or fairness (most), claim_fair, claim_capped. Each reads the queue's settings
-- and takes nothing from a queue that needs another: it answers one row with a NULL id and
-- the other statement's name instead, and the worker (db/store.py) runs that one. So a change
-- of settings applies at the next claim, whichever statement a worker last used, and this
-- one costs what it did before the settings existed: one probe of `queues`.
-- include: claim_queue
picked AS MATERIALIZED (
    SELECT ctid AS at FROM jobqueue.jobs
    WHERE queue = %(queue)s AND lease_owner IS NULL AND run_at <= now()
      AND (SELECT NOT (paused OR capped OR fair) FROM queue)
    -- lane (0024): a retry of a queue whose retry_order is 'first' has lane 0 and goes
    -- before new work of its priority (while it backs off it is parked in lane 2, after the
    -- due work: 0030). The order is jobs_claim_idx's, so this stays one ordered index scan
    -- (Index Cond: queue, run_at <= now()), stopping after `limit` rows.
    ORDER BY priority, lane, run_at, id
    -- A sub-select, not the bare parameter: the planner then estimates the limit alike
    -- whether it knows the value or not, so after five runs the prepared statement keeps
    -- one generic plan (the same plan) instead of planning again at each claim. With the bare
    -- parameter, a generic plan's guess of a tenth of the backlog made it look costlier, and
    -- each claim of 500 rows over 200,000 waiting spent ~0.6 ms planning (planning time
    -- 0.6 -> 0.04 ms).
    LIMIT (SELECT %(limit)s::int)
    FOR UPDATE SKIP LOCKED
),
-- include: claim_lease
UNION ALL
SELECT NULL, CASE WHEN capped THEN 'claim_capped' ELSE 'claim_fair' END,
       NULL, NULL, NULL, NULL, NULL
FROM queue WHERE capped OR fair;


-- name: claim_fair
-- The claim of a fair queue without caps: `claim` in the fair order, round robin between
-- owners within a priority level: (priority, fair_round, id) through jobs_fair_idx, one
-- ordered index scan of the rows it takes, as the plain claim's. The rounds are fixed at
-- insert (0012_fair_caps.sql), so nothing here counts or ranks owners over the backlog.
-- include: claim_queue
picked AS MATERIALIZED (
    SELECT ctid AS at FROM jobqueue.jobs
    WHERE queue = %(queue)s AND lease_owner IS NULL AND fair_round IS NOT NULL
      AND run_at <= now()
      AND (SELECT fair AND NOT (paused OR capped) FROM queue)
    ORDER BY priority, fair_round, id
    LIMIT (SELECT %(limit)s::int)  -- see `claim`
    FOR UPDATE SKIP LOCKED
),
-- include: claim_lease
UNION ALL
SELECT NULL, CASE WHEN capped THEN 'claim_capped' ELSE 'claim' END,
       NULL, NULL, NULL, NULL, NULL
FROM queue WHERE capped OR NOT fair;


-- name: claim_capped
-- The claim of a queue with fleet-wide caps (and of any queue: it reads every setting, so it
-- is right whatever the settings became since the worker chose it). Three sources of rows,
-- of which the settings pick one by a one-time filter (Postgres checks a condition on
-- `allowed` alone once, and skips the source's index when it is false):
--   plain      no fairness: (priority, lane, run_at, id) through jobs_claim_idx;
--   fair       fair order, no per-owner cap: (priority, fair_round, id), jobs_fair_idx;
--   per_owner  a per-owner cap (which implies fairness): the next `4 * limit + 100` rows in
--              fair order, unlocked, each owner's numbered in turn; those within the owner's
--              room are locked. Fair order spreads an owner's rows one per round, so an owner
--              at its cap does not hide the others' work behind its backlog.
-- The caps: the claim first locks the queue's row (`gate`), held to its commit, so claims of
-- the queue take turns; jobqueue.running_counts then counts the queue's running jobs on a
-- fresh snapshot (the one of this statement predates the wait, and would miss what the
-- previous holder of the lock claimed), and `allowed` leaves room for `max_running` minus
-- those. Rows another claim took after this statement's snapshot fail the re-check of
-- `lease_owner IS NULL` that FOR UPDATE does on the newest row version, so they are skipped.
-- Marker rows (NULL id, the word in `kind`): 'held_back' when the caps left runnable work
-- unclaimed (nothing announces a freed place, so the worker looks again soon); the name of
-- the statement the queue needs now if it is no longer capped.
WITH token AS MATERIALIZED (
    SELECT gen_random_uuid() AS t
),
settings AS MATERIALIZED (
    SELECT paused, fair FROM jobqueue.queues WHERE name = %(queue)s
),
gate AS MATERIALIZED (
    SELECT max_running, max_running_per_owner FROM jobqueue.queues
    WHERE name = %(queue)s AND NOT paused
      AND (max_running IS NOT NULL OR max_running_per_owner IS NOT NULL)
    FOR UPDATE
),
running AS MATERIALIZED (
    -- COLLATE "C" here and in `candidates`: owners are only matched and grouped, never shown
    -- sorted, and byte order spares the per-owner sorts and join the locale's comparisons.
    SELECT r.owner COLLATE "C" AS owner, r.running
    FROM gate CROSS JOIN jobqueue.running_counts(%(queue)s) AS r
),
allowed AS MATERIALIZED (
    SELECT CASE WHEN coalesce(s.paused, false) THEN 0
                WHEN g.max_running IS NULL THEN %(limit)s
                ELSE greatest(0, least(%(limit)s, g.max_running
                                       - coalesce((SELECT sum(running) FROM running), 0)))
           END::int AS n,
           coalesce(s.fair, false) AS fair,
           g.max_running_per_owner AS per_owner,
           g.max_running IS NOT NULL OR g.max_running_per_owner IS NOT NULL AS capped,
           coalesce(s.paused, false) AS paused
    FROM (SELECT) AS one LEFT JOIN settings s ON true LEFT JOIN gate g ON true
),
plain AS MATERIALIZED (
    SELECT ctid AS at FROM jobqueue.jobs
    WHERE queue = %(queue)s AND lease_owner IS NULL AND run_at <= now()
      AND (SELECT NOT fair AND per_owner IS NULL AND n > 0 FROM allowed)
    ORDER BY priority, lane, run_at, id  -- as in `claim` (0024)
    LIMIT (SELECT %(limit)s::int)  -- see `claim`
    FOR UPDATE SKIP LOCKED
),
fair AS MATERIALIZED (
    SELECT ctid AS at FROM jobqueue.jobs
    WHERE queue = %(queue)s AND lease_owner IS NULL AND fair_round IS NOT NULL
      AND run_at <= now()
      AND (SELECT fair AND per_owner IS NULL AND n > 0 FROM allowed)
    ORDER BY priority, fair_round, id
    LIMIT (SELECT %(limit)s::int)  -- see `claim`
    FOR UPDATE SKIP LOCKED
),
candidates AS MATERIALIZED (
    SELECT id, coalesce(owner, '') COLLATE "C" AS owner, priority, fair_round
    FROM jobqueue.jobs
    WHERE queue = %(queue)s AND lease_owner IS NULL AND fair_round IS NOT NULL
      AND run_at <= now()
      AND (SELECT per_owner IS NOT NULL AND n > 0 FROM allowed)
    ORDER BY priority, fair_round, id
    LIMIT 4 * %(limit)s + 100
),
chosen AS MATERIALIZED (
    SELECT c.id FROM (
        SELECT c.*, row_number() OVER (PARTITION BY c.owner
                                       ORDER BY c.priority, c.fair_round, c.id) AS nth
        FROM candidates c
    ) AS c
    LEFT JOIN running r ON r.owner = c.owner
    WHERE c.nth <= (SELECT per_owner FROM allowed) - coalesce(r.running, 0)
    ORDER BY c.priority, c.fair_round, c.id
    LIMIT (SELECT n FROM allowed)
),
per_owner AS MATERIALIZED (
    SELECT ctid AS at FROM jobqueue.jobs
    WHERE id = ANY(ARRAY(SELECT id FROM chosen)) AND lease_owner IS NULL
    FOR UPDATE SKIP LOCKED
),
picked AS MATERIALIZED (
    -- `plain` and `fair` lock up to `limit` rows; a capped queue leases only `n` of them (the
    -- rest stay locked by this statement until it commits, then are free again).
    SELECT at FROM (SELECT at FROM plain UNION ALL SELECT at FROM fair
                    LIMIT (SELECT n FROM allowed)) AS p
    UNION ALL
    SELECT at FROM per_owner
),
-- include: claim_lease
UNION ALL
-- Held back: fewer places than asked for, or candidates over their owner's cap, while more
-- runnable rows wait than this claim took (counted through the claim index, at most one past
-- them; in this statement's snapshot the rows it took still look runnable). CASE, so none of
-- it is evaluated for a queue that is not capped.
SELECT NULL, 'held_back', NULL, NULL, NULL, NULL, NULL FROM allowed
WHERE CASE WHEN capped AND (n < %(limit)s
                            OR (SELECT count(*) FROM chosen) < (SELECT count(*) FROM candidates))
           THEN (SELECT count(*) FROM (
                     SELECT 1 FROM jobqueue.jobs
                     WHERE queue = %(queue)s AND lease_owner IS NULL AND run_at <= now()
                     LIMIT (SELECT count(*) FROM picked) + 1) AS w)
                > (SELECT count(*) FROM picked)
           ELSE false END
UNION ALL
SELECT NULL, CASE WHEN fair THEN 'claim_fair' ELSE 'claim' END, NULL, NULL, NULL, NULL, NULL
FROM allowed WHERE NOT capped AND NOT paused;


-- name: next_run_at
-- When an idle worker should look again for scheduled work (no notification announces it).
SELECT min(run_at) FROM jobqueue.jobs WHERE queue = %(queue)s AND lease_owner IS NULL;


-- name: finish_jobs
-- Move jobs a worker finished (succeeded, dead or cancelled) to `finished`. The fencing token
-- (lease_owner, execution_id) must still be the worker's: a worker whose lease expired and
-- whose job was taken over moves nothing, and learns so from the ids missing in RETURNING.
-- The one move that does not call jobqueue.finished_row (0007_job_state.sql), on purpose: it
-- is the hot path (~1,000 rows per statement), and the whole-row value `RETURNING j` builds
-- for finished_row, taken apart again column by column, cost 1 us per job: in
-- scripts/profile_drain.py --jobs 50000 the outcome connection's backend used 9.0 us/job with
-- finished_row against 8.0 written out (medians of 5 interleaved runs).
-- So the columns are written out here and must stay exactly what finished_row writes:
-- tests/integration/test_states.py checks that a job finished here equals finished_row of the
-- same job, column for column, and that every column of `finished` is written.
WITH done AS (
    DELETE FROM jobqueue.jobs j
    USING unnest(%(id)s::bigint[], %(execution)s::uuid[], %(state)s::text[], %(result)s::text[],
                 %(error)s::text[]) AS d(id, execution, state, result, error)
    WHERE j.id = d.id AND j.execution_id = d.execution AND j.lease_owner = %(worker)s
    RETURNING j.id, j.queue, j.kind, j.payload, j.priority, j.run_at, j.attempts,
              j.max_attempts, j.timeout_seconds, d.state, d.result, j.errors, d.error,
              j.progress, j.owner, j.batch_id, j.idempotency_key, j.metadata, j.created_at,
              j.started_at, j.execution_id, j.has_children
),
moved AS (
    INSERT INTO jobqueue.finished
        (id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds, state,
         result, errors, progress, owner, batch_id, idempotency_key, metadata, created_at,
         started_at, execution_id)
    SELECT id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
           state, result::jsonb,
           CASE WHEN error IS NULL THEN errors ELSE errors || jsonb_build_array(error::jsonb) END,
           progress, owner, batch_id, idempotency_key, metadata, created_at, started_at,
           execution_id
    FROM done
    RETURNING id
),
announced AS MATERIALIZED (
    SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id)) FROM moved
    HAVING count(*) > 0
),
released AS MATERIALIZED (
    -- Jobs other jobs wait for (0015: depends_on, batch callbacks) release or cancel them
    -- here, in the transaction that ends them. Only flagged rows get this far: without any,
    -- the aggregate has no group, so the function is not called and a drain of plain jobs
    -- pays a scan of `done`'s booleans.
    SELECT jobqueue.release_children(array_agg(id), array_agg(state)) AS n
    FROM done WHERE has_children
    HAVING count(*) > 0
)
SELECT m.id FROM moved m CROSS JOIN announced LEFT JOIN released ON true;


-- name: retry_jobs
-- Failed attempts that will be tried again: release the lease, keep the error, and schedule
-- the next attempt after the backoff the worker computed. Fenced like finish_jobs. The
-- execution id stays on the row until the next claim: outcomes_recorded looks for it.
-- `lane` places the retry in the claim order by its queue's retry_order (0024): before new
-- work of its priority (the default: no row in `queues`) or after it (1). Before means 0 if
-- it is due at once, else 2, parked until maintenance moves it to 0 once due (0030: a row
-- of lane 0 with a future run_at would stand in the claim's scan). The queues whose retries
-- go last are read once per statement, into a hash the rows look up (a hashed SubPlan), not
-- with a probe of `queues` per row.
WITH retried AS (
    UPDATE jobqueue.jobs j
    SET lease_owner = NULL, lease_expires_at = NULL, cancel_requested = false,
        run_at = now() + make_interval(secs => f.delay),
        -- include: retry_lane
        progress = jobqueue.unpaused(j.progress),  -- not paused over budget any more (0031)
        errors = j.errors || jsonb_build_array(f.error::jsonb)
    FROM unnest(%(id)s::bigint[], %(execution)s::uuid[], %(delay)s::float8[], %(error)s::text[])
        AS f(id, execution, delay, error)
    WHERE j.id = f.id AND j.execution_id = f.execution AND j.lease_owner = %(worker)s
    RETURNING j.id
),
announced AS MATERIALIZED (
    SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id)) FROM retried
    HAVING count(*) > 0
)
SELECT r.id FROM retried r CROSS JOIN announced;


-- part: retry_lane
-- Where a retry goes in the claim order (0024, 0030), in retry_jobs' and rescue_retry's SET;
-- f.delay is its backoff in seconds.
        lane = CASE WHEN j.queue IN (SELECT name FROM jobqueue.queues
                                     WHERE retry_order = 'last') THEN 1
                    WHEN f.delay > 0 THEN 2 ELSE 0 END,


-- part: given_back_now
-- The SET of a job given back untouched and due at once (hand_back at shutdown, renew_leases'
-- rows a lost claim reply leased): its lease released, the attempt not counted, no longer
-- paused over budget (0031), and a parked retry back in lane 0 (as lane_due, 0030).
    SET lease_owner = NULL, lease_expires_at = NULL, attempts = greatest(j.attempts - 1, 0),
        run_at = now(), progress = jobqueue.unpaused(j.progress),
        lane = CASE WHEN j.lane = 2 THEN 0 ELSE j.lane END


-- part: lane_not_due
-- A row put off until later (run_at ahead) leaves lane 0, which holds only due rows (0030):
-- a retry placed first is parked in lane 2 until maintenance brings it back.
        lane = CASE WHEN lane = 0 THEN 2 ELSE lane END


-- part: lane_due
-- A row made due now takes its parked place ahead of new work at once (lane 2 -> 0, 0030),
-- instead of waiting for maintenance.
        lane = CASE WHEN lane = 2 THEN 0 ELSE lane END


-- name: outcomes_recorded
-- After a lost reply (the connection broke after the outcome statement was sent), which of
-- these executions' outcomes did commit: finished by that execution, or released for a retry
-- by it (its error, the last one, names the execution; a rescue's LeaseExpired does not count).
WITH mine AS (
    SELECT * FROM unnest(%(id)s::bigint[], %(execution)s::uuid[]) AS m(id, execution)
)
SELECT f.id FROM mine JOIN jobqueue.finished f ON f.id = mine.id
WHERE f.execution_id = mine.execution
UNION ALL
SELECT j.id FROM mine JOIN jobqueue.jobs j ON j.id = mine.id
WHERE j.execution_id = mine.execution AND j.lease_owner IS NULL
  AND j.errors -> -1 ->> 'execution_id' = j.id || ':' || j.execution_id
  AND j.errors -> -1 ->> 'type' <> 'LeaseExpired';


-- name: hand_back
-- Shutdown: give running jobs back untouched. The attempt did not fail, so it is not counted.
WITH released AS (
    UPDATE jobqueue.jobs j
    -- include: given_back_now
    WHERE id = ANY(%(ids)s) AND lease_owner = %(worker)s
    RETURNING id, queue
)
SELECT count(*) AS released,
       count(pg_notify('jobqueue_insert', queue)) AS notified,
       count(pg_notify('jobqueue_events', id || '-' || id)) AS announced
FROM released;


-- name: hand_back_later
-- A handler gave its job back until later (HandBack with a delay: an LLM job over its
-- budget): not counted as an attempt, due again after `delay` seconds (so a paused job is not
-- claimed again in a tight loop), with `progress` saying why it waits, for people.
WITH released AS (
    UPDATE jobqueue.jobs j
    SET lease_owner = NULL, lease_expires_at = NULL, attempts = greatest(j.attempts - 1, 0),
        run_at = now() + make_interval(secs => b.delay), progress = b.progress::jsonb,
        -- include: lane_not_due
    FROM unnest(%(ids)s::bigint[], %(delays)s::float8[], %(progress)s::text[])
        AS b(id, delay, progress)
    WHERE j.id = b.id AND j.lease_owner = %(worker)s
    RETURNING j.id
)
SELECT count(*) AS released,
       count(pg_notify('jobqueue_events', id || '-' || id)) AS announced
FROM released;


-- name: resume_over_budget
-- A budget was raised or removed: its scope's jobs paused over budget are due now, and no
-- longer say they are paused. (Still over another budget, they pause again on their next
-- call.) Uses jobs_batch_idx for a batch; an owner's scope reads the owner's waiting jobs.
WITH resumed AS (
    UPDATE jobqueue.jobs
    SET run_at = now(), progress = NULL,
        -- include: lane_due
    WHERE lease_owner IS NULL AND progress ->> 'paused' = 'over budget'
      AND ((%(scope)s = 'batch' AND batch_id = %(batch_id)s)
           OR (%(scope)s = 'owner' AND owner = %(scope_id)s)
           OR (%(scope)s = 'campaign' AND metadata ->> 'campaign' = %(scope_id)s))
    RETURNING id, queue
)
SELECT count(*) AS resumed,
       count(pg_notify('jobqueue_insert', queue)) AS notified
FROM resumed;


-- name: batch_over_budget
-- How many of a batch's jobs wait paused over a budget.
SELECT count(*) AS over_budget FROM jobqueue.jobs
WHERE batch_id = %(batch_id)s AND lease_owner IS NULL
  AND progress ->> 'paused' = 'over budget';


-- name: renew_leases
-- Heartbeat: extend the leases of the jobs this worker knows it runs (`known`), and hand back
-- at once any other row leased to it: a claim whose reply was lost (the connection broke after
-- the claim committed, and the claim was sent again) leased rows the worker never heard of.
-- Renewing every row it owns would keep those leased for good. The worker sends this only
-- while no claim of its own is in flight, so every row it did claim is in `known`.
-- Only leases set at least `renew_after` seconds ago are extended: a busy worker's jobs
-- mostly finish before their first renewal, and the beat a worker makes as soon as its
-- LISTEN is in place (to catch up on cancellations) would otherwise rewrite every row it has
-- just claimed (~30 ms of Postgres CPU per 2,000 rows). Those are read (`fresh`), not
-- locked: their lease has more than `lease_seconds - renew_after` left, so no rescue can take
-- them meanwhile. The rows to renew or hand back are locked first (`mine`), as before.
-- Returns the known rows with their cancellation flag (so the worker learns of cancellations
-- without LISTEN, and of leases it lost: ids missing), and released = true for the others.
WITH mine AS MATERIALIZED (
    SELECT id, id = ANY(%(known)s::bigint[]) AS known FROM jobqueue.jobs
    WHERE lease_owner = %(worker)s
      AND (lease_expires_at < now() + make_interval(secs => %(lease_seconds)s - %(renew_after)s)
           OR NOT id = ANY(%(known)s::bigint[]))
    FOR UPDATE
),
fresh AS (
    SELECT id, cancel_requested FROM jobqueue.jobs
    WHERE lease_owner = %(worker)s AND id = ANY(%(known)s::bigint[])
      AND lease_expires_at >= now() + make_interval(secs => %(lease_seconds)s - %(renew_after)s)
),
renewed AS (
    UPDATE jobqueue.jobs j
    SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
    FROM mine WHERE j.id = mine.id AND mine.known
    RETURNING j.id, j.cancel_requested
),
released AS (
    UPDATE jobqueue.jobs j
    -- include: given_back_now
    FROM mine WHERE j.id = mine.id AND NOT mine.known
    RETURNING j.id, j.queue
)
SELECT id, cancel_requested, false AS released FROM renewed
UNION ALL
SELECT id, cancel_requested, false FROM fresh
UNION ALL
SELECT id, false, pg_notify('jobqueue_insert', queue) IS NOT NULL FROM released;


-- name: set_progress
WITH updated AS (
    UPDATE jobqueue.jobs SET progress = %(progress)s::jsonb
    WHERE id = %(id)s AND lease_owner = %(worker)s AND execution_id = %(execution)s::uuid
    RETURNING id
)
SELECT pg_notify('jobqueue_events', id || '-' || id) FROM updated;


-- name: rescue_dead
-- Maintenance (each maintenance statement takes the leader's transaction-level advisory lock
-- itself and is its own transaction: no lock is ever held across a round trip, so a leader
-- cut off from the network mid-maintenance cannot hold up rescue for the fleet).
-- Expired leases on jobs that have used every attempt: dead-letter them with the reason
-- (a move to `finished` like every other: jobqueue.finished_row).
WITH leader AS MATERIALIZED (
    SELECT pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance')) AS ok
),
expired AS (
    DELETE FROM jobqueue.jobs j
    WHERE j.id IN (SELECT id FROM jobqueue.jobs
                   WHERE lease_owner IS NOT NULL AND lease_expires_at < now()
                     AND attempts >= max_attempts AND (SELECT ok FROM leader)
                   FOR UPDATE SKIP LOCKED)
    RETURNING j AS job
),
moved AS (
    INSERT INTO jobqueue.finished
    SELECT (jobqueue.finished_row(job, 'dead', NULL, jsonb_build_array(jsonb_build_object(
               'attempt', (job).attempts, 'at', now(), 'type', 'LeaseExpired',
               'message', 'worker ' || (job).lease_owner || ' stopped renewing its lease',
               'worker', (job).lease_owner,
               'execution_id', (job).id || ':' || (job).execution_id)))).*
    FROM expired
    RETURNING id, pg_notify('jobqueue_events', id || '-' || id)
),
released AS MATERIALIZED (
    -- Their children (0015) follow their policy, in this transaction (see finish_jobs).
    SELECT jobqueue.release_children(array_agg((job).id), array_agg('dead'::text)) AS n
    FROM expired WHERE (job).has_children
    HAVING count(*) > 0
)
SELECT m.id FROM moved m LEFT JOIN released ON true;


-- name: rescue_retry
-- Expired leases with attempts left: the worker is gone (crash, kill -9, partition); make the
-- job runnable now and wake the workers of its queue. Placed in the claim order as a retry
-- (lane: see retry_jobs).
WITH leader AS MATERIALIZED (
    SELECT pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance')) AS ok
),
rescued AS (
    UPDATE jobqueue.jobs j
    SET lease_owner = NULL, lease_expires_at = NULL, run_at = now(),
        -- include: retry_lane
        progress = jobqueue.unpaused(j.progress),  -- not paused over budget any more (0031)
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempts, 'at', now(), 'type', 'LeaseExpired',
            'message', 'worker ' || j.lease_owner || ' stopped renewing its lease',
            'worker', j.lease_owner, 'execution_id', j.id || ':' || j.execution_id))
    FROM (SELECT 0::float8 AS delay) AS f  -- runnable at once: no backoff
    WHERE j.id IN (SELECT id FROM jobqueue.jobs
                   WHERE lease_owner IS NOT NULL AND lease_expires_at < now()
                     AND attempts < max_attempts AND (SELECT ok FROM leader)
                   FOR UPDATE SKIP LOCKED)
    RETURNING j.id, j.queue
)
SELECT count(*) AS rescued,
       count(pg_notify('jobqueue_events', id || '-' || id)) AS announced,
       (SELECT count(pg_notify('jobqueue_insert', q)) FROM (SELECT DISTINCT queue AS q
                                                           FROM rescued) AS queues) AS notified
FROM rescued;


-- name: promote_retries
-- Maintenance: parked retries (lane 2, 0030) whose backoff has ended move to lane 0, before
-- the new work of their priority, as their queue's retry_order 'first' asks; a bounded slice
-- per pass, oldest first. They were claimable meanwhile, after the due work.
WITH leader AS MATERIALIZED (
    SELECT pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance')) AS ok
)
UPDATE jobqueue.jobs SET lane = 0
WHERE id IN (SELECT id FROM jobqueue.jobs
             WHERE lane = 2 AND lease_owner IS NULL AND run_at <= now()
               AND (SELECT ok FROM leader)
             ORDER BY run_at
             LIMIT %(limit)s
             FOR UPDATE SKIP LOCKED);


-- name: prune_finished
-- Drop finished jobs past their retention, a bounded slice at a time, with their keys.
WITH leader AS MATERIALIZED (
    SELECT pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance')) AS ok
),
doomed AS (
    DELETE FROM jobqueue.finished
    WHERE id IN (SELECT id FROM jobqueue.finished
                 WHERE finished_at < now() - make_interval(secs => %(retention_seconds)s)
                   AND (SELECT ok FROM leader)
                 LIMIT %(limit)s)
    RETURNING id
),
keys AS (
    DELETE FROM jobqueue.idempotency_keys WHERE job_id IN (SELECT id FROM doomed)
)
SELECT count(*) FROM doomed;


-- name: cancel_jobs
-- Cancel the hot jobs matching a filter (jobqueue.dashboard_match, 0005; a NULL parameter
-- means any; `ids` selects jobs, `upto` bounds a confirmed bulk action): waiting, retrying
-- and scheduled ones move to `finished` as cancelled at once, and so do blocked ones (0015);
-- running ones are flagged and their workers told (they end the job as cancelled, or hear
-- of it at their next heartbeat).
-- The matching rows are locked first, so a job claimed meanwhile is either seen running (and
-- flagged) or not matched at all: never moved from under its worker, never missed.
-- Client.cancel (one id), the API, the CLI and the dashboard's bulk action all run this,
-- then release_children for `parents` (jobs others wait for) in the same transaction (a
-- statement of its own: see store.cancel). A manual cancel is recorded by this statement
-- (job_actions_noted): cancelled or asked to stop, each job with who asked.
WITH hot AS MATERIALIZED (
    SELECT j.id, j.lease_owner
    FROM jobqueue.jobs j
    WHERE jobqueue.dashboard_match(
        j.id, j.queue, j.kind, j.owner, j.batch_id,
        jobqueue.job_state(j.lease_owner, j.run_at, j.attempts, j.errors,
                           j.progress), j.payload,
        j.metadata, j.errors, %(ids)s::bigint[], %(upto)s::bigint,
        %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
        %(state)s::text, %(text)s::text)
    ORDER BY j.id  -- one lock order for every canceller: two bulk cancels cannot deadlock
    FOR UPDATE
),
held AS MATERIALIZED (
    SELECT b.id
    FROM jobqueue.blocked b
    WHERE (%(state)s::text IS NULL OR %(state)s::text = 'blocked')
      AND jobqueue.dashboard_match(
        b.id, b.queue, b.kind, b.owner, b.batch_id, 'blocked', b.payload, b.metadata,
        '[]'::jsonb, %(ids)s::bigint[], %(upto)s::bigint,
        %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
        %(state)s::text, %(text)s::text)
    ORDER BY b.id
    FOR UPDATE
),
gone AS (
    DELETE FROM jobqueue.jobs j
    WHERE j.id IN (SELECT id FROM hot WHERE lease_owner IS NULL)
    RETURNING j AS job
),
moved AS (
    INSERT INTO jobqueue.finished
    SELECT (jobqueue.finished_row(job, 'cancelled', NULL, '[]')).* FROM gone
    RETURNING id
),
unblocked AS (
    DELETE FROM jobqueue.blocked b WHERE b.id IN (SELECT id FROM held)
    RETURNING b.*
),
unblocked_moved AS (
    INSERT INTO jobqueue.finished
        (id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
         state, result, errors, progress, owner, batch_id, idempotency_key, metadata,
         created_at, started_at, execution_id)
    SELECT id, queue, kind, payload, priority, coalesce(run_at, now()), 0, max_attempts,
           timeout_seconds, 'cancelled', NULL, '[]', NULL, owner, batch_id, idempotency_key,
           metadata, created_at, NULL, NULL
    FROM unblocked
    RETURNING id
),
unlinked AS (
    -- A cancelled blocked job waits for nothing any more.
    DELETE FROM jobqueue.job_dependencies WHERE child_id IN (SELECT id FROM unblocked)
),
flagged AS (
    UPDATE jobqueue.jobs SET cancel_requested = true
    WHERE id IN (SELECT id FROM hot WHERE lease_owner IS NOT NULL)
    RETURNING id
),
acted AS (
    -- every job cancelled or asked to stop: the record of who did it (audit)
    SELECT id FROM moved UNION ALL SELECT id FROM unblocked_moved
    UNION ALL SELECT id FROM flagged
),
-- include: job_actions_noted
SELECT (SELECT count(*) FROM moved) + (SELECT count(*) FROM unblocked_moved) AS cancelled,
       (SELECT count(pg_notify('jobqueue_cancel', id::text)) FROM flagged) AS requested,
       (SELECT count(*) FROM (SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id))
                              FROM (SELECT id FROM moved UNION ALL
                                    SELECT id FROM unblocked_moved) AS m
                              HAVING count(*) > 0) AS n) AS announced,
       ARRAY(SELECT (job).id FROM gone WHERE (job).has_children
             UNION ALL SELECT id FROM unblocked WHERE has_children) AS parents;


-- name: revive_jobs
-- Retry finished jobs in `states` (dead, cancelled) matching a filter: back to the hot table
-- with a fresh attempt budget (attempts 0: `waiting`, not `retrying`) and their error
-- history. The reverse move, written once: Client.retry / retry_dead, the API, the CLI and
-- the dashboard. The insert trigger wakes the workers; one event for the id range instead of
-- one per job, so retrying 100,000 jobs sends one message. A manual retry is recorded by
-- this statement (job_actions_noted), for each job revived.
WITH revived AS (
    DELETE FROM jobqueue.finished AS j
    WHERE j.state = ANY(%(states)s::text[])
      AND jobqueue.dashboard_match(
          j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
          j.errors, %(ids)s::bigint[], %(upto)s::bigint,
          %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
          %(state)s::text, %(text)s::text)
    RETURNING id, queue, kind, payload, priority, max_attempts, timeout_seconds, errors,
              progress, owner, batch_id, idempotency_key, metadata, created_at
),
-- Revived rows of fair queues take rounds as new ones do (insert_jobs), oldest first.
kept AS MATERIALIZED (
    SELECT revived.*, row_number() OVER (ORDER BY id) AS nth FROM revived
),
-- include: kept_rounds
inserted AS (
    INSERT INTO jobqueue.jobs
        (id, queue, kind, payload, priority, run_at, attempts, max_attempts, timeout_seconds,
         errors, progress, owner, batch_id, idempotency_key, metadata, created_at, fair_round)
    SELECT id, queue, kind, payload, priority, now(), 0, max_attempts, timeout_seconds,
           errors, jobqueue.unpaused(progress), owner, batch_id, idempotency_key, metadata,
           created_at, r.rounds[nth]
    FROM kept, rounds r
    RETURNING id
),
announced AS MATERIALIZED (
    SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id)) FROM inserted
    HAVING count(*) > 0
),
acted AS (SELECT id FROM inserted),
-- include: job_actions_noted
SELECT i.id FROM inserted i LEFT JOIN announced ON true;


-- name: delete_jobs
-- Delete the jobs matching a filter: finished ones, and hot ones that are not running (a
-- running job belongs to its worker; cancel it first). Their idempotency keys go too, so a
-- key can be used again. The finished_counts trigger keeps the counts right. `dead purge`
-- is this with state = 'dead'. A manual delete is recorded by this statement
-- (job_actions_noted), for each job deleted: the record outlives the job.
WITH cold AS (
    DELETE FROM jobqueue.finished AS j
    WHERE jobqueue.dashboard_match(
        j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
        j.errors, %(ids)s::bigint[], %(upto)s::bigint,
        %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
        %(state)s::text, %(text)s::text)
    RETURNING id
),
hot AS (
    -- A filter on a finished state (`dead purge`) folds the first condition to false, so the
    -- hot table is not scanned at all.
    DELETE FROM jobqueue.jobs j
    WHERE (%(state)s::text IS NULL OR %(state)s::text IN ('waiting', 'scheduled', 'retrying'))
      AND j.lease_owner IS NULL
      AND jobqueue.dashboard_match(
          j.id, j.queue, j.kind, j.owner, j.batch_id,
          jobqueue.job_state(j.lease_owner, j.run_at, j.attempts, j.errors,
                           j.progress), j.payload,
          j.metadata, j.errors, %(ids)s::bigint[], %(upto)s::bigint,
          %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
          %(state)s::text, %(text)s::text)
    RETURNING id, has_children
),
held AS (
    -- Blocked jobs (0015) go too, with what they waited for.
    DELETE FROM jobqueue.blocked b
    WHERE (%(state)s::text IS NULL OR %(state)s::text = 'blocked')
      AND jobqueue.dashboard_match(
          b.id, b.queue, b.kind, b.owner, b.batch_id, 'blocked', b.payload, b.metadata,
          '[]'::jsonb, %(ids)s::bigint[], %(upto)s::bigint,
          %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
          %(state)s::text, %(text)s::text)
    RETURNING id, has_children
),
unlinked AS (
    DELETE FROM jobqueue.job_dependencies WHERE child_id IN (SELECT id FROM held)
),
acted AS (
    SELECT id FROM cold UNION ALL SELECT id FROM hot UNION ALL SELECT id FROM held
),
keys AS (
    DELETE FROM jobqueue.idempotency_keys WHERE job_id IN (SELECT id FROM acted)
),
-- include: job_actions_noted
-- Followers of these jobs (SSE, ?wait=) are told at once that something changed: they find
-- the job gone. `parents`: deleted jobs others waited for; store.delete ends their waits as
-- if they were cancelled (their children follow their policy).
SELECT (SELECT count(*) FROM acted) AS deleted,
       (SELECT count(*) FROM (SELECT pg_notify('jobqueue_events', min(id) || '-' || max(id))
                              FROM acted HAVING count(*) > 0) AS n) AS announced,
       ARRAY(SELECT id FROM hot WHERE has_children
             UNION ALL SELECT id FROM held WHERE has_children) AS parents;


-- name: list_dead
-- The newest dead jobs, optionally of one queue. The dead-letter index is per queue, so take
-- the newest `limit` of each queue that has dead jobs (from finished_counts) and merge them:
-- a few index probes instead of sorting every dead row.
SELECT d.id, d.queue, d.kind, d.attempts, d.finished_at, d.last_error
FROM jobqueue.finished_counts c
CROSS JOIN LATERAL (
    SELECT id, queue, kind, attempts, finished_at, errors -> -1 AS last_error
    FROM jobqueue.finished
    WHERE state = 'dead' AND queue = c.queue
    ORDER BY finished_at DESC
    LIMIT %(limit)s
) AS d
WHERE c.state = 'dead' AND c.count > 0
  AND (%(queue)s::text IS NULL OR c.queue = %(queue)s::text)
ORDER BY d.finished_at DESC
LIMIT %(limit)s;


-- name: queue_status
-- One row per queue known anywhere: depth by state and the oldest waiting job's age from the
-- hot table (states from jobqueue.job_state); finished counts from the trigger-kept
-- finished_counts (never a count over all of `finished`, which grows to millions); how many
-- finished in the last minute (a bounded scan through the BRIN index); whether the queue
-- is paused; and the scaling signals (0013): `latency_seconds`, the oldest waiting job's age
-- unless the queue's provider has no headroom (jobqueue.queue_latency explains why), whether
-- it is `rate_limited`, and the `workers` alive for it (heartbeat in the last minute).
-- A queue is known when it has jobs or finished counts, is paused, is served by a registered
-- worker or is a platform with rate buckets: every known queue gets a row, its counts at 0.
-- Used by `jobqueue status`, /api/queues, /metrics and the dashboard.
WITH states AS (
    SELECT queue, run_at,
           jobqueue.job_state(lease_owner, run_at, attempts, errors, progress) AS state
    FROM jobqueue.jobs
    UNION ALL
    SELECT queue, NULL, 'blocked' FROM jobqueue.blocked  -- waiting for other jobs (0015)
),
hot AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'waiting') AS waiting,
           count(*) FILTER (WHERE state = 'retrying') AS retrying,
           count(*) FILTER (WHERE state = 'scheduled') AS scheduled,
           count(*) FILTER (WHERE state = 'running') AS running,
           count(*) FILTER (WHERE state = 'blocked') AS blocked,
           -- due waiting jobs only: one paused over budget waits with a run_at ahead (0025)
           extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'waiting'
                                                            AND run_at <= now()))::float8
               AS oldest_waiting_seconds
    FROM states GROUP BY queue
),
cold AS (
    SELECT queue,
           sum(count) FILTER (WHERE state = 'succeeded')::bigint AS succeeded,
           sum(count) FILTER (WHERE state = 'dead')::bigint AS dead,
           sum(count) FILTER (WHERE state = 'cancelled')::bigint AS cancelled
    FROM jobqueue.finished_counts GROUP BY queue
    HAVING sum(count) > 0  -- a queue whose finished jobs were all pruned is gone
),
recent AS (
    SELECT queue, count(*) AS finished_last_minute
    FROM jobqueue.finished WHERE finished_at > now() - interval '1 minute'
    GROUP BY queue
),
served AS (
    -- A worker row's `queue` lists the queues it serves, comma-separated.
    SELECT s.queue, count(*) FILTER (WHERE w.last_seen_at > now() - interval '1 minute')
               AS workers
    FROM jobqueue.workers w, unnest(string_to_array(w.queue, ',')) AS s(queue)
    GROUP BY s.queue
),
names AS (
    SELECT queue FROM hot UNION SELECT queue FROM cold
    UNION SELECT name FROM jobqueue.queues WHERE paused
    UNION SELECT queue FROM served
    UNION SELECT platform FROM jobqueue.rate_buckets
)
SELECT n.queue,
       coalesce(h.waiting, 0) AS waiting, coalesce(h.retrying, 0) AS retrying,
       coalesce(h.scheduled, 0) AS scheduled, coalesce(h.running, 0) AS running,
       coalesce(h.blocked, 0) AS blocked, coalesce(c.succeeded, 0) AS succeeded, coalesce(c.dead, 0) AS dead,
       coalesce(c.cancelled, 0) AS cancelled,
       h.oldest_waiting_seconds, coalesce(r.finished_last_minute, 0) AS finished_last_minute,
       coalesce(p.paused, false) AS paused, p.paused_at,
       CASE WHEN l.rate_limited THEN 0 ELSE coalesce(h.oldest_waiting_seconds, 0) END
           AS latency_seconds,
       l.rate_limited, coalesce(s.workers, 0) AS workers
FROM names n
CROSS JOIN LATERAL (SELECT jobqueue.queue_rate_limited(n.queue) AS rate_limited) AS l
LEFT JOIN served s ON s.queue = n.queue
LEFT JOIN hot h ON h.queue = n.queue
LEFT JOIN cold c ON c.queue = n.queue
LEFT JOIN recent r ON r.queue = n.queue
LEFT JOIN jobqueue.queues p ON p.name = n.queue
ORDER BY n.queue;


-- name: queue_pause
INSERT INTO jobqueue.queues (name, paused, paused_at) VALUES (%(name)s, %(paused)s,
    CASE WHEN %(paused)s THEN now() END)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, paused_at = excluded.paused_at;


-- name: purge_queue
-- Remove every job of a queue, hot and finished (jobqueue bench cleans up its scratch queue).
WITH hot AS (DELETE FROM jobqueue.jobs WHERE queue = %(queue)s RETURNING id),
     cold AS (DELETE FROM jobqueue.finished WHERE queue = %(queue)s RETURNING id),
     held AS (DELETE FROM jobqueue.blocked WHERE queue = %(queue)s RETURNING id)
SELECT (SELECT count(*) FROM hot) + (SELECT count(*) FROM cold)
           + (SELECT count(*) FROM held) AS deleted;


-- name: jobs_window
-- The dashboard's job list. Listing pages never scan an unbounded number of finished rows:
-- jobs_window finds an id window (the `scan` newest ids below the cursor, through the primary
-- keys only), and jobs_page filters inside it. A selective filter may fill less than a page
-- from one window; the "older" link then continues below the window.
-- The window: a merge of two backward primary-key scans (index-only on `finished` once
-- vacuumed), so it costs the same whatever the filter. `floor` is the lowest id in the
-- window; `scanned` < `scan` means the window reaches the oldest job.
-- (The condition stays outside the UNION ALL: inside each branch, Postgres 15 plans a sort
-- of every id instead of the merge.)
SELECT min(id) AS floor, count(*) AS scanned
FROM (
    SELECT id
    FROM (SELECT id FROM jobqueue.jobs UNION ALL SELECT id FROM jobqueue.finished) AS ids
    WHERE id < %(before)s
    ORDER BY id DESC
    LIMIT %(scan)s
) AS w;


-- name: jobs_page
-- One page of the job list, newest first, from both tables (jobqueue.all_jobs), inside the
-- window found above. Run unprepared, so dashboard_match's `NULL IS NULL OR ...` folds away.
-- Its columns are job_list_row's (sql/queries/job_list.sql), as jobs_page_sorted's.
-- include: job_list_row
FROM jobqueue.all_jobs j
WHERE j.id < %(before)s AND j.id >= %(floor)s
  AND jobqueue.dashboard_match(
      j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
      j.errors, NULL, NULL,
      %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
      %(state)s::text, %(text)s::text)
ORDER BY j.id DESC
LIMIT %(limit)s;


-- name: jobs_match_counts
-- What a bulk action on "everything matching this filter" would touch, by state, for the
-- confirmation page; `upto` (the newest matching id) bounds the action that follows, so jobs
-- arriving after the operator looked are left alone. Unlike the list this counts the whole
-- table: it runs only when an operator asks, under a statement timeout.
SELECT j.state, count(*) AS count, max(j.id) AS upto
FROM jobqueue.all_jobs j
WHERE jobqueue.dashboard_match(
    j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
    j.errors, %(ids)s::bigint[], %(upto)s::bigint,
    %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
    %(state)s::text, %(text)s::text)
GROUP BY j.state;


-- name: finished_per_minute
-- Jobs finished per minute by outcome, one row per minute (zeros included) from `since` (or
-- an hour ago; never earlier) to the current minute. Bounded by finished_at, which the BRIN
-- index turns into a scan of those minutes' blocks only. The dashboard keeps the complete
-- minutes it has read and asks only for newer ones: at a million jobs an hour, the whole hour
-- is a million rows to count, the current minute about 17,000.
WITH span AS (
    SELECT greatest(%(since)s::timestamptz,
                    date_trunc('minute', now()) - interval '59 minutes') AS since,
           date_trunc('minute', now()) AS current
)
SELECT m.minute,
       coalesce(f.succeeded, 0) AS succeeded, coalesce(f.dead, 0) AS dead,
       coalesce(f.cancelled, 0) AS cancelled
FROM span
CROSS JOIN generate_series(span.since, span.current, interval '1 minute') AS m(minute)
LEFT JOIN (
    SELECT date_trunc('minute', finished_at) AS minute,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state = 'dead') AS dead,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled
    FROM jobqueue.finished
    WHERE finished_at >= (SELECT since FROM span)
    GROUP BY 1
) AS f ON f.minute = m.minute
ORDER BY m.minute;


-- name: batch_jobs
-- One page of a batch's rows in input order (keyset pagination on `place`: pass the last
-- one seen as `after`), with the state every other surface reports (jobqueue.all_jobs).
-- A row that was a duplicate (0015) comes back as state 'duplicate' with `duplicate_of`,
-- the existing job, whose payload, result and last error it shows: the answer is there
-- already, or will be.
-- `queue` is the job's platform (a fan-out's export is broken down by it).
SELECT place, id, queue, state, duplicate_of, payload, metadata, result, attempts,
       last_error, finished_at
FROM (
    (SELECT id AS place, id, queue, state, NULL::bigint AS duplicate_of, payload, metadata,
            result, attempts, errors -> -1 AS last_error, finished_at
     FROM jobqueue.all_jobs
     WHERE batch_id = %(id)s AND id > %(after)s
     ORDER BY id LIMIT %(limit)s)
    UNION ALL
    (SELECT d.id, j.id, j.queue, 'duplicate', j.id, j.payload, j.metadata, j.result, j.attempts,
            j.errors -> -1, j.finished_at
     FROM jobqueue.batch_duplicates d
     JOIN jobqueue.all_jobs j ON j.id = d.job_id
     WHERE d.batch_id = %(id)s AND d.id > %(after)s
     ORDER BY d.id LIMIT %(limit)s)
) AS rows
ORDER BY place
LIMIT %(limit)s;


-- name: batch_platform_counts
-- A batch's jobs counted by platform (queue) and state: a fan-out's breakdown. Through the
-- batch indexes of both tables, as batches_page.
SELECT queue AS platform, state, count(*) AS count
FROM jobqueue.all_jobs
WHERE batch_id = %(id)s
GROUP BY queue, state
ORDER BY queue, state;


-- name: batches_page
-- A page of batches, newest first (or the one batch `only`), each with its jobs counted by
-- state through the batch indexes of the job tables (jobqueue.all_jobs), and its rows that
-- were duplicates of existing jobs (0015: done already, pointing at those jobs).
WITH page AS (
    SELECT id, name, queue, owner, total, source, created_at, metadata, completed_at,
           on_complete_job
    FROM jobqueue.batches
    WHERE id < %(before)s AND (%(only)s::bigint IS NULL OR id = %(only)s::bigint)
    ORDER BY id DESC
    LIMIT %(limit)s
)
SELECT p.id, p.name, p.queue, p.owner, p.total, p.source, p.created_at, p.metadata,
       p.completed_at, p.on_complete_job,
       c.blocked, c.waiting, c.retrying, c.scheduled, c.running, c.succeeded, c.dead,
       c.cancelled,
       (SELECT count(*) FROM jobqueue.batch_duplicates d WHERE d.batch_id = p.id)
           AS duplicates
FROM page p
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE state = 'blocked') AS blocked,
           count(*) FILTER (WHERE state = 'waiting') AS waiting,
           count(*) FILTER (WHERE state = 'retrying') AS retrying,
           count(*) FILTER (WHERE state = 'scheduled') AS scheduled,
           count(*) FILTER (WHERE state = 'running') AS running,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state = 'dead') AS dead,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled
    FROM jobqueue.all_jobs WHERE batch_id = p.id
) AS c
ORDER BY p.id DESC;


-- name: metrics_recent
-- Durations (started -> finished) and waits (run_at -> started) of jobs finished in the last
-- five minutes, per queue, bucketed for a histogram. The BRIN index bounds the scan.
SELECT queue, state,
       extract(epoch FROM finished_at - started_at)::float8 AS duration,
       extract(epoch FROM started_at - run_at)::float8 AS wait
FROM jobqueue.finished
WHERE finished_at > now() - interval '5 minutes' AND started_at IS NOT NULL
LIMIT 100000;


-- name: job_run_now
-- An operator runs a scheduled or retrying job now (the dashboard's "Run now"): due at once,
-- its attempts and errors untouched, and the workers of its queue woken. Only a job waiting
-- for its time (run_at ahead, no lease): a running or finished job is left alone. Recorded
-- with who asked by this statement (job_actions_noted), if the job was made due.
WITH due AS (
    UPDATE jobqueue.jobs SET run_at = now(),
        -- include: lane_due
    WHERE id = %(id)s AND lease_owner IS NULL AND run_at > now()
    RETURNING id, queue
),
acted AS (SELECT id FROM due),
-- include: job_actions_noted
SELECT id, pg_notify('jobqueue_insert', queue) IS NOT NULL AS woken FROM due;
