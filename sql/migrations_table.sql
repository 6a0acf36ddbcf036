-- The record of applied migrations. Run (idempotently) before any numbered file, under the
-- migration advisory lock; kept out of the numbered series because it records that series.
CREATE SCHEMA IF NOT EXISTS jobqueue;
CREATE TABLE IF NOT EXISTS jobqueue.migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
