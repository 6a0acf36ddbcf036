-- 0005: the dashboard's job filter, defined once. Every dashboard query that lists, counts or
-- changes "the jobs matching a filter" calls this on a row of either job table. A NULL filter
-- value means "any"; `f_ids` restricts to selected jobs, `f_upto` to the jobs that existed
-- when the operator confirmed a bulk action; `f_text` is an ILIKE pattern (the caller escapes
-- % and _) matched against payload, metadata and errors as one text.
-- A one-expression SQL function, not STRICT: the planner inlines it, and since the dashboard
-- plans each query with its actual values, `NULL IS NULL OR ...` still folds away and the
-- indexes apply exactly as if the conditions were written out.
CREATE FUNCTION jobqueue.dashboard_match(
    id bigint, queue text, kind text, owner text, batch_id bigint, state text,
    payload jsonb, metadata jsonb, errors jsonb,
    f_ids bigint[], f_upto bigint, f_queue text, f_kind text, f_owner text,
    f_batch_id bigint, f_state text, f_text text
) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (f_ids IS NULL OR id = ANY(f_ids))
       AND (f_upto IS NULL OR id <= f_upto)
       AND (f_queue IS NULL OR queue = f_queue)
       AND (f_kind IS NULL OR kind = f_kind)
       AND (f_owner IS NULL OR owner = f_owner)
       AND (f_batch_id IS NULL OR batch_id = f_batch_id)
       AND (f_state IS NULL OR state = f_state)
       AND (f_text IS NULL
            OR (payload::text || E'\n' || metadata::text || E'\n' || errors::text) ILIKE f_text)
$$;
