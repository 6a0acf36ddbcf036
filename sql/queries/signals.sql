-- Database-wide signals for /metrics and `jobqueue status` (web/metrics.py): connections by
-- client, and what holds back vacuum. Per-queue signals are in queue_status (jobs.sql).

-- name: db_connections
-- Connections to this database by application_name and state (worker processes name theirs
-- "jobqueue-worker", the rest of jobqueue "jobqueue"). Without superuser or pg_read_all_stats
-- the rows of other roles' sessions show with a NULL state: counted as 'unknown'.
-- Behind PgBouncer these are the pooler's server connections; the workers' own counts are in
-- jobqueue.workers.connections.
SELECT coalesce(nullif(application_name, ''), 'unnamed') AS application_name,
       coalesce(state, 'unknown') AS state, count(*) AS count
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
GROUP BY 1, 2 ORDER BY 1, 2;


-- name: db_vacuum_horizon
-- What keeps vacuum from removing dead rows (the hot jobs table churns: a long transaction
-- anywhere in the cluster lets it bloat): the age of the oldest open transaction in seconds,
-- and the oldest xmin horizon in transactions, from sessions, replication slots and prepared
-- transactions. This statement's own snapshot is a few microseconds old.
SELECT coalesce((SELECT max(extract(epoch FROM now() - xact_start))
                 FROM pg_stat_activity
                 WHERE backend_xid IS NOT NULL OR backend_xmin IS NOT NULL), 0)::float8
           AS oldest_transaction_seconds,
       greatest((SELECT max(age(backend_xmin)) FROM pg_stat_activity),
                (SELECT max(age(xmin)) FROM pg_replication_slots),
                (SELECT max(age(catalog_xmin)) FROM pg_replication_slots),
                (SELECT max(age(transaction)) FROM pg_prepared_xacts), 0)::bigint
           AS oldest_xmin_age;
