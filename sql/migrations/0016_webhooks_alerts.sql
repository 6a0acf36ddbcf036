-- 0016: webhooks (subscriptions, deliveries, the fan-out of events into delivery jobs) and
-- alert thresholds per queue, evaluated by the maintenance leader.

-- A subscription: an owner's URL and the event types it wants. `owner` is the API token's
-- owner ('' for jobs enqueued without one). Alert events (alert.firing, alert.resolved) have
-- no owner and go to every subscription that names them: only admins may create those.
-- The secret signs each request (HMAC-SHA256). It is stored as given, not hashed: the server
-- needs the key itself to sign. It is shown once, at creation, and never returned after.
CREATE TABLE jobqueue.webhook_subscriptions (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner        text        NOT NULL DEFAULT '',
    url          text        NOT NULL CHECK (url ~ '^https?://'),
    events       text[]      NOT NULL CHECK (cardinality(events) > 0 AND events <@ ARRAY[
                     'job.succeeded', 'job.dead', 'batch.completed', 'schedule.failed',
                     'alert.firing', 'alert.resolved']),
    secret       text        NOT NULL,
    format       text        NOT NULL DEFAULT 'json' CHECK (format IN ('json', 'slack')),
    max_attempts integer     NOT NULL DEFAULT 10 CHECK (max_attempts BETWEEN 1 AND 50),
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_subscriptions_owner_idx ON jobqueue.webhook_subscriptions (owner);

-- One event sent to one subscription: the body is fixed when the event happens (a redelivery
-- sends the same body and event id), the rest is the delivery's latest news. Its job on the
-- `webhooks` queue has the id drawn here (job_id), so the row can name it before it exists;
-- a redelivery draws a new one.
CREATE TABLE jobqueue.webhook_deliveries (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id  bigint      NOT NULL
                     REFERENCES jobqueue.webhook_subscriptions (id) ON DELETE CASCADE,
    event_id         text        NOT NULL,  -- the receiver's idempotency key
    event_type       text        NOT NULL,
    body             jsonb       NOT NULL,  -- {"id", "type", "created_at", "data"}
    state            text        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'retrying', 'succeeded', 'dead')),
    attempts         integer     NOT NULL DEFAULT 0,   -- requests made, redeliveries included
    response_code    integer,                          -- of the latest attempt (NULL: none)
    last_error       text,
    job_id           bigint      NOT NULL DEFAULT nextval('jobqueue.job_id_seq'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- An event reaches a subscription once, however many paths report it (two finishers of
    -- a batch's last jobs, a fan-out repeated after a lost reply).
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX webhook_deliveries_recent_idx ON jobqueue.webhook_deliveries (created_at);

-- Send events to the subscriptions that want them: one delivery row and one job on the
-- `webhooks` queue each (the job's payload names the delivery; the worker's built-in
-- `webhook.deliver` task sends it). Arrays in, so one call serves a whole finish statement.
-- An event whose owner is NULL (alerts) goes to every subscription naming its type. Returns
-- the deliveries made. Callable by anyone's SQL: jobqueue.webhooks.emit() wraps it.
CREATE FUNCTION jobqueue.webhook_fan_out(
    event_ids text[], event_types text[], owners text[], data jsonb[]
) RETURNS integer LANGUAGE sql VOLATILE AS $$
    WITH events AS (
        SELECT * FROM unnest(event_ids, event_types, owners, data) AS e(id, type, owner, data)
    ),
    delivered AS (
        INSERT INTO jobqueue.webhook_deliveries (subscription_id, event_id, event_type, body)
        SELECT s.id, e.id, e.type, jsonb_build_object(
                   'id', e.id, 'type', e.type, 'created_at', now(), 'data', e.data)
        FROM events e
        JOIN jobqueue.webhook_subscriptions s
          ON e.type = ANY(s.events) AND (e.owner IS NULL OR s.owner = e.owner)
        ORDER BY s.id, e.id
        ON CONFLICT (subscription_id, event_id) DO NOTHING
        RETURNING id, subscription_id, job_id
    ),
    queued AS (
        INSERT INTO jobqueue.jobs (id, queue, kind, payload, max_attempts)
        SELECT d.job_id, 'webhooks', 'webhook.deliver', jsonb_build_object('delivery_id', d.id),
               s.max_attempts
        FROM delivered d JOIN jobqueue.webhook_subscriptions s ON s.id = d.subscription_id
        RETURNING id
    )
    SELECT count(*)::integer FROM queued
$$;

-- Which of these batches have just completed: none of their jobs is left in the hot table.
-- The batch rows are locked first (in id order: no deadlock between finishers), and each
-- statement of a VOLATILE function takes a fresh snapshot, so when the last jobs of a batch
-- finish at once in two transactions, the second to take the lock sees the first's jobs gone
-- and reports the batch: one of them always does. (Both may, when the first committed
-- between the other's delete and its lock; webhook_fan_out's unique event id keeps that to
-- one delivery.) The one definition of "a batch completed" for the completion path.
CREATE FUNCTION jobqueue.batches_completed(batch_ids bigint[])
RETURNS SETOF bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM jobqueue.batches WHERE id = ANY(batch_ids) ORDER BY id FOR UPDATE;
    RETURN QUERY
        SELECT b.id FROM jobqueue.batches b
        WHERE b.id = ANY(batch_ids)
          AND NOT EXISTS (SELECT 1 FROM jobqueue.jobs j WHERE j.batch_id = b.id);
END;
$$;

-- job.succeeded, job.dead and batch.completed arise here, when jobs arrive in `finished`
-- (the worker's finish_jobs, the rescuer's dead letters, cancellations). A statement-level
-- trigger over the rows the statement moved, like finished_count_inserted: when nobody
-- subscribes it costs one probe of an empty table per statement (~1,000 jobs); otherwise the
-- subscribing owners are hashed once per statement and only their jobs are joined further.
-- The delivery jobs themselves never raise events (a dead delivery would otherwise feed
-- itself).
CREATE FUNCTION jobqueue.webhook_job_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM jobqueue.webhook_subscriptions) THEN
        RETURN NULL;
    END IF;
    -- Webhooks never cost a job its outcome: should queueing the events fail, the outcome
    -- batch still commits, without them, and the Postgres log says why. (A subtransaction,
    -- entered only when subscriptions exist; a cancelled statement is not caught.)
    BEGIN
        PERFORM jobqueue.webhook_fan_out(
            array_agg('job.' || c.state || ':' || c.id || ':'
                      || coalesce(c.execution_id::text, '')),
            array_agg('job.' || c.state), array_agg(coalesce(c.owner, '')),
            array_agg(jsonb_build_object('job', jsonb_build_object(
                'id', c.id, 'queue', c.queue, 'kind', c.kind, 'state', c.state,
                'attempts', c.attempts, 'owner', c.owner, 'batch_id', c.batch_id,
                'metadata', c.metadata, 'finished_at', c.finished_at,
                -- a large result is left out (fetch it from GET /api/jobs/<id>)
                'result', CASE WHEN pg_column_size(c.result) <= 65536 THEN c.result END,
                'result_omitted', pg_column_size(c.result) > 65536,
                'error', (c.errors -> -1) - 'traceback'))))
        FROM changed c
        WHERE c.state IN ('succeeded', 'dead') AND c.kind <> 'webhook.deliver'
          -- a hashed semi-join: subscribing owners are read once per statement, not per row
          AND coalesce(c.owner, '') IN (SELECT s.owner FROM jobqueue.webhook_subscriptions s
                                        WHERE s.events && ARRAY['job.succeeded', 'job.dead'])
        HAVING count(*) > 0;
        PERFORM jobqueue.webhook_fan_out(
            array_agg('batch.completed:' || b.id), array_agg('batch.completed'::text),
            array_agg(coalesce(b.owner, '')),
            array_agg(jsonb_build_object('batch', jsonb_build_object(
                'id', b.id, 'name', b.name, 'queue', b.queue, 'owner', b.owner,
                'total', b.total,
                'counts', (SELECT jsonb_object_agg(state, n) FROM (
                    SELECT state, count(*) AS n FROM jobqueue.all_jobs
                    WHERE batch_id = b.id GROUP BY state) AS counted)))))
        FROM jobqueue.batches b
        WHERE b.id IN (SELECT jobqueue.batches_completed(array_agg(DISTINCT c.batch_id))
                       FROM changed c
                       WHERE c.batch_id IS NOT NULL
                         AND coalesce(c.owner, '') IN (
                             SELECT s.owner FROM jobqueue.webhook_subscriptions s
                             WHERE 'batch.completed' = ANY(s.events))
                       HAVING count(*) > 0)
        HAVING count(*) > 0;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'jobqueue: webhook events not queued: % (%)', SQLERRM, SQLSTATE;
    END;
    RETURN NULL;
END;
$$;

CREATE TRIGGER finished_webhook_events
    AFTER INSERT ON jobqueue.finished
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION jobqueue.webhook_job_events();

-- Alert thresholds per queue and metric, and whether each is firing. The maintenance leader
-- evaluates them (alert_evaluate in sql/queries/alerts.sql): crossing the threshold sends one
-- alert.firing event, falling back under it one alert.resolved; nothing in between.
--   depth    runnable jobs waiting (jobqueue.job_state's 'waiting')
--   latency  seconds the oldest runnable job has waited
--   dead     dead jobs of the queue not yet retried, purged or pruned
CREATE TABLE jobqueue.alert_rules (
    queue        text        NOT NULL,
    metric       text        NOT NULL CHECK (metric IN ('depth', 'latency', 'dead')),
    threshold    float8      NOT NULL CHECK (threshold >= 0),
    firing_since timestamptz,           -- NULL: not firing
    last_value   float8,
    evaluated_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, metric)
);
