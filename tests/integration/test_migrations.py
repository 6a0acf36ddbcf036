"""Migrations: applied in order, once, safely in parallel; equal to sql/schema.sql."""

from __future__ import annotations

import threading

import psycopg

from jobqueue import db
from jobqueue.db import migrate
from jobqueue.db.queries import sql_dir

SNAPSHOT = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = 'jobqueue'
          AND table_name <> 'migrations'
        ORDER BY table_name, ordinal_position""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'jobqueue' AND tablename <> 'migrations' ORDER BY indexname""",
    "constraints": """
        SELECT c.conrelid::regclass::text AS tbl, pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = 'jobqueue' AND c.conrelid::regclass::text <> 'jobqueue.migrations'
        ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'jobqueue' ORDER BY 1""",
    "triggers": """
        SELECT tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'jobqueue' AND NOT t.tgisinternal ORDER BY 1""",
    "sequences": """
        SELECT sequencename, data_type, increment_by FROM pg_sequences
        WHERE schemaname = 'jobqueue' ORDER BY 1""",
}


def snapshot(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query).fetchall() for name, query in SNAPSHOT.items()}


class TestMigrate:
    def test_applies_every_file_once_and_records_it(self, empty_db_url):
        """A first run applies all numbered files; a second finds nothing to do."""
        with db.connect(empty_db_url) as conn:
            first = migrate.migrate(conn)
            second = migrate.migrate(conn)
            recorded = conn.execute("SELECT version FROM jobqueue.migrations").fetchall()
        assert [m.version for m in first] == [m.version for m in migrate.available()]
        assert first and second == []
        assert sorted(r["version"] for r in recorded) == [m.version for m in first]

    def test_concurrent_runs_are_safe(self, empty_db_url):
        """Four migrate calls at once: every one succeeds and each file is applied once."""
        results, errors = [], []

        def run():
            try:
                with db.connect(empty_db_url) as conn:
                    results.append(migrate.migrate(conn))
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        applied = [m.version for ran in results for m in ran]
        assert sorted(applied) == [m.version for m in migrate.available()]

    def test_migrations_build_what_schema_sql_describes(self, empty_db_url, db_url):
        """The catalog built by the migrations equals the one built from sql/schema.sql."""
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            conn.execute((sql_dir() / "schema.sql").read_text())
        from_schema, from_migrations = snapshot(empty_db_url), snapshot(db_url)
        assert from_migrations["columns"], "the snapshot query found no tables"
        for part in SNAPSHOT:
            assert from_schema[part] == from_migrations[part], f"{part} differ"
