-- A batch's progress for its dashboard page (jobqueue/batches/progress.py): how fast its jobs
-- finish (read by jobqueue/batches/eta.py, whose ETA `batch wait` shares), and its answers.
-- Every query goes through the batch indexes of the job tables (jobs_batch_idx,
-- finished_batch_id_idx, blocked_batch_idx), so it reads the batch's rows only, never the
-- whole table.


-- name: batch_finished_history
-- The batch's jobs finished in the last `seconds`, per platform (queue) and step of `step`
-- seconds counted back from now (0: the newest), for the ETA of the batch page and `batch
-- wait` (jobqueue/batches/eta.py, `recent`). Finished rows only (a hot job has not finished);
-- the batch index bounds the scan to the batch's rows.
SELECT queue AS platform,
       floor(extract(epoch FROM now() - finished_at) / %(step)s)::int AS ago,
       count(*)::int AS finished
FROM jobqueue.finished
WHERE batch_id = %(batch_id)s
  AND finished_at >= now() - make_interval(secs => %(seconds)s)
GROUP BY 1, 2;


-- name: batch_answers
-- One page of a batch's answers in id order after `after`, optionally only those whose
-- payload or result contains `text` (an ILIKE pattern; the caller escapes its wildcards). At
-- most `scan` of the batch's jobs are examined per page (the window: its ids after `after`,
-- in order, through the batch indexes), so a search over a large batch stays bounded;
-- `window_end` is the last id examined and `scanned` how many, for the next page's cursor.
-- Each job of the window is then read by its id (LATERAL: a primary-key lookup per table),
-- never by a range of ids, which would walk other batches' rows too.
WITH w AS MATERIALIZED (
    SELECT id FROM (
        (SELECT id FROM jobqueue.jobs WHERE batch_id = %(batch_id)s AND id > %(after)s
         ORDER BY id LIMIT %(scan)s)
        UNION ALL
        (SELECT id FROM jobqueue.finished WHERE batch_id = %(batch_id)s AND id > %(after)s
         ORDER BY id LIMIT %(scan)s)
        UNION ALL
        (SELECT id FROM jobqueue.blocked WHERE batch_id = %(batch_id)s AND id > %(after)s
         ORDER BY id LIMIT %(scan)s)
    ) AS ids
    ORDER BY id LIMIT %(scan)s
),
bounds AS (SELECT max(id) AS window_end, count(*) AS scanned FROM w),
page AS (
    SELECT j.id, j.queue, j.state, j.payload, j.result, j.attempts,
           j.errors -> -1 AS last_error
    FROM w
    -- OFFSET 0 keeps the subquery a lookup per id: flattened, the planner merges the
    -- window with a walk of the whole primary key.
    CROSS JOIN LATERAL (SELECT * FROM jobqueue.all_jobs a WHERE a.id = w.id OFFSET 0) AS j
    WHERE %(text)s::text IS NULL OR j.payload::text ILIKE %(text)s
          OR j.result::text ILIKE %(text)s
    ORDER BY w.id
    LIMIT %(limit)s
)
SELECT b.window_end, b.scanned, p.*
FROM bounds b
LEFT JOIN page p ON true
ORDER BY p.id;
