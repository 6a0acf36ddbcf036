-- What LLM work costs (the llm_spend rollup) and the budgets that hold it
-- (jobqueue/llm/spend.py writes; jobqueue/llm/costs.py reads and manages budgets).

-- name: spend_job_scope
-- The scope a job's calls are charged to. Finished jobs are looked up too: a user's own code
-- may call on behalf of a job id it was given.
-- A campaign's jobs (its answers and their extract calls) carry the campaign's name in
-- their metadata (jobqueue/campaigns/runs.py).
SELECT coalesce(owner, '') AS owner, coalesce(batch_id, 0) AS batch_id,
       coalesce(metadata ->> 'campaign', '') AS campaign
FROM jobqueue.jobs WHERE id = %(id)s
UNION ALL
SELECT coalesce(owner, ''), coalesce(batch_id, 0), coalesce(metadata ->> 'campaign', '')
FROM jobqueue.finished WHERE id = %(id)s
LIMIT 1;


-- name: spend_add
-- One call (or one cache hit) added to its day's row. The row is per scope and model, so a
-- burst of calls of one batch queues on one row lock for the microseconds of this upsert;
-- different batches and owners never wait on each other.
INSERT INTO jobqueue.llm_spend AS s
    (day, platform, model, owner, batch_id, campaign, calls, fallback_calls, prompt_tokens,
     cached_tokens, completion_tokens, cost_usd, unpriced_calls, cache_hits, saved_tokens,
     saved_usd)
VALUES ((now() AT TIME ZONE 'UTC')::date, %(platform)s, %(model)s, %(owner)s, %(batch_id)s,
        %(campaign)s, %(calls)s, %(fallback_calls)s, %(prompt_tokens)s, %(cached_tokens)s,
        %(completion_tokens)s, %(cost_usd)s, %(unpriced_calls)s, %(cache_hits)s,
        %(saved_tokens)s, %(saved_usd)s)
ON CONFLICT (day, platform, model, owner, batch_id, campaign) DO UPDATE SET
    calls = s.calls + excluded.calls,
    fallback_calls = s.fallback_calls + excluded.fallback_calls,
    prompt_tokens = s.prompt_tokens + excluded.prompt_tokens,
    cached_tokens = s.cached_tokens + excluded.cached_tokens,
    completion_tokens = s.completion_tokens + excluded.completion_tokens,
    cost_usd = s.cost_usd + excluded.cost_usd,
    unpriced_calls = s.unpriced_calls + excluded.unpriced_calls,
    cache_hits = s.cache_hits + excluded.cache_hits,
    saved_tokens = s.saved_tokens + excluded.saved_tokens,
    saved_usd = s.saved_usd + excluded.saved_usd;


-- name: budget_exists
-- Whether any budget is over the call's scopes (no lock: the fast path of calls without one).
SELECT EXISTS (
    SELECT 1 FROM jobqueue.llm_budgets
    WHERE (scope = 'owner' AND scope_id = %(owner)s)
       OR (scope = 'batch' AND scope_id = %(batch)s)
       OR (scope = 'campaign' AND scope_id = %(campaign)s));


-- name: budget_lock
-- Step 1 of a reservation: lock the budgets over the call's scopes, always in one order (so
-- two reservations over an owner and a batch cannot deadlock). No row: no budget applies and
-- the call goes ahead with no further statement. The check (step 2) is a separate statement
-- on purpose: under READ COMMITTED a statement that waited for these locks still reads the
-- snapshot from before it waited, and would miss the reservation it waited behind.
SELECT scope, scope_id, period FROM jobqueue.llm_budgets
WHERE (scope = 'owner' AND scope_id = %(owner)s)
   OR (scope = 'batch' AND scope_id = %(batch)s)
   OR (scope = 'campaign' AND scope_id = %(campaign)s)
ORDER BY scope, scope_id, period
FOR UPDATE;


-- name: budget_headroom
-- Step 2, under the locks: each budget over the scopes with what its period has spent (from
-- the rollup) and what calls in flight have reserved (unexpired reservations).
SELECT b.scope, b.scope_id, b.period, b.limit_usd,
       -- include: budget_spent
       (SELECT coalesce(sum(r.amount_usd), 0) FROM jobqueue.llm_reservations r
        WHERE r.scope = b.scope AND r.scope_id = b.scope_id
          AND r.expires_at > now()) AS reserved_usd
FROM jobqueue.llm_budgets b
WHERE (b.scope = 'owner' AND b.scope_id = %(owner)s)
   OR (b.scope = 'batch' AND b.scope_id = %(batch)s)
   OR (b.scope = 'campaign' AND b.scope_id = %(campaign)s)
ORDER BY b.scope, b.scope_id, b.period;


-- name: budget_reserve
-- Step 3, when every budget has room: one reservation row per scope (its periods share it),
-- living past the call's timeout so a dead worker's reservation lapses by itself. Expired
-- rows of these scopes are swept here, by the only writer that holds their budgets' locks.
WITH swept AS (
    DELETE FROM jobqueue.llm_reservations
    WHERE (scope, scope_id) IN (SELECT * FROM unnest(%(scopes)s::text[], %(scope_ids)s::text[]))
      AND expires_at <= now()
)
INSERT INTO jobqueue.llm_reservations (id, scope, scope_id, amount_usd, expires_at)
SELECT %(id)s, s, i, %(amount)s, now() + make_interval(secs => %(seconds)s)
FROM unnest(%(scopes)s::text[], %(scope_ids)s::text[]) AS t(s, i);


-- name: budget_release
-- A call settled (its cost is in llm_spend, written in the same transaction) or failed.
DELETE FROM jobqueue.llm_reservations WHERE id = %(id)s;


-- name: budget_set
-- Create or change a budget. Returns whether it existed before.
INSERT INTO jobqueue.llm_budgets AS b (scope, scope_id, period, limit_usd)
VALUES (%(scope)s, %(scope_id)s, %(period)s, %(limit_usd)s)
ON CONFLICT (scope, scope_id, period) DO UPDATE
SET limit_usd = excluded.limit_usd, updated_at = now()
RETURNING (xmax <> 0) AS existed;


-- name: budget_remove
DELETE FROM jobqueue.llm_budgets
WHERE scope = %(scope)s AND scope_id = %(scope_id)s
  AND (%(period)s::text IS NULL OR period = %(period)s)
RETURNING period;


-- name: budget_list
-- Every budget (or one scope's) with its period's spend so far, for people.
SELECT b.scope, b.scope_id, b.period, b.limit_usd,
       -- include: budget_spent
       b.created_at, b.updated_at
FROM jobqueue.llm_budgets b
WHERE (%(scope)s::text IS NULL OR b.scope = %(scope)s)
  AND (%(scope_id)s::text IS NULL OR b.scope_id = %(scope_id)s)
ORDER BY b.scope, b.scope_id, b.period;


-- name: spend_batch
-- A batch's figures: one row, zeros when nothing was spent.
SELECT coalesce(sum(calls), 0)::bigint AS calls,
       coalesce(sum(fallback_calls), 0)::bigint AS fallback_calls,
       coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(cached_tokens), 0)::bigint AS cached_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd,
       coalesce(sum(unpriced_calls), 0)::bigint AS unpriced_calls,
       coalesce(sum(cache_hits), 0)::bigint AS cache_hits,
       coalesce(sum(saved_tokens), 0)::bigint AS saved_tokens,
       coalesce(sum(saved_usd), 0) AS saved_usd
FROM jobqueue.llm_spend WHERE batch_id = %(batch_id)s;


-- name: spend_by
-- Sums grouped by one dimension (`by`: batch, owner, platform, model, day or campaign) over
-- the days from `since`, optionally for one owner. `by` is one of a fixed list (checked in
-- costs.py) and chooses a CASE branch: the SQL text never changes.
SELECT CASE %(by)s WHEN 'batch' THEN batch_id::text WHEN 'owner' THEN owner
                   WHEN 'platform' THEN platform WHEN 'model' THEN model
                   WHEN 'campaign' THEN campaign ELSE day::text END AS key,
       sum(calls)::bigint AS calls, sum(fallback_calls)::bigint AS fallback_calls,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(cached_tokens)::bigint AS cached_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(cost_usd) AS cost_usd,
       sum(unpriced_calls)::bigint AS unpriced_calls, sum(cache_hits)::bigint AS cache_hits,
       sum(saved_tokens)::bigint AS saved_tokens, sum(saved_usd) AS saved_usd
FROM jobqueue.llm_spend
WHERE day >= %(since)s AND (%(owner)s::text IS NULL OR owner = %(owner)s)
GROUP BY 1
ORDER BY 1 DESC
LIMIT %(limit)s;


-- name: spend_metrics
-- /metrics: totals per platform and model since the table began (counters).
SELECT platform, model, sum(calls)::bigint AS calls,
       sum(fallback_calls)::bigint AS fallback_calls,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(cached_tokens)::bigint AS cached_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       sum(cost_usd)::float8 AS cost_usd, sum(unpriced_calls)::bigint AS unpriced_calls,
       sum(cache_hits)::bigint AS cache_hits, sum(saved_usd)::float8 AS saved_usd
FROM jobqueue.llm_spend GROUP BY platform, model ORDER BY platform, model;


-- name: spend_batches
-- The figures of a page of batches (the dashboard's batches list), one row per batch that
-- spent anything.
SELECT batch_id, sum(calls)::bigint AS calls, sum(fallback_calls)::bigint AS fallback_calls,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens,
       sum(cost_usd)::float8 AS cost_usd, sum(unpriced_calls)::bigint AS unpriced_calls,
       sum(cache_hits)::bigint AS cache_hits
FROM jobqueue.llm_spend WHERE batch_id = ANY(%(ids)s::bigint[])
GROUP BY batch_id;


-- part: budget_spent
-- What a budget `b` (llm_budgets) has spent in its current period, from the daily rollup
-- (budget_headroom, budget_list): one definition of a budget's scope and period.
       (SELECT coalesce(sum(s.cost_usd), 0) FROM jobqueue.llm_spend s
        WHERE CASE b.scope WHEN 'owner' THEN s.owner = b.scope_id
                           WHEN 'batch' THEN s.batch_id::text = b.scope_id
                           ELSE s.campaign = b.scope_id END
          AND s.day >= CASE b.period
                WHEN 'day' THEN (now() AT TIME ZONE 'UTC')::date
                WHEN 'month' THEN date_trunc('month', now() AT TIME ZONE 'UTC')::date
                ELSE '-infinity'::date END) AS spent_usd,
