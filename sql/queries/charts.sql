-- The dashboard's charts (web/dashboard_charts.py): finished jobs per time bucket, by outcome,
-- with their queue wait and the tokens and cost of LLM answers. Bounded by finished_at, which
-- the BRIN index turns into a scan of those buckets' blocks only.


-- name: chart_buckets
-- Per bucket of `step` seconds (aligned to the epoch) from `since` to now: jobs finished by
-- outcome, optionally of one queue and one kind; queue wait (run_at to start) summed and
-- counted, and the largest; tokens and cost reported in the results of LLM jobs.
SELECT to_timestamp(floor(extract(epoch FROM finished_at) / %(step)s) * %(step)s) AS bucket,
       count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE state = 'dead') AS dead,
       count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       coalesce(sum(greatest(0, extract(epoch FROM started_at - run_at)))
                    FILTER (WHERE started_at IS NOT NULL), 0)::float8 AS wait_sum,
       count(started_at) AS wait_n,
       coalesce(max(greatest(0, extract(epoch FROM started_at - run_at))), 0)::float8
           AS wait_max,
       coalesce(sum((result -> 'usage' ->> 'total_tokens')::bigint)
                    FILTER (WHERE jsonb_typeof(result -> 'usage' -> 'total_tokens') = 'number'),
                0)::bigint AS tokens,
       coalesce(sum((result ->> 'cost_usd')::numeric)
                    FILTER (WHERE jsonb_typeof(result -> 'cost_usd') = 'number'), 0)::float8
           AS cost_usd
FROM jobqueue.finished
WHERE finished_at >= %(since)s
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
GROUP BY 1
ORDER BY 1;


-- name: chart_groups
-- Jobs finished since `since` per queue or kind (`by`, one of two: a CASE, fixed text), with
-- the dead among them: the chart page's list of what it can be narrowed to.
SELECT CASE %(by)s WHEN 'kind' THEN kind ELSE queue END AS name,
       count(*) AS finished, count(*) FILTER (WHERE state = 'dead') AS dead
FROM jobqueue.finished
WHERE finished_at >= %(since)s
GROUP BY 1
ORDER BY 2 DESC, 1
LIMIT 50;


-- name: finished_removals
-- How many statements have removed rows from `finished` (0023): the chart cache's check.
SELECT last_value + CASE WHEN is_called THEN 1 ELSE 0 END AS removals
FROM jobqueue.finished_removals;
