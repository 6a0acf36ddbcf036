-- Uploaded documents and their extracted text (jobqueue/llm/documents.py, web/api.py).

-- name: document_insert
INSERT INTO jobqueue.documents (owner, filename, content_type, size, data)
VALUES (%(owner)s, %(filename)s, %(content_type)s, %(size)s, %(data)s)
RETURNING id;


-- name: document_set_job
UPDATE jobqueue.documents SET job_id = %(job_id)s WHERE id = %(id)s;


-- name: document_get
SELECT id, owner, filename, content_type, size, job_id, created_at,
       length(text) AS text_chars
FROM jobqueue.documents WHERE id = %(id)s;


-- name: document_data
SELECT filename, content_type, data FROM jobqueue.documents WHERE id = %(id)s;


-- name: document_set_text
UPDATE jobqueue.documents SET text = %(text)s WHERE id = %(id)s;
