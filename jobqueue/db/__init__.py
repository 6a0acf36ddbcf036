"""Everything that talks to Postgres: connections (connect), named SQL (queries), the schema
(migrate), the embedded server (embedded) and every job state transition (store).

The names re-exported here are the connection helpers most modules need.
"""

from jobqueue.db.connect import (
    WORKER_APPLICATION_NAME,
    behind_pgbouncer,
    connect,
    connect_async,
    connect_kwargs,
    database_url,
    describe,
    int_array,
    listen_url,
    redact,
    text_array,
    word_array,
)

__all__ = ["WORKER_APPLICATION_NAME", "behind_pgbouncer", "connect", "connect_async",
           "connect_kwargs", "database_url", "describe", "int_array", "listen_url",
           "redact", "text_array", "word_array"]
