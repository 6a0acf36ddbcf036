-- Uploaded documents and their extracted text (jobqueue/llm/documents.py, web/api.py).

-- name: document_insert
INSERT INTO jobqueue.documents (owner, filename, content_type, size, data)
VALUES (%(owner)s, %(filename)s, %(content_type)s, %(size)s, %(data)s)
RETURNING id;


-- name: document_set_job
UPDATE jobqueue.documents SET job_id = %(job_id)s WHERE id = %(id)s;


-- name: document_get
SELECT id, owner, filename, content_type, size, job_id, created_at,
       length(text) AS text_chars, length(data) > 0 AS original_kept
FROM jobqueue.documents WHERE id = %(id)s;


-- name: document_data
-- A retried job reuses the text an earlier attempt extracted (the bytes may be gone).
SELECT filename, content_type, data, text, owner FROM jobqueue.documents WHERE id = %(id)s;


-- name: document_set_text
-- The extracted text; the uploaded bytes are emptied unless they are to be kept
-- (JOBQUEUE_DOCUMENT_KEEP_ORIGINAL): `data` stays NOT NULL, an empty bytea says "dropped".
UPDATE jobqueue.documents
SET text = %(text)s, data = CASE WHEN %(keep_original)s THEN data ELSE ''::bytea END
WHERE id = %(id)s;


-- name: document_delete
-- Delete one document if the owner may see it (NULL: any); no row means not found.
DELETE FROM jobqueue.documents
WHERE id = %(id)s AND (%(owner)s::text IS NULL OR owner = %(owner)s)
RETURNING id;


-- name: prune_documents
-- A maintenance hook (registered by jobqueue/llm/documents.py): documents older than the
-- retention (JOBQUEUE_DOCUMENT_RETENTION_SECONDS) whose job has finished (a job still
-- waiting, scheduled or running is in jobqueue.jobs), a slice at a time, gated by the
-- maintenance leader's lock like the queue's own pruning.
DELETE FROM jobqueue.documents
WHERE id IN (SELECT d.id FROM jobqueue.documents d
             WHERE d.created_at < now() - make_interval(secs => %(retention_seconds)s)
               AND NOT EXISTS (SELECT 1 FROM jobqueue.jobs j WHERE j.id = d.job_id)
               AND pg_try_advisory_xact_lock(hashtext('jobqueue.maintenance'))
             LIMIT %(limit)s);
