-- Prometheus /metrics (web/metrics.py).

-- name: metrics_jobs
-- Jobs by queue and state for /metrics: the hot table counted, finished states from the
-- trigger-kept counts (never a scan of `finished`).
SELECT queue, state, count FROM (
    SELECT queue,
           CASE WHEN lease_owner IS NOT NULL THEN 'running'
                WHEN run_at > now() THEN 'scheduled' ELSE 'waiting' END AS state,
           count(*) AS count
    FROM jobqueue.jobs GROUP BY 1, 2
    UNION ALL
    SELECT queue, state, count FROM jobqueue.finished_counts
) AS t ORDER BY queue, state;


-- name: metrics_oldest
SELECT queue, extract(epoch FROM now() - min(run_at))::float8 AS seconds
FROM jobqueue.jobs WHERE lease_owner IS NULL AND run_at <= now()
GROUP BY queue;


-- name: metrics_recent
-- Durations (started -> finished) and waits (run_at -> started) of jobs finished in the last
-- five minutes, per queue, bucketed for a histogram. The BRIN index bounds the scan.
SELECT queue, state,
       extract(epoch FROM finished_at - started_at)::float8 AS duration,
       extract(epoch FROM started_at - run_at)::float8 AS wait
FROM jobqueue.finished
WHERE finished_at > now() - interval '5 minutes' AND started_at IS NOT NULL
LIMIT 100000;
