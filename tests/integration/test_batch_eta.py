"""The limiter's budget as the batch ETA reads it (platform_budgets): requests per second of
a platform's usable keys, and whether it is rate limited now."""

from __future__ import annotations

from jobqueue.batches.eta import platform_budgets


def bucket(sql, platform, model, key, rpm, *, level=100.0, disabled=None, factor=1.0):
    sql("""INSERT INTO jobqueue.rate_buckets
           (platform, model, key_id, rpm_configured, tpm_configured, rpm, tpm, req_level,
            tok_level, disabled_reason, rate_factor)
           VALUES (%(p)s, %(m)s, %(k)s, %(rpm)s, 100000, %(rpm)s, 100000, %(level)s,
                   %(level)s, %(d)s, %(f)s)""",
        {"p": platform, "m": model, "k": key, "rpm": rpm, "level": level, "d": disabled,
         "f": factor})


def test_budget_sums_usable_keys_once_each(client, sql):
    """Two usable keys at 600 RPM (one with a fallback model too) and a disabled one: 20/s;
    a key slowed by 429s (AIMD pace 0.5) counts at half."""
    bucket(sql, "p", "main", "A:1", 600)
    bucket(sql, "p", "fallback", "A:1", 300)
    bucket(sql, "p", "main", "B:2", 600)
    bucket(sql, "p", "main", "C:3", 600, disabled="insufficient_quota")
    bucket(sql, "q", "main", "A:1", 600, factor=0.5)
    with client.pool.connection() as conn:
        found = platform_budgets(conn, ["p", "q", "none"])
    assert found["p"] == (False, 20.0)
    assert found["q"] == (False, 5.0)
    assert found["none"] == (False, None)


def test_limited_when_no_key_has_headroom(client, sql):
    bucket(sql, "p", "main", "A:1", 60, level=-50.0)
    with client.pool.connection() as conn:
        assert platform_budgets(conn, ["p"])["p"] == (True, 1.0)
