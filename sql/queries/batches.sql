-- Batches: creation. (A batch's jobs and their counts by state are read in jobs.sql.)

-- name: batch_create
INSERT INTO jobqueue.batches (name, queue, owner, source, metadata)
VALUES (%(name)s, %(queue)s, %(owner)s, %(source)s, %(metadata)s)
RETURNING id;


-- name: batch_set_total
UPDATE jobqueue.batches SET total = %(total)s WHERE id = %(id)s;


-- name: batch_owners
-- Whose batches these are (a budget's visibility and who may set it, web/costs.py): the
-- batch rows alone, by primary key, not the batch page's counts and costs.
SELECT id, owner FROM jobqueue.batches WHERE id = ANY(%(ids)s::bigint[]);
