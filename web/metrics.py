"""Prometheus metrics, read from Postgres at scrape time.

Workers are many processes on many hosts; the database is the one place that knows the whole
picture, so every web process reports the same numbers. Names follow one prefix (jobqueue_),
base units and _total on counters, with no job ids in labels (worker processes are labelled by
host and pid: as many series as processes).

Every per-queue series exists for every known queue, at 0 when there is nothing to count, so
alerts ("no live worker", "latency over N s") and autoscalers see a 0, never a missing series.
deploy/prometheus-alerts.yaml uses these names (tests/system/test_deploy.py checks them).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from jobqueue.db import store
from jobqueue.db.queries import q
from jobqueue.jobs import FINISHED_STATES
from jobqueue.llm import costs
from jobqueue.llm.ratelimit import key_state

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


STATES = ("blocked", "waiting", "scheduled", "retrying", "running", "succeeded", "dead",
          "cancelled")


class _Collector:
    def __init__(self, client, held: int, pools: dict | None = None,
                 replica_lag: float | None = None):
        self.client, self.held = client, held  # client: the reader (a replica, if any)
        self.pools = pools or {"primary": client}
        self.replica_lag = replica_lag

    def collect(self):
        with self.client.pool.connection() as conn:
            found = store.metrics(conn)
            queues, recent = found["queues"], found["recent"]
            limits = conn.execute(q("rate_state"), {"platform": None}).fetchall()
            cache = conn.execute(q("cache_stats")).fetchone()
            workers = conn.execute(q("list_workers")).fetchall()
            connections = conn.execute(q("db_connections")).fetchall()
            horizon = conn.execute(q("db_vacuum_horizon")).fetchone()
            spend = costs.metrics(conn)

        # Every series per queue is present for every known queue (queue_status's rows),
        # at 0 where there is nothing: an alert on "no worker" or a KEDA trigger must see a
        # 0, not a missing series.
        names = [r["queue"] for r in queues]
        by_state = (
            (GaugeMetricFamily("jobqueue_jobs", "Jobs by queue and state (finished ones until "
                               "pruned).", labels=["queue", "state"]), STATES),
            (CounterMetricFamily("jobqueue_jobs_finished", "Jobs finished, by outcome "
                                 "(retained rows).", labels=["queue", "outcome"]),
             FINISHED_STATES),
        )
        for family, states in by_state:
            for r in queues:
                for state in states:
                    family.add_metric([r["queue"], state], r[state])
            yield family
        per_queue = (
            ("jobqueue_queue_depth", "Jobs that need a worker now: waiting plus running "
             "(jobqueue.queue_depth(name), the KEDA query).",
             lambda r: r["waiting"] + r["running"]),
            ("jobqueue_oldest_waiting_seconds", "Age of the oldest runnable job per queue.",
             lambda r: r["oldest_waiting_seconds"] or 0),
            ("jobqueue_queue_latency_seconds", "Age of the oldest job waiting for a worker; 0 "
             "while the queue's provider has no headroom (its jobs wait for the rate limit).",
             lambda r: r["latency_seconds"]),
            ("jobqueue_queue_rate_limited", "1 while no key of the queue's platform can start "
             "a request.", lambda r: int(bool(r["rate_limited"]))),
            ("jobqueue_queue_finished_last_minute", "Jobs of the queue finished in the last "
             "minute (throughput).", lambda r: r["finished_last_minute"]),
            ("jobqueue_queue_paused", "1 while the queue is paused.",
             lambda r: int(bool(r["paused"]))),
            ("jobqueue_workers", "Live worker processes (heartbeat in the last minute) serving "
             "the queue.", lambda r: r["workers"]),
        )
        for name, text, value in per_queue:
            g = GaugeMetricFamily(name, text, labels=["queue"])
            for r in queues:
                g.add_metric([r["queue"]], value(r))
            yield g
        for name, column, text in (
                ("jobqueue_job_duration_seconds", "duration", "Run time of jobs finished in "
                 "the last 5 minutes."),
                ("jobqueue_job_wait_seconds", "wait", "Wait from run_at to start of jobs "
                 "finished in the last 5 minutes.")):
            h = HistogramMetricFamily(name, text, labels=["queue"])
            for queue in sorted({r["queue"] for r in recent}):
                values = [r[column] for r in recent if r["queue"] == queue]
                counts, total = [], 0
                for bound in BUCKETS:
                    counts.append((str(bound), sum(1 for v in values if v <= bound)))
                counts.append(("+Inf", len(values)))
                total = sum(values)
                h.add_metric([queue], counts, total)
            yield h
        g = GaugeMetricFamily("jobqueue_worker_jobs_in_flight", "Jobs in flight by queue "
                              "(a process serving several queues counts under each).",
                              labels=["queue"])
        flight = dict.fromkeys(names, 0)
        for w in workers:
            for queue in w["queue"].split(","):
                flight[queue] = flight.get(queue, 0) + w["in_flight"]
        for queue, n in flight.items():
            g.add_metric([queue], n)
        yield g
        g = GaugeMetricFamily("jobqueue_worker_connections", "Postgres connections each "
                              "worker process holds, as it reports them with its heartbeat.",
                              labels=["host", "pid", "queues"])
        for w in workers:
            g.add_metric([w["host"], str(w["pid"]), w["queue"]], w["connections"])
        yield g
        g = GaugeMetricFamily("jobqueue_db_connections", "Connections to this database by "
                              "application_name and state (pg_stat_activity).",
                              labels=["application_name", "state"])
        for r in connections:
            g.add_metric([r["application_name"], r["state"]], r["count"])
        yield g
        yield GaugeMetricFamily("jobqueue_db_oldest_transaction_seconds", "Age of the oldest "
                                "open transaction in the cluster (it holds back vacuum).",
                                value=horizon["oldest_transaction_seconds"])
        yield GaugeMetricFamily("jobqueue_db_oldest_xmin_age", "Transactions behind the "
                                "oldest xmin horizon (sessions, replication slots, prepared "
                                "transactions): what vacuum cannot clean past.",
                                value=horizon["oldest_xmin_age"])
        labels = ["platform", "model", "key"]
        req = CounterMetricFamily("jobqueue_llm_requests", "LLM calls by platform, model, key "
                                  "and status.", labels=[*labels, "status"])
        tok = CounterMetricFamily("jobqueue_llm_tokens", "LLM tokens used.", labels=labels)
        head_r = GaugeMetricFamily("jobqueue_ratelimit_requests_available",
                                   "Requests a key may start now.", labels=labels)
        head_t = GaugeMetricFamily("jobqueue_ratelimit_tokens_available",
                                   "Tokens a key may spend now.", labels=labels)
        lim = GaugeMetricFamily("jobqueue_ratelimit_rpm", "Requests per minute in force.",
                                labels=labels)
        room = GaugeMetricFamily("jobqueue_ratelimit_headroom_ratio", "Share of a key's "
                                 "burst capacity available now, the smaller of requests and "
                                 "tokens (0 while blocked after a 429 or disabled).",
                                 labels=labels)
        for r in limits:
            key = [r["platform"], r["model"], r["key_id"]]
            req.add_metric([*key, "ok"], r["requests_total"] - r["throttled_total"])
            req.add_metric([*key, "rate_limited"], r["throttled_total"])
            tok.add_metric(key, r["tokens_total"])
            head_r.add_metric(key, r["req_available"])
            head_t.add_metric(key, r["tok_available"])
            lim.add_metric(key, r["rpm"])
            room.add_metric(key, _headroom(r))
        yield from (req, tok, head_r, head_t, lim, room)
        yield from _spend_metrics(spend)
        yield CounterMetricFamily("jobqueue_cache_hits", "LLM response cache hits.",
                                  value=cache["hits"])
        yield GaugeMetricFamily("jobqueue_cache_entries", "Live LLM cache entries.",
                                value=cache["entries"])
        g = GaugeMetricFamily("jobqueue_web_pool_connections", "This web process's pools "
                              "(primary; read, with a replica).", labels=["pool", "kind"])
        for pool, owner in self.pools.items():
            stats = owner.pool.get_stats()
            for kind in ("pool_size", "pool_available", "requests_waiting"):
                g.add_metric([pool, kind], stats.get(kind, 0))
        yield g
        yield GaugeMetricFamily("jobqueue_web_held_requests", "SSE streams and ?wait= long "
                                "polls this web process holds open.", value=self.held)
        if self.replica_lag is not None:
            yield GaugeMetricFamily("jobqueue_web_read_replica_lag_seconds", "How long ago "
                                    "the primary wrote the oldest WAL the read replica has "
                                    "not replayed (this process's last measure).",
                                    value=self.replica_lag)


def _headroom(r) -> float:
    """rate_state's row as a 0..1 share of its burst capacity (see rate_reserve)."""
    if key_state(r) != "ok":
        return 0.0
    req_cap = max(2.0, r["rpm"] * r["burst_seconds"] / 60.0)
    tok_cap = max(1.0, r["tpm"] * r["burst_seconds"] / 60.0)
    return max(0.0, min(r["req_available"] / req_cap, r["tok_available"] / tok_cap, 1.0))


def _spend_metrics(rows: list[dict]):
    """What LLM calls cost and used, per platform and model, from the llm_spend rollup."""
    labels = ["platform", "model"]
    cost = CounterMetricFamily("jobqueue_llm_cost_usd", "USD spent on LLM calls at the "
                               "configured prices (calls of unpriced models excluded).",
                               labels=labels)
    saved = CounterMetricFamily("jobqueue_llm_saved_usd", "USD the response cache saved.",
                                labels=labels)
    tokens = CounterMetricFamily("jobqueue_llm_billed_tokens", "Tokens the provider charged, "
                                 "by kind (prompt includes cached_prompt).",
                                 labels=[*labels, "kind"])
    calls = CounterMetricFamily("jobqueue_llm_calls", "Answered LLM calls, by who answered: "
                                "the main model, the fallback, or the cache.",
                                labels=[*labels, "answered_by"])
    unpriced = CounterMetricFamily("jobqueue_llm_unpriced_calls", "Calls of models with no "
                                   "price: their cost is unknown.", labels=labels)
    for r in rows:
        key = [r["platform"], r["model"]]
        cost.add_metric(key, r["cost_usd"])
        saved.add_metric(key, r["saved_usd"])
        for kind in ("prompt", "cached_prompt", "completion"):
            column = "cached_tokens" if kind == "cached_prompt" else f"{kind}_tokens"
            tokens.add_metric([*key, kind], r[column])
        calls.add_metric([*key, "main"], r["calls"] - r["fallback_calls"])
        calls.add_metric([*key, "fallback"], r["fallback_calls"])
        calls.add_metric([*key, "cache"], r["cache_hits"])
        unpriced.add_metric(key, r["unpriced_calls"])
    return cost, saved, tokens, calls, unpriced


def render(client, held: int = 0, pools: dict | None = None,
           replica_lag: float | None = None) -> tuple[bytes, str]:
    """The metrics, read through `client`; `pools` ({name: Client}) are reported by name,
    and the read replica's lag when there is one."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(client, held, pools, replica_lag))
    return generate_latest(registry), CONTENT_TYPE_LATEST
