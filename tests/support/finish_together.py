"""A process that claims its share of a queue, waits for the test's go (a shared advisory
lock the test holds exclusively), then finishes what it claimed in one completion statement:
several of them end a batch's last members at the same moment
(tests/integration/test_batch_workflows.py). Prints how many it claimed, then "done"."""

import sys
import uuid

import psycopg

from jobqueue.db.queries import q

GO = 4242


def main(url: str, queue: str, limit: int) -> None:
    worker = uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        claimed = conn.execute(q("claim"), {"queue": queue, "limit": limit, "worker": worker,
                                            "lease_seconds": 60}).fetchall()
        print(len(claimed), flush=True)
        conn.execute("SELECT pg_advisory_lock_shared(%s)", (GO,))
        ids = [r[0] for r in claimed]
        conn.execute(q("finish_jobs"), {
            "id": ids, "execution": [r[6] for r in claimed],
            "state": ["succeeded" if i % 3 else "dead" for i in ids],
            "result": ["{}" if i % 3 else None for i in ids],
            "error": [None if i % 3 else '{"type": "E"}' for i in ids], "worker": worker})
        print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
