-- The dashboard's job list beyond its default order (jobs_page in jobs.sql): sorted pages and
-- the count of matches. Both stay inside the id window jobs_window finds (the newest `scan`
-- ids), so they cost the same bounded scan whatever the table's size.


-- name: jobs_page_sorted
-- A page of the window's matching jobs in another order: `sort` is one of a fixed list
-- (checked in web/dashboard_jobs.py) choosing a CASE branch, `dir` 1 (ascending) or -1, so
-- the SQL text never changes; ties and NULLs (no wait yet, not run) go last, newest first.
-- A top-N sort over at most `scan` rows, paged by offset (bounded by the caller). The sort
-- carries ids and keys only; the page's columns (a prompt read out of the payload, ...) are
-- computed for its rows alone, looked up again by id.
WITH page AS MATERIALIZED (
    SELECT j.id,
           (CASE %(sort)s
                WHEN 'created' THEN extract(epoch FROM j.created_at)::float8
                WHEN 'wait' THEN jobqueue.queue_wait_seconds(j.state, j.run_at, j.started_at)
                WHEN 'run' THEN jobqueue.run_seconds(j.state, j.started_at, j.finished_at)
                WHEN 'runs_at' THEN extract(epoch FROM j.run_at)::float8
                WHEN 'priority' THEN j.priority::float8
                WHEN 'attempts' THEN j.attempts::float8
            END) * %(dir)s AS key
    FROM jobqueue.all_jobs j
    WHERE j.id >= %(floor)s
      AND jobqueue.dashboard_match(
          j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
          j.errors, NULL, NULL,
          %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
          %(state)s::text, %(text)s::text)
    ORDER BY key NULLS LAST, j.id DESC
    LIMIT %(limit)s OFFSET %(offset)s
)
-- include: job_list_row
FROM page p
JOIN jobqueue.all_jobs j ON j.id = p.id
ORDER BY p.key NULLS LAST, p.id DESC;


-- name: jobs_window_count
-- How many jobs in the window (ids >= `floor`) match the filter, counted no further than
-- `cap` (a filter matching most of the window stops early).
SELECT count(*) AS count FROM (
    SELECT 1
    FROM jobqueue.all_jobs j
    WHERE j.id >= %(floor)s
      AND jobqueue.dashboard_match(
          j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
          j.errors, NULL, NULL,
          %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
          %(state)s::text, %(text)s::text)
    LIMIT %(cap)s
) AS m;


-- name: jobs_batch_count
-- How many of a batch's jobs match the filter, counted through the batch indexes and no
-- further than `cap` (above it the list says "more than").
SELECT count(*) AS count FROM (
    SELECT 1
    FROM jobqueue.all_jobs j
    WHERE j.batch_id = %(batch_id)s
      AND jobqueue.dashboard_match(
          j.id, j.queue, j.kind, j.owner, j.batch_id, j.state, j.payload, j.metadata,
          j.errors, NULL, NULL,
          %(queue)s::text, %(kind)s::text, %(owner)s::text, %(batch_id)s::bigint,
          %(state)s::text, %(text)s::text)
    LIMIT %(cap)s
) AS m;


-- part: job_list_row
-- The columns of a row of the dashboard's job list (jobs_page here and in jobs.sql, unsorted):
-- queue wait is run_at to start (to now while it waits), run time start to finish (to now
-- while it runs).
SELECT j.id, j.queue, j.kind, j.state, j.attempts, j.max_attempts, j.owner, j.batch_id,
       j.created_at, j.finished_at, j.errors -> -1 ->> 'type' AS error_type,
       left(j.errors -> -1 ->> 'message', 200) AS error_message,
       left(j.payload::text, 200) AS preview,
       j.priority, j.run_at, j.started_at,
       left(jobqueue.prompt_preview(j.payload), 200) AS prompt,
       jobqueue.queue_wait_seconds(j.state, j.run_at, j.started_at) AS wait_seconds,
       jobqueue.run_seconds(j.state, j.started_at, j.finished_at) AS run_seconds
