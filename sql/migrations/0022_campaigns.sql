-- 0022: AI-visibility campaigns (issue 14.2): a prompt set asked on several platforms, the
-- brands to look for in the answers, what each answer said about them, and the daily rollup
-- the report reads (so a report never scans answers).

-- A campaign: its prompts (stored rows, in chat form, so a run needs no file), platforms,
-- samples per (prompt, platform), brands (each with aliases; competitors too) and how its
-- answers are analysed. A scheduled campaign has a schedule named `campaign:NAME` whose
-- target is {"type": "campaign", "campaign": NAME} (jobqueue/schedules/tick.py).
CREATE TABLE jobqueue.campaigns (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text        NOT NULL UNIQUE,
    owner         text,
    -- [{"messages": [...], "metadata": {...}}], checked like a batch file's rows
    prompts       jsonb       NOT NULL,
    prompt_source text,       -- the prompt file they were read from, if any
    platforms     text[]      NOT NULL CHECK (cardinality(platforms) > 0),
    samples       integer     NOT NULL DEFAULT 1 CHECK (samples BETWEEN 1 AND 100),
    -- [{"name", "aliases": [...], "competitor": bool}]: what the extract step looks for
    brands        jsonb       NOT NULL,
    -- {"platform": NAME} to analyse answers with an LLM call (JSON schema, validated; the
    -- deterministic pass is the fallback); {} for the deterministic pass alone
    extract       jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per analysed answer: written by the extract job in the transaction that adds the
-- answer to the rollup. The primary key on the answer's job id makes a second run of the
-- same extract job (at-least-once execution) add nothing.
CREATE TABLE jobqueue.campaign_answers (
    job_id      bigint      PRIMARY KEY,      -- the chat job that answered
    campaign_id bigint      NOT NULL REFERENCES jobqueue.campaigns (id) ON DELETE CASCADE,
    platform    text        NOT NULL,
    day         date        NOT NULL,         -- UTC day the campaign run asked the question
    method      text        NOT NULL CHECK (method IN ('rules', 'llm')),
    extracted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaign_answers_campaign_idx ON jobqueue.campaign_answers (campaign_id, day);

-- One row per answer x tracked brand: whether it was mentioned, its rank among the tracked
-- brands in order of first mention (1 = first), where (characters into the answer), and
-- the sentiment of the sentences mentioning it (-1..1, a lexicon pass or the LLM's).
CREATE TABLE jobqueue.campaign_mentions (
    job_id      bigint  NOT NULL REFERENCES jobqueue.campaign_answers (job_id) ON DELETE CASCADE,
    brand       text    NOT NULL,
    mentioned   boolean NOT NULL,
    position    integer CHECK (position > 0),   -- NULL when not mentioned
    char_offset integer,
    sentiment   real    CHECK (sentiment BETWEEN -1 AND 1),
    PRIMARY KEY (job_id, brand)
);

-- The URLs an answer cited, with their domain.
CREATE TABLE jobqueue.campaign_citations (
    job_id bigint NOT NULL REFERENCES jobqueue.campaign_answers (job_id) ON DELETE CASCADE,
    url    text   NOT NULL,
    domain text   NOT NULL,
    PRIMARY KEY (job_id, url)
);

-- The report's source: per campaign x UTC day x platform x brand, sums added in the extract
-- transaction. `answers` counts every analysed answer of that day and platform (the same in
-- each brand's row), so visibility = mentions / answers and share of voice = mentions /
-- sum(mentions) over the brands, for any period, from a few rows.
CREATE TABLE jobqueue.campaign_daily (
    campaign_id     bigint  NOT NULL REFERENCES jobqueue.campaigns (id) ON DELETE CASCADE,
    day             date    NOT NULL,
    platform        text    NOT NULL,
    brand           text    NOT NULL,
    answers         bigint  NOT NULL DEFAULT 0,
    mentions        bigint  NOT NULL DEFAULT 0,
    position_sum    bigint  NOT NULL DEFAULT 0,   -- over the answers that mention it
    sentiment_sum   float8  NOT NULL DEFAULT 0,   -- likewise
    PRIMARY KEY (campaign_id, day, platform, brand)
);

-- Cited domains per campaign x day x platform (top cited domains without the answers).
CREATE TABLE jobqueue.campaign_domains_daily (
    campaign_id bigint NOT NULL REFERENCES jobqueue.campaigns (id) ON DELETE CASCADE,
    day         date   NOT NULL,
    platform    text   NOT NULL,
    domain      text   NOT NULL,
    citations   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, day, platform, domain)
);
