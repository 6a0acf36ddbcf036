"""Costs and budgets through the CLI: `batch submit --dry-run` estimates without enqueuing,
`budgets set|list|remove`, and `batch show` with what a batch cost at the prices that
jobqueue.toml sets (read by a real worker process)."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from tests.support.helpers import KEYS, jobqueue_cmd, run_cli, wait_until

PROMPTS = ["Name three colours.", "What is a queue?", "Say hello in French."]


@pytest.fixture
def config(sim, tmp_path):
    path = tmp_path / "jobqueue.toml"
    path.write_text(f"""
[platforms.sim]
base_url = "{sim.base_url}"
model = "sim-main"
api_key_env = ["SIM_KEY_A", "SIM_KEY_B"]
max_tokens = 20
rpm = 60
tpm = 1000
timeout = 5

[prices."sim-main"]
input = 1000
cached_input = 500
output = 2000
batch_discount = 0.5
""")
    return KEYS | {"JOBQUEUE_CONFIG": str(path)}


@pytest.fixture
def batch_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return str(path)


def test_dry_run_prints_tokens_cost_and_time_and_enqueues_nothing(db_url, config, batch_file,
                                                                   sql):
    done = run_cli("batch", "submit", batch_file, "--platform", "sim", "--dry-run",
                   url=db_url, env=config)
    assert done.returncode == 0, done.stderr
    prompt = sum(math.ceil(len(p) / 4) for p in PROMPTS)
    cost = (prompt * 1000 + 3 * 20 * 2000) / 1e6
    out = done.stdout
    assert "nothing was enqueued" in out and "jobs:   3" in out
    assert f"{prompt:,} prompt" in out and "at most 60 output" in out
    assert f"${cost:,.4f}" in out and f"${cost / 2:,.4f} through the Batch API" in out
    # 3 calls at 2 keys x 60 RPM take 1.5 s; 3 x (prompt + 20) tokens at 2 x 1000 TPM more
    seconds = round((prompt + 60) / 2000 * 60)
    assert f"at least 0m {seconds:02d}s" in out and "(tokens bind)" in out
    assert sql("SELECT count(*) AS n FROM jobqueue.jobs")[0]["n"] == 0
    assert sql("SELECT count(*) AS n FROM jobqueue.batches")[0]["n"] == 0


def test_dry_run_of_an_unpriced_model_says_the_cost_is_unknown(db_url, config, batch_file,
                                                               tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text(json.dumps({"prompt": "hi", "model": "mystery-1"}) + "\n")
    done = run_cli("batch", "submit", str(path), "--platform", "sim", "--dry-run",
                   url=db_url, env=config)
    assert done.returncode == 0, done.stderr
    assert "cost:   unknown: no price for mystery-1" in done.stdout


def test_budgets_set_list_remove_and_bad_input(db_url, config):
    done = run_cli("budgets", "set", "owner", "alice", "2.5", "--per", "day", url=db_url,
                   env=config)
    assert done.returncode == 0, done.stderr
    assert "owner alice: $2.5000 per day" in done.stdout
    listed = run_cli("budgets", "list", "--json", url=db_url, env=config)
    (budget,) = json.loads(listed.stdout)
    assert (budget["scope"], budget["id"], budget["period"], budget["limit_usd"]) == \
        ("owner", "alice", "day", 2.5)
    for args, needle in ((("batch", "abc", "1"), "id: a batch budget needs a batch id"),
                         (("owner", "alice", "nan"), "usd: must be a number"),
                         (("team", "x", "1"), "'team' is not one of")):
        bad = run_cli("budgets", "set", *args, url=db_url, env=config)
        assert bad.returncode == 2 and needle in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
    removed = run_cli("budgets", "remove", "owner", "alice", url=db_url, env=config)
    assert removed.returncode == 0 and "removed day" in removed.stdout
    again = run_cli("budgets", "remove", "owner", "alice", url=db_url, env=config)
    assert again.returncode == 2 and "no budget" in again.stderr


def test_batch_show_has_the_batch_cost_at_the_configured_prices(db_url, config, batch_file):
    submitted = run_cli("batch", "submit", batch_file, "--platform", "sim", url=db_url,
                        env=config)
    batch_id = submitted.stdout.strip()
    worker = jobqueue_cmd("worker", "--platform", "sim", url=db_url, env=config,
                          stderr=subprocess.DEVNULL)
    try:
        def shown():
            return json.loads(run_cli("batch", "show", batch_id, url=db_url,
                                      env=config).stdout)

        wait_until(lambda: shown()["succeeded"] == 3, timeout=60, interval=0.3)
        figures = shown()["costs"]
    finally:
        worker.terminate()
        worker.wait(30)
    assert figures["calls"] == 3 and figures["fallback_share"] == 0.0
    expected = (figures["prompt_tokens"] * 1000 + figures["completion_tokens"] * 2000) / 1e6
    assert figures["cost_usd"] == pytest.approx(expected) and figures["cost_usd"] > 0
    assert figures["over_budget"] == 0 and figures["unpriced_calls"] == 0
