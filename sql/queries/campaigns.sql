-- AI-visibility campaigns (sql/migrations/0022_campaigns.sql). Run by
-- jobqueue/campaigns/store.py (definitions), extract.py (answers into the rollup) and
-- report.py (the report, from the rollup only).


-- name: campaign_upsert
-- Save a definition; `replace` false refuses to overwrite (no row back for an existing name),
-- and so does an existing row of an owner other than %(only_owner)s when one is given: the
-- owner test is in the statement, so a row another owner saves after the caller's check is
-- never taken over.
INSERT INTO jobqueue.campaigns AS c
    (name, owner, prompts, prompt_source, platforms, samples, brands, extract)
VALUES (%(name)s, %(owner)s, %(prompts)s, %(prompt_source)s, %(platforms)s, %(samples)s,
        %(brands)s, %(extract)s)
ON CONFLICT (name) DO UPDATE
SET owner = excluded.owner, prompts = excluded.prompts, prompt_source = excluded.prompt_source,
    platforms = excluded.platforms, samples = excluded.samples, brands = excluded.brands,
    extract = excluded.extract, updated_at = now()
WHERE %(replace)s AND (%(only_owner)s::text IS NULL OR c.owner = %(only_owner)s)
RETURNING id, (xmax = 0) AS created;


-- name: campaign_get
-- One campaign with its prompts, and its schedule's cron if it has one.
SELECT c.id, c.name, c.owner, c.prompts, c.prompt_source, c.platforms, c.samples, c.brands,
       c.extract, c.created_at, c.updated_at,
       s.cron, s.timezone, s.paused, s.next_fire_at
FROM jobqueue.campaigns c
LEFT JOIN jobqueue.schedules s ON s.name = 'campaign:' || c.name
WHERE (%(name)s::text IS NULL OR c.name = %(name)s)
  AND (%(id)s::bigint IS NULL OR c.id = %(id)s);


-- name: campaigns_list
-- Every campaign (of `owner`) without its prompts: how many, and its schedule.
SELECT c.id, c.name, c.owner, jsonb_array_length(c.prompts) AS prompts, c.platforms,
       c.samples, c.brands, c.extract, c.created_at, c.updated_at,
       s.cron, s.timezone, s.paused, s.next_fire_at
FROM jobqueue.campaigns c
LEFT JOIN jobqueue.schedules s ON s.name = 'campaign:' || c.name
WHERE (%(owner)s::text IS NULL OR c.owner = %(owner)s)
ORDER BY c.name
LIMIT %(limit)s;


-- name: campaign_remove
-- The campaign (of `owner`, when given) and (by cascade) its analysed answers and rollup;
-- its jobs and batches stay.
DELETE FROM jobqueue.campaigns
WHERE name = %(name)s AND (%(owner)s::text IS NULL OR owner = %(owner)s)
RETURNING id;


-- name: campaign_runs
-- A campaign's runs: the batches made for it, newest first (batches carry the campaign in
-- their metadata), with their totals.
SELECT b.id AS batch_id, b.name, b.total, b.created_at, b.completed_at,
       b.metadata ->> 'fire_at' AS fire_at, b.metadata ->> 'decision' AS decision
FROM jobqueue.batches b
WHERE b.metadata ->> 'campaign' = %(name)s
ORDER BY b.id DESC
LIMIT %(limit)s;


-- name: campaign_answer_source
-- What the extract job analyses: the answer job's platform (queue), result and UTC day it
-- was asked, and its campaign's brands. Only a succeeded answer has a result.
SELECT f.queue AS platform, f.result, f.state, (f.created_at AT TIME ZONE 'UTC')::date AS day,
       c.id AS campaign_id, c.name AS campaign, c.brands, c.extract
FROM jobqueue.finished f, jobqueue.campaigns c
WHERE f.id = %(job_id)s AND c.id = %(campaign_id)s;


-- name: campaign_answer_insert
-- The answer's row: none back when it was analysed already (a repeated extract job), and the
-- caller then adds nothing to the rollup.
INSERT INTO jobqueue.campaign_answers (job_id, campaign_id, platform, day, method)
VALUES (%(job_id)s, %(campaign_id)s, %(platform)s, %(day)s, %(method)s)
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id;


-- name: campaign_mentions_insert
INSERT INTO jobqueue.campaign_mentions (job_id, brand, mentioned, position, char_offset,
                                        sentiment)
SELECT %(job_id)s, * FROM unnest(%(brands)s::text[], %(mentioned)s::boolean[],
                                 %(positions)s::int[], %(offsets)s::int[],
                                 %(sentiments)s::real[]);


-- name: campaign_citations_insert
INSERT INTO jobqueue.campaign_citations (job_id, url, domain)
SELECT %(job_id)s, * FROM unnest(%(urls)s::text[], %(domains)s::text[])
ON CONFLICT DO NOTHING;


-- name: campaign_daily_add
-- One answer added to the rollup: a row per tracked brand (answers + 1 each; mentions,
-- position and sentiment for the brands it mentions). Rows are locked in brand order, so
-- two extract jobs of one day and platform never deadlock.
INSERT INTO jobqueue.campaign_daily AS d
    (campaign_id, day, platform, brand, answers, mentions, position_sum, sentiment_sum)
SELECT %(campaign_id)s, %(day)s, %(platform)s, t.brand, 1, t.mentioned::int,
       coalesce(t.position, 0), coalesce(t.sentiment, 0)
FROM unnest(%(brands)s::text[], %(mentioned)s::boolean[], %(positions)s::int[],
            %(sentiments)s::float8[]) AS t(brand, mentioned, position, sentiment)
ORDER BY t.brand
ON CONFLICT (campaign_id, day, platform, brand) DO UPDATE SET
    answers = d.answers + 1,
    mentions = d.mentions + excluded.mentions,
    position_sum = d.position_sum + excluded.position_sum,
    sentiment_sum = d.sentiment_sum + excluded.sentiment_sum;


-- name: campaign_domains_add
INSERT INTO jobqueue.campaign_domains_daily AS d (campaign_id, day, platform, domain, citations)
SELECT %(campaign_id)s, %(day)s, %(platform)s, t.domain, count(*)
FROM unnest(%(domains)s::text[]) AS t(domain)
GROUP BY t.domain
ORDER BY t.domain
ON CONFLICT (campaign_id, day, platform, domain) DO UPDATE SET
    citations = d.citations + excluded.citations;


-- name: campaign_report_daily
-- The report's rows: per day x platform x brand within [from, to], from the rollup only
-- (its primary key's range: a year of a dozen brands on three platforms is ~13,000 rows).
SELECT day, platform, brand, answers, mentions, position_sum, sentiment_sum
FROM jobqueue.campaign_daily
WHERE campaign_id = %(campaign_id)s AND day BETWEEN %(from)s AND %(to)s
ORDER BY day, platform, brand;


-- name: campaign_report_totals
-- Per platform x brand over a period (the previous period's figures for the change).
SELECT platform, brand, sum(answers)::bigint AS answers, sum(mentions)::bigint AS mentions,
       sum(position_sum)::bigint AS position_sum, sum(sentiment_sum) AS sentiment_sum
FROM jobqueue.campaign_daily
WHERE campaign_id = %(campaign_id)s AND day BETWEEN %(from)s AND %(to)s
GROUP BY platform, brand
ORDER BY platform, brand;


-- name: campaign_report_domains
-- Cited domains over a period per platform (a few rows per domain; report.py ranks them).
SELECT platform, domain, sum(citations)::bigint AS citations
FROM jobqueue.campaign_domains_daily
WHERE campaign_id = %(campaign_id)s AND day BETWEEN %(from)s AND %(to)s
GROUP BY platform, domain;


-- name: campaign_days
-- The first and last day with analysed answers (the report's default period).
SELECT min(day) AS first, max(day) AS last FROM jobqueue.campaign_daily
WHERE campaign_id = %(campaign_id)s;


-- name: campaign_spend
-- What the campaign's LLM calls cost (llm_spend's campaign scope), per platform.
SELECT platform, sum(calls)::bigint AS calls, sum(cost_usd) AS cost_usd,
       sum(prompt_tokens + completion_tokens)::bigint AS tokens
FROM jobqueue.llm_spend WHERE campaign = %(name)s
GROUP BY platform ORDER BY platform;
