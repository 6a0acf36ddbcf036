"""deploy/: the KEDA ScaledObjects and Prometheus rules parse, their queries run against a
migrated database, and every metric the alert rules name is in /metrics, where each known
queue's series are present at 0 rather than missing."""

from __future__ import annotations

import re
import uuid

import pytest
import yaml

from tests.support.helpers import ROOT
from tests.support.web import Api, Server

DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\b(jobqueue_[a-z_]+)\b")


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


@pytest.fixture
def metrics_text(db_url, config_file, make_token, sql):
    """/metrics of a real server, for a database whose only queue is known from a worker's
    registration (no jobs at all)."""
    sql("INSERT INTO jobqueue.workers (id, host, pid, queue, concurrency, connections) "
        "VALUES (%(id)s, 'h1', 7, 'idle', 5, 3)", {"id": uuid.uuid4()})
    server = Server(db_url, JOBQUEUE_CONFIG=config_file)
    try:
        r = Api(server.base, make_token("ops", ["read"])).get("/metrics")
        assert r.status_code == 200
        return r.text
    finally:
        server.close()


class TestKeda:
    def test_scaled_objects_use_the_postgresql_scaler_and_the_stable_function(self):
        found = documents("keda-scaledobject.yaml")
        assert len(found) == 2
        for obj in found:
            assert obj["apiVersion"] == "keda.sh/v1alpha1" and obj["kind"] == "ScaledObject"
            (trigger,) = obj["spec"]["triggers"]
            assert trigger["type"] == "postgresql"
            meta = trigger["metadata"]
            assert "jobqueue.queue_depth(" in meta["query"]
            assert float(meta["targetQueryValue"]) > 0
            assert meta["connectionFromEnv"] == "DATABASE_URL"

    def test_their_queries_run_and_return_one_integer(self, client, sql):
        client.enqueue_payloads("k", [{}] * 4, queue="openai")
        client.enqueue("k", queue="emails")
        values = [sql(obj["spec"]["triggers"][0]["metadata"]["query"])[0]
                  for obj in documents("keda-scaledobject.yaml")]
        assert [list(v.values()) for v in values] == [[4], [5]]
        assert all(isinstance(next(iter(v.values())), int) for v in values)


class TestPrometheus:
    def test_rules_parse_and_name_the_required_alerts(self):
        (rules,) = documents("prometheus-alerts.yaml")
        alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
        assert {"JobqueueQueueLatencyHigh", "JobqueueDeadJobsRising", "JobqueueNoLiveWorker",
                "JobqueueRateLimitHeadroomExhausted", "JobqueueVacuumHeldBack"} <= set(alerts)
        for rule in alerts.values():
            assert rule["expr"] and rule["annotations"]["summary"]

    def test_every_metric_the_rules_use_is_exported(self, metrics_text):
        (rules,) = documents("prometheus-alerts.yaml")
        used = {m for g in rules["groups"] for r in g["rules"] for m in METRIC.findall(r["expr"])}
        assert len(used) >= 8
        exported = {line.split("{")[0].split(" ")[0] for line in metrics_text.splitlines()
                    if line.startswith("jobqueue_")}
        # The rate-limit series exist once a platform worker made its buckets; their family
        # is always declared.
        declared = {line.split()[2] for line in metrics_text.splitlines()
                    if line.startswith("# TYPE ")}
        missing = {m for m in used if m not in exported and m not in declared
                   and f"{m}_total" not in declared}
        assert not missing, missing

    def test_a_known_queue_has_every_series_at_zero(self, metrics_text):
        for series in ('jobqueue_queue_depth{queue="idle"} 0.0',
                       'jobqueue_queue_latency_seconds{queue="idle"} 0.0',
                       'jobqueue_workers{queue="idle"} 1.0',
                       'jobqueue_queue_finished_last_minute{queue="idle"} 0.0',
                       'jobqueue_jobs{queue="idle",state="waiting"} 0.0',
                       'jobqueue_jobs{queue="idle",state="dead"} 0.0',
                       'jobqueue_jobs_finished_total{outcome="dead",queue="idle"} 0.0',
                       'jobqueue_worker_jobs_in_flight{queue="idle"} 0.0',
                       'jobqueue_worker_connections{host="h1",pid="7",queues="idle"} 3.0'):
            assert series in metrics_text, series
        assert re.search(r'jobqueue_db_connections\{application_name="jobqueue",state="[a-z ]+"\}',
                         metrics_text)
        assert re.search(r"^jobqueue_db_oldest_transaction_seconds \d", metrics_text, re.M)
        assert re.search(r"^jobqueue_db_oldest_xmin_age \d", metrics_text, re.M)


class TestProcfiles:
    def test_one_process_and_per_platform_procfiles(self):
        one = (DEPLOY / "Procfile.one-process").read_text()
        assert "worker: jobqueue worker --profile all" in one
        per = (DEPLOY / "Procfile.per-platform").read_text()
        assert "jobqueue worker --platform openai" in per
        for text in (one, per):
            assert text.startswith("release: jobqueue migrate\n")
