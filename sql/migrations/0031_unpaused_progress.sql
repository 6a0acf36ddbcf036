-- 0031: one definition of "no longer paused over budget", for every way a job goes back to
-- the queue other than a pause (a retry, a rescue, a hand-back at shutdown or after a lost
-- claim reply, a manual retry of a finished job). The budget's marker (jobqueue/llm/spend.py:
-- {"paused": "over budget", ...}, 0029) is dropped; a handler's own progress stays.
-- A one-expression SQL function, IMMUTABLE and not STRICT: the planner inlines it.
CREATE FUNCTION jobqueue.unpaused(progress jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN progress ->> 'paused' = 'over budget' THEN progress - 'paused'
                ELSE progress END
$$;
