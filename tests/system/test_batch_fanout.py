"""Fan-out batches end to end through the CLI (issue 14): one file over several platforms and
samples makes one batch with a job per (row, platform, sample); counts and export by
platform; idempotency keys scoped by platform and sample; reserved CSV columns with a
template reach the jobs."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections import Counter

import pytest

from tests.support.helpers import KEYS, jobqueue_cmd, run_cli

PLATFORMS = ("alpha", "beta", "gamma")


@pytest.fixture
def config(sim, tmp_path):
    path = tmp_path / "jobqueue.toml"
    path.write_text("".join(f"""
[platforms.{name}]
base_url = "{sim.base_url}"
model = "sim-{name}"
api_key_env = "SIM_KEY_A"
max_tokens = 16
timeout = 5
max_attempts = {2 + i}
""" for i, name in enumerate(PLATFORMS)))
    return KEYS | {"JOBQUEUE_CONFIG": str(path)}


def submit(db_url, config, path, *args):
    return run_cli("batch", "submit", str(path), *args, url=db_url, env=config)


def test_fanout_runs_one_job_per_row_platform_and_sample(db_url, config, tmp_path, sim):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("segment,priority,metadata.tag\nlaw firms,high,a\nbakeries,low,b\n")
    out = submit(db_url, config, prompts, "--platform", "alpha,beta,gamma", "--samples", "2",
                 "--template", "Best CRM for {segment}?")
    assert out.returncode == 0, out.stderr
    assert "12 job(s) on alpha,beta,gamma (2 row(s) x 3 platform(s) x 2 sample(s))" in out.stderr
    batch_id = out.stdout.strip()

    shown = json.loads(run_cli("batch", "show", batch_id, url=db_url, env=config).stdout)
    assert shown["total"] == 12 and shown["waiting"] == 12
    assert shown["metadata"] == {"platforms": list(PLATFORMS), "samples": 2}
    assert {p: c["waiting"] for p, c in shown["platforms"].items()} == dict.fromkeys(
        PLATFORMS, 4)

    worker = jobqueue_cmd("worker", *(a for p in PLATFORMS for a in ("--platform", p)),
                          "--retry-base-seconds", "0.05", url=db_url, env=config,
                          stderr=subprocess.DEVNULL)
    try:
        waited = run_cli("batch", "wait", batch_id, "--interval", "0.1", url=db_url,
                         env=config)
    finally:
        worker.terminate()
        worker.wait(30)
    assert waited.returncode == 0, waited.stderr
    for name in PLATFORMS:
        assert f"  {name}: 4 ok, 0 dead" in waited.stdout

    exported = run_cli("batch", "export", batch_id, "--format", "csv", url=db_url, env=config)
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert Counter((r["platform"], r["sample"]) for r in rows) == Counter(
        {(p, s): 2 for p in PLATFORMS for s in ("1", "2")})
    assert {r["platform"]: r["model"] for r in rows} == {p: f"sim-{p}" for p in PLATFORMS}
    assert all(r["state"] == "succeeded" and r["answer"] for r in rows)
    assert {(r["tag"], r["prompt"]) for r in rows} == {
        ("a", "Best CRM for law firms?"), ("b", "Best CRM for bakeries?")}
    assert sim.stats()["totals"]["ok"] == 12  # samples are not served from the cache


def test_fanout_jobs_keep_reserved_columns_and_platform_attempts(db_url, config, tmp_path,
                                                                 sql):
    prompts = tmp_path / "p.csv"
    prompts.write_text("q,priority,max_tokens,model\nwhy?,high,7,m-x\n")
    out = submit(db_url, config, prompts, "--platform", "alpha,gamma", "--template", "{q}")
    assert out.returncode == 0, out.stderr
    jobs = sql("SELECT queue, priority, max_attempts, payload, metadata FROM jobqueue.jobs "
               "ORDER BY id")
    assert [(j["queue"], j["max_attempts"]) for j in jobs] == [("alpha", 2), ("gamma", 4)]
    assert all(j["payload"]["max_tokens"] == 7 and j["payload"]["model"] == "m-x"
               and j["metadata"] == {} for j in jobs)
    assert jobs[0]["priority"] == jobs[1]["priority"] != 0


def test_fanout_idempotency_is_scoped_by_platform_and_sample(db_url, config, tmp_path, sql):
    lines = tmp_path / "p.jsonl"
    lines.write_text("".join(json.dumps({"prompt": f"p{i}", "idempotency_key": f"k{i}"}) + "\n"
                             for i in range(3)))
    first = submit(db_url, config, lines, "--platform", "alpha", "--samples", "1")
    assert first.returncode == 0, first.stderr
    # Before issue 14 the second platform's jobs merged into the first's: 3 jobs, not 9.
    second = submit(db_url, config, lines, "--platform", "alpha,beta", "--samples", "3")
    assert second.returncode == 0, second.stderr
    keys = [r["idempotency_key"] for r in sql(
        "SELECT idempotency_key FROM jobqueue.jobs WHERE batch_id = %s ORDER BY id",
        (int(second.stdout),))]
    assert len(keys) == len(set(keys)) == 18
    assert keys[:6] == ["k0:alpha:1", "k0:alpha:2", "k0:alpha:3",
                        "k0:beta:1", "k0:beta:2", "k0:beta:3"]
    # The same fan-out again gives back the same jobs: nothing new is enqueued.
    again = submit(db_url, config, lines, "--platform", "alpha,beta", "--samples", "3")
    assert again.returncode == 0, again.stderr
    assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 3 + 18


@pytest.mark.parametrize(("args", "expected"), [
    (("--platform", "alpha,nope"), "no platform 'nope'"),
    (("--platform", "alpha,,beta"), "--platform: an empty platform name"),
    (("--platform", "alpha,alpha"), "--platform: platform 'alpha' given twice"),
    (("--platform", "alpha", "--samples", "0"), "--samples: must be from 1 to 100, got 0"),
])
def test_bad_fanout_options_exit_2_and_enqueue_nothing(db_url, config, tmp_path, sql, args,
                                                       expected):
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"prompt": "x"}\n')
    out = submit(db_url, config, lines, *args)
    assert out.returncode == 2
    assert expected in out.stderr
    assert sql("SELECT count(*) AS n FROM jobqueue.batches")[0]["n"] == 0


def test_no_fallback_is_written_into_every_job(db_url, config, tmp_path, sql):
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"prompt": "x"}\n{"prompt": "y"}\n')
    out = submit(db_url, config, lines, "--platform", "alpha,beta", "--no-fallback")
    assert out.returncode == 0, out.stderr
    payloads = [r["payload"] for r in sql("SELECT payload FROM jobqueue.jobs")]
    assert len(payloads) == 4 and all(p["fallback"] is False for p in payloads)
