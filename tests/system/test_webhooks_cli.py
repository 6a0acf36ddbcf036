"""`jobqueue webhooks ...` and `jobqueue alerts ...` as a user runs them: the secret printed
once on stdout, bad input exit 2 with one line naming it, lists and removal."""

from __future__ import annotations

import json

from tests.support.helpers import run_cli

LOOPBACK = {"JOBQUEUE_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8"}


class TestWebhooksCommand:
    def test_add_list_deliveries_remove(self, db_url, sql):
        added = run_cli("webhooks", "add", "http://127.0.0.1:9/hook", "--event", "job.dead",
                        "--event", "alert.firing", "--owner", "alice", "--format", "slack",
                        url=db_url, env=LOOPBACK)
        assert added.returncode == 0, added.stderr
        secret = added.stdout.strip()
        assert secret.startswith("whsec_") and "shown only now" in added.stderr
        (row,) = sql("SELECT id, owner, events, format, secret FROM "
                     "jobqueue.webhook_subscriptions")
        assert (row["owner"], row["events"], row["format"], row["secret"]) == (
            "alice", ["job.dead", "alert.firing"], "slack", secret)
        listed = run_cli("webhooks", "list", "--json", url=db_url)
        assert [w["id"] for w in json.loads(listed.stdout)] == [row["id"]]
        assert secret not in listed.stdout
        assert "no deliveries" in run_cli("webhooks", "deliveries", url=db_url).stdout
        assert run_cli("webhooks", "remove", str(row["id"]), url=db_url).returncode == 0
        again = run_cli("webhooks", "remove", str(row["id"]), url=db_url)
        assert again.returncode == 2 and "no such webhook" in again.stderr

    def test_bad_input_is_exit_2_naming_it(self, db_url):
        private = run_cli("webhooks", "add", "http://10.0.0.1/", "--event", "job.dead",
                          url=db_url)
        assert private.returncode == 2
        assert private.stderr.strip().startswith("Error: url: 10.0.0.1 is a private address")
        event = run_cli("webhooks", "add", "http://127.0.0.1:9/", "--event", "job.nope",
                        url=db_url, env=LOOPBACK)
        assert event.returncode == 2 and "events: 'job.nope'" in event.stderr
        missing = run_cli("webhooks", "redeliver", "77", url=db_url)
        assert missing.returncode == 2 and "delivery 77: no such delivery" in missing.stderr
        assert "Traceback" not in private.stderr + event.stderr + missing.stderr


class TestAlertsCommand:
    def test_set_list_remove(self, db_url):
        done = run_cli("alerts", "set", "emails", "--depth-over", "1000", "--latency-over",
                       "2m", url=db_url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "alerts for emails: depth over 1000, latency over 120s"
        rows = json.loads(run_cli("alerts", "list", "--json", url=db_url).stdout)
        assert [(r["metric"], r["threshold"]) for r in rows] == [("depth", 1000.0),
                                                                 ("latency", 120.0)]
        assert "emails  depth over 1000  ok" in run_cli("alerts", "list", url=db_url).stdout
        removed = run_cli("alerts", "remove", "emails", "--metric", "depth", url=db_url)
        assert removed.stdout.strip() == "alerts for emails: removed depth"
        assert run_cli("alerts", "remove", "nothing", url=db_url).returncode == 2

    def test_bad_thresholds_are_exit_2(self, db_url):
        soon = run_cli("alerts", "set", "emails", "--latency-over", "soon", url=db_url)
        assert soon.returncode == 2 and "--latency-over: 'soon'" in soon.stderr
        none = run_cli("alerts", "set", "emails", url=db_url)
        assert none.returncode == 2 and "give at least one" in none.stderr
        negative = run_cli("alerts", "set", "emails", "--depth-over", "-1", url=db_url)
        assert negative.returncode == 2
