"""Batches from files, end to end through the CLI: submit (with the whole file checked
first), a platform worker, wait (progress, exit code), export with metadata beside results."""

from __future__ import annotations

import csv
import io
import json
import subprocess

import pytest

from tests.support.helpers import KEYS, jobqueue_cmd, run_cli


@pytest.fixture
def config(sim, tmp_path):
    path = tmp_path / "jobqueue.toml"
    path.write_text(f"""
[platforms.sim]
base_url = "{sim.base_url}"
model = "sim-main"
api_key_env = "SIM_KEY_A"
max_tokens = 16
timeout = 5
max_attempts = 2
""")
    return KEYS | {"JOBQUEUE_CONFIG": str(path)}


@pytest.fixture
def worker(db_url, config):
    proc = jobqueue_cmd("worker", "--platform", "sim", "--retry-base-seconds", "0.05",
                        url=db_url, env=config, stderr=subprocess.DEVNULL)
    yield proc
    proc.terminate()
    proc.wait(30)


def test_csv_with_template_runs_and_exports_metadata_beside_answers(
        db_url, config, worker, tmp_path, sim):
    prompts = tmp_path / "segments.csv"
    prompts.write_text("segment,region\nlaw firms,EU\n\"dentists, small\",US\nbakeries,UK\n")
    submitted = run_cli("batch", "submit", str(prompts), "--platform", "sim", "--template",
                        "Which CRM tools would you recommend for {segment}?", url=db_url,
                        env=config)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = int(submitted.stdout.strip())
    waited = run_cli("batch", "wait", str(batch_id), "--interval", "0.1", url=db_url,
                     env=config)
    assert waited.returncode == 0, waited.stderr
    assert "3 ok, 0 dead" in waited.stdout

    out = tmp_path / "results.csv"
    exported = run_cli("batch", "export", str(batch_id), "-o", str(out), url=db_url, env=config)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["region"], r["prompt"]) for r in rows] == [
        ("EU", "Which CRM tools would you recommend for law firms?"),
        ("US", "Which CRM tools would you recommend for dentists, small?"),
        ("UK", "Which CRM tools would you recommend for bakeries?")]
    assert all(r["state"] == "succeeded" and r["answer"] and r["model"] == "sim-main"
               for r in rows)
    assert "segment" not in rows[0]  # used by the template, so not metadata
    assert sim.stats()["totals"]["ok"] == 3


def test_a_bad_line_rejects_the_whole_file(db_url, config, tmp_path, sql):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": "also fine"}\n{"prompt": "x", '
                   '"max_tokens": -3}\n')
    out = run_cli("batch", "submit", str(bad), "--platform", "sim", url=db_url, env=config)
    assert out.returncode == 2
    assert f"{bad}:3: max_tokens: must be a positive integer, got -3" in out.stderr
    assert "nothing was enqueued" in out.stderr
    assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 0
    assert sql("SELECT count(*) AS n FROM jobqueue.batches")[0]["n"] == 0


def test_wait_exits_1_when_a_job_is_dead_and_export_says_why(db_url, config, worker,
                                                             tmp_path, sim):
    sim.configure(models=["sim-main"])  # any other model is 404 model_not_found
    lines = tmp_path / "mixed.jsonl"
    lines.write_text(json.dumps({"prompt": "good", "metadata": {"row": 1}}) + "\n"
                     + json.dumps({"prompt": "bad", "model": "no-such-model",
                                   "metadata": {"row": 2}}) + "\n")
    batch_id = run_cli("batch", "submit", str(lines), "--platform", "sim", url=db_url,
                       env=config).stdout.strip()
    waited = run_cli("batch", "wait", batch_id, "--interval", "0.1", url=db_url, env=config)
    assert waited.returncode == 1
    assert "1 job(s) dead" in waited.stderr
    exported = run_cli("batch", "export", batch_id, url=db_url, env=config)
    records = [json.loads(x) for x in exported.stdout.splitlines()]
    assert [(r["metadata"]["row"], r["state"]) for r in records] == [(1, "succeeded"),
                                                                    (2, "dead")]
    assert "Permanent" in records[1]["error"] and "no-such-model" in records[1]["error"]


def test_batch_show_counts_by_state(db_url, config, tmp_path):
    lines = tmp_path / "p.jsonl"
    lines.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(5)))
    batch_id = int(run_cli("batch", "submit", str(lines), "--platform", "sim", url=db_url,
                           env=config).stdout)
    shown = json.loads(run_cli("batch", "show", str(batch_id), url=db_url, env=config).stdout)
    assert (shown["total"], shown["waiting"], shown["queue"]) == (5, 5, "sim")
    assert run_cli("batch", "show", "999", url=db_url, env=config).returncode == 2
