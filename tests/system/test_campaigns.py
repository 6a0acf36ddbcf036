"""`jobqueue campaigns ...` end to end against the simulator: a campaign file (bad ones exit 2
naming FILE:LINE: field), a run (one fan-out batch over two platforms), a real worker process
answering and extracting, and the report (table, JSON and CSV) whose numbers match the
simulator's brand lists; spend is charged to the campaign."""

from __future__ import annotations

import csv
import json
import subprocess

import psycopg
import pytest
from psycopg.rows import dict_row

from jobqueue.campaigns import extract
from jobqueue.sim import brands as sim_brands
from tests.support.helpers import KEYS, jobqueue_cmd, run_cli

POOL = ["Acme", "Globex", "Initech", "Umbrella", "Hooli"]
PROMPTS = ["What is the best CRM for a small team?", "Which CRM do you recommend for startups?",
           "Top CRM tools for agencies?", "Say hello."]
MODELS = {"openai": "sim-main", "gemini": "sim-other"}


@pytest.fixture
def setup(sim, tmp_path):
    sim.configure(brands=POOL)
    toml = tmp_path / "jobqueue.toml"
    toml.write_text("".join(
        f'[platforms.{name}]\nbase_url = "{sim.base_url}"\nmodel = "{model}"\n'
        'api_key_env = "SIM_KEY_A"\nmax_tokens = 400\ntimeout = 5\n'
        f'[prices."{model}"]\ninput = 1.0\noutput = 2.0\n'
        for name, model in MODELS.items()))
    campaign = tmp_path / "crm.yaml"
    campaign.write_text("name: crm\nplatforms: [openai, gemini]\nsamples: 1\nprompts:\n"
                        + "".join(f"  - {p}\n" for p in PROMPTS)
                        + "brands:\n  - name: Acme\n    aliases: [Acme CRM]\n"
                          "competitors: [Globex, Initech, Umbrella, Hooli]\n")
    return {"JOBQUEUE_CONFIG": str(toml), **KEYS}, tmp_path


def test_bad_campaign_files_exit_2_naming_file_line_and_field(db_url, setup):
    env, tmp = setup
    bad = tmp / "bad.yaml"
    bad.write_text("name: crm\nplatforms: [openai, nowhere]\nprompts: [best CRM]\n"
                   "brands: [Acme]\n")
    r = run_cli("campaigns", "create", str(bad), url=db_url, env=env)
    assert r.returncode == 2 and f"{bad}:2: platforms: unknown platform 'nowhere'" in r.stderr
    assert "Traceback" not in r.stderr
    bad.write_text('name = "crm"\nplatforms = ["openai"]\nprompts = ["x"]\n\n'
                   'brands = [{name = "Acme", aliases = [""]}]\n')
    toml = bad.with_suffix(".toml")
    bad.rename(toml)
    r = run_cli("campaigns", "create", str(toml), url=db_url, env=env)
    assert r.returncode == 2 and f"{toml}:5: brands[0].aliases[0]: " in r.stderr
    r = run_cli("campaigns", "create", str(tmp / "missing.yaml"), url=db_url, env=env)
    assert r.returncode == 2 and "cannot read it" in r.stderr
    r = run_cli("campaigns", "report", "nope", url=db_url, env=env)
    assert r.returncode == 2 and "campaign nope: not found" in r.stderr


def expected_visibility(brand: str, platform: str) -> float:
    """From the simulator's own brand lists, independently of the extract step."""
    answers = [sim_brands.answer(p, MODELS[platform], POOL) or "Simulated reply."
               for p in PROMPTS]
    return sum(1 for a in answers if any(
        f"{i}. {brand}:" in a for i in range(1, 6))) / len(answers)


def test_a_campaign_run_is_answered_extracted_and_reported(db_url, setup):
    env, tmp = setup
    cli = lambda *a: run_cli("campaigns", *a, url=db_url, env=env)  # noqa: E731
    r = cli("create", str(tmp / "crm.yaml"))
    assert r.returncode == 0, r.stderr
    assert "4 prompt(s) x 2 platform(s) x 1 sample(s), 5 brand(s)" in r.stdout
    assert "crm" in cli("list").stdout
    run = cli("run", "crm")
    assert run.returncode == 0, run.stderr
    batch_id = int(run.stdout)
    worker = jobqueue_cmd("worker", "--platform", "openai", "--platform", "gemini",
                          "--queue", "default", "--until-idle", url=db_url, env=env,
                          stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        assert worker.wait(120) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        states = conn.execute("SELECT kind, state, count(*) AS n FROM jobqueue.all_jobs "
                              "GROUP BY 1, 2 ORDER BY 1").fetchall()
        assert states == [{"kind": "campaign.extract", "state": "succeeded", "n": 8},
                          {"kind": "chat", "state": "succeeded", "n": 8}]
        assert conn.execute("SELECT count(*) AS n FROM jobqueue.campaign_answers"
                            ).fetchone()["n"] == 8
        spent = conn.execute("SELECT sum(calls) AS calls, sum(cost_usd) AS usd FROM "
                             "jobqueue.llm_spend WHERE campaign = 'crm'").fetchone()
        assert spent["calls"] == 8 and spent["usd"] > 0
        # the stored answers are the simulator's lists
        texts = [r["text"] for r in conn.execute(
            "SELECT result ->> 'text' AS text FROM jobqueue.finished WHERE batch_id = %s",
            (batch_id,))]
        assert sum(1 for t in texts if t.startswith("Here are")) == 6

    data = json.loads(cli("report", "crm", "--json").stdout)
    totals = {(t["platform"], t["brand"]): t for t in data["totals"]}
    for platform in MODELS:
        for brand in POOL:
            assert totals[(platform, brand)]["visibility"] == pytest.approx(
                expected_visibility(brand, platform), abs=1e-4), (platform, brand)
            assert totals[(platform, brand)]["answers"] == 4
    sov = sum(totals[("", b)]["share_of_voice"] or 0 for b in POOL)
    assert sov == pytest.approx(1.0, abs=1e-3)
    assert data["domains"] and data["spend"][0]["calls"] == 4
    table = cli("report", "crm")
    assert table.returncode == 0 and "VISIBILITY" in table.stdout and "cost: $" in table.stdout
    out = tmp / "report.csv"
    assert cli("report", "crm", "--csv", str(out)).returncode == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert {r["brand"] for r in rows} == set(POOL)
    assert cli("report", "crm", "--from", "2020-13-01").returncode == 2
    # extract's matcher agrees with the simulator's lists on every stored answer
    assert extract.Matcher([{"name": b} for b in POOL]).find("1. Acme: x") == [("Acme", 3, 7)]


def test_the_demo_shows_a_campaign_on_two_platforms_with_its_report_and_cost(db_url):
    out = run_cli("--log-level", "WARNING", "demo", "--jobs", "4", "--port", "0", url=db_url)
    assert out.returncode == 0, out.stderr
    assert "campaign demo-crm: 4 prompts x 2 simulated platforms x 2 samples = 16 answers" \
        in out.stdout
    lines = out.stdout.splitlines()
    acme = [ln for ln in lines if ln.startswith("all") and "Acme CRM" in ln]
    assert acme and "%" in acme[0]
    assert any(ln.startswith("demo-gemini") for ln in lines)
    assert "top cited domains: " in out.stdout
    cost = next(ln for ln in lines if ln.startswith("cost: $"))
    assert "16 LLM call(s)" in cost and float(cost.split("$")[1].split()[0]) > 0
