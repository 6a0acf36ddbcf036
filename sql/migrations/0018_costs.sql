-- 0018: what LLM work costs, and budgets that pause it (issue 13.1).

-- The rollup of LLM spend: one row per UTC day, platform, model and scope (owner, batch,
-- campaign), added to after every provider call and every cache hit. Sums per batch, owner,
-- platform or day read a few rows instead of every job's result, and the job tables (the
-- claim's hot path) are not touched. '' and 0 stand for "none" so the key has no NULLs.
CREATE TABLE jobqueue.llm_spend (
    day               date    NOT NULL,
    platform          text    NOT NULL,
    model             text    NOT NULL,             -- the model asked for (the priced one)
    owner             text    NOT NULL DEFAULT '',
    batch_id          bigint  NOT NULL DEFAULT 0,
    campaign          text    NOT NULL DEFAULT '',  -- campaigns do not exist yet: always ''
    calls             bigint  NOT NULL DEFAULT 0,   -- answered provider calls
    fallback_calls    bigint  NOT NULL DEFAULT 0,   -- of those, answered by the fallback model
    prompt_tokens     bigint  NOT NULL DEFAULT 0,   -- as the provider counted them
    cached_tokens     bigint  NOT NULL DEFAULT 0,   -- of prompt_tokens, billed at cached price
    completion_tokens bigint  NOT NULL DEFAULT 0,
    cost_usd          numeric NOT NULL DEFAULT 0,   -- priced calls only
    unpriced_calls    bigint  NOT NULL DEFAULT 0,   -- calls of models with no price: cost unknown
    cache_hits        bigint  NOT NULL DEFAULT 0,   -- answers from the response cache (free)
    saved_tokens      bigint  NOT NULL DEFAULT 0,   -- what those hits would have cost
    saved_usd         numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (day, platform, model, owner, batch_id, campaign)
);
CREATE INDEX llm_spend_batch_idx ON jobqueue.llm_spend (batch_id) WHERE batch_id <> 0;
CREATE INDEX llm_spend_owner_idx ON jobqueue.llm_spend (owner, day) WHERE owner <> '';

-- Budgets: at most limit_usd per UTC day, calendar month or in total, for an owner, a batch
-- (scope_id = the batch id as text) or a campaign. What was spent is read from llm_spend, so
-- a budget set after spending starts counting from the right figure.
CREATE TABLE jobqueue.llm_budgets (
    scope      text        NOT NULL CHECK (scope IN ('owner', 'batch', 'campaign')),
    scope_id   text        NOT NULL CHECK (scope_id <> ''),
    period     text        NOT NULL CHECK (period IN ('day', 'month', 'total')),
    limit_usd  numeric     NOT NULL CHECK (limit_usd >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, scope_id, period)
);

-- Calls in flight under a budget: each reserved its estimated cost (an upper bound) before
-- it was sent, under a lock on the budget rows, and is deleted when the call settles. A
-- worker that dies leaves its row behind; expires_at (past the call's timeout) retires it.
CREATE TABLE jobqueue.llm_reservations (
    id         uuid        NOT NULL,
    scope      text        NOT NULL,
    scope_id   text        NOT NULL,
    amount_usd numeric     NOT NULL CHECK (amount_usd >= 0),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (scope, scope_id, id)
);
CREATE INDEX llm_reservations_id_idx ON jobqueue.llm_reservations (id);
