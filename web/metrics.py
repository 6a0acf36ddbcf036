"""Prometheus metrics, read from Postgres at scrape time.

Workers are many processes on many hosts; the database is the one place that knows the whole
picture, so every web process reports the same numbers. Names follow one prefix (jobqueue_),
base units and _total on counters, with no ids in labels.
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

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _Collector:
    def __init__(self, client, held: int, pools: dict | None = None,
                 replica_lag: float | None = None):
        self.client, self.held = client, held  # client: the reader (a replica, if any)
        self.pools = pools or {"primary": client}
        self.replica_lag = replica_lag

    def collect(self):
        with self.client.pool.connection() as conn:
            found = store.metrics(conn)
            jobs, oldest, recent = found["jobs"], found["oldest"], found["recent"]
            limits = conn.execute(q("rate_state"), {"platform": None}).fetchall()
            cache = conn.execute(q("cache_stats")).fetchone()
            workers = conn.execute(q("list_workers")).fetchall()

        g = GaugeMetricFamily("jobqueue_jobs", "Jobs by queue and state (finished ones until "
                              "pruned).", labels=["queue", "state"])
        for r in jobs:
            g.add_metric([r["queue"], r["state"]], r["count"])
        yield g
        finished = CounterMetricFamily("jobqueue_jobs_finished", "Jobs finished, by outcome "
                                       "(retained rows).", labels=["queue", "outcome"])
        for r in jobs:
            if r["state"] in FINISHED_STATES:
                finished.add_metric([r["queue"], r["state"]], r["count"])
        yield finished
        g = GaugeMetricFamily("jobqueue_oldest_waiting_seconds",
                              "Age of the oldest runnable job per queue.", labels=["queue"])
        for r in oldest:
            g.add_metric([r["queue"]], r["seconds"])
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
        g = GaugeMetricFamily("jobqueue_workers", "Worker processes registered, by queue.",
                              labels=["queue"])
        per_queue: dict[str, int] = {}
        for w in workers:
            per_queue[w["queue"]] = per_queue.get(w["queue"], 0) + 1
        for queue, n in per_queue.items():
            g.add_metric([queue], n)
        yield g
        g = GaugeMetricFamily("jobqueue_worker_jobs_in_flight", "Jobs in flight by queue.",
                              labels=["queue"])
        flight: dict[str, int] = {}
        for w in workers:
            flight[w["queue"]] = flight.get(w["queue"], 0) + w["in_flight"]
        for queue, n in flight.items():
            g.add_metric([queue], n)
        yield g
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
        for r in limits:
            key = [r["platform"], r["model"], r["key_id"]]
            req.add_metric([*key, "ok"], r["requests_total"] - r["throttled_total"])
            req.add_metric([*key, "rate_limited"], r["throttled_total"])
            tok.add_metric(key, r["tokens_total"])
            head_r.add_metric(key, r["req_available"])
            head_t.add_metric(key, r["tok_available"])
            lim.add_metric(key, r["rpm"])
        yield from (req, tok, head_r, head_t, lim)
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


def render(client, held: int = 0, pools: dict | None = None,
           replica_lag: float | None = None) -> tuple[bytes, str]:
    """The metrics, read through `client`; `pools` ({name: Client}) are reported by name,
    and the read replica's lag when there is one."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(client, held, pools, replica_lag))
    return generate_latest(registry), CONTENT_TYPE_LATEST
