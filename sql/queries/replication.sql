-- Where a primary and its streaming replica stand in the WAL (web/replica.py), as byte
-- positions (pg_lsn minus 0/0): plain bigints that compare and subtract in Python.

-- name: wal_position
-- On the primary: the end of the WAL written so far. A commit that has returned lies at or
-- before it, so a replica that has replayed up to here shows everything committed by now.
SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS lsn;


-- name: replay_position
-- On the replica: how far it has replayed. NULL on a server that is not a standby (the read
-- URL may name the primary itself, for read-only connections only): it is never behind.
SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS lsn;
