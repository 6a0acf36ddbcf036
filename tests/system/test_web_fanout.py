"""Fan-out batches over the HTTP API (issue 14): POST /api/batches with `platforms` and
`samples`, as JSON items or an uploaded file; counts by platform; bad options are 4xx naming
the field, never a 5xx."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.web import Api, Server


@pytest.fixture
def server(db_url, sim, tmp_path):
    path = tmp_path / "jobqueue.toml"
    path.write_text("".join(f'[platforms.{name}]\nbase_url = "{sim.base_url}"\nmodel = "m"\n'
                            f'api_key_env = "SIM_KEY_A"\nmax_attempts = {n}\n'
                            for name, n in (("alpha", 2), ("beta", 3))))
    s = Server(db_url, JOBQUEUE_CONFIG=str(path))
    yield s
    s.close()


@pytest.fixture
def alice(server, make_token):
    return Api(server.base, make_token("alice"))


def test_json_fanout_counts_by_platform_and_scopes_keys(alice, sql):
    r = alice.post("/api/batches", json={
        "platforms": ["alpha", "beta"], "samples": 2,
        "items": [{"prompt": "one", "idempotency_key": "k1"}, {"prompt": "two"}]})
    assert r.status_code == 201, r.text
    assert (r.json()["total"], r.json()["queue"]) == (8, "alpha,beta")
    batch = alice.get(f"/api/batches/{r.json()['id']}").json()
    assert batch["metadata"] == {"platforms": ["alpha", "beta"], "samples": 2}
    assert {p: (c["waiting"], c["total"]) for p, c in batch["platforms"].items()} == {
        "alpha": (4, 4), "beta": (4, 4)}
    jobs = sql("SELECT queue, max_attempts, idempotency_key, payload->'sample' AS sample "
               "FROM jobqueue.jobs ORDER BY id")
    assert [(j["queue"], j["max_attempts"], j["idempotency_key"], j["sample"])
            for j in jobs[:4]] == [("alpha", 2, "k1:alpha:1", 1), ("alpha", 2, "k1:alpha:2", 2),
                                   ("beta", 3, "k1:beta:1", 1), ("beta", 3, "k1:beta:2", 2)]
    page = alice.get(f"/api/batches/{r.json()['id']}/results?limit=8").json()
    assert [(i["platform"], i["sample"]) for i in page["items"][4:]] == [
        ("alpha", 1), ("alpha", 2), ("beta", 1), ("beta", 2)]


def test_uploaded_csv_fanout_with_reserved_columns(alice, sql):
    files = {"file": ("p.csv", b"segment,priority\nlaw,high\n", "text/csv")}
    r = alice.post("/api/batches", files=files, data={
        "platforms": "alpha,beta", "samples": "3", "template": "CRM for {segment}?"})
    assert r.status_code == 201, r.text
    assert r.json()["total"] == 6
    rows = sql("SELECT DISTINCT priority, metadata FROM jobqueue.jobs")
    assert len(rows) == 1 and rows[0]["metadata"] == {} and rows[0]["priority"] != 0
    csv_text = alice.get(f"/api/batches/{r.json()['id']}/results?format=csv").text
    assert csv_text.splitlines()[0].endswith(",platform,sample")


@pytest.mark.parametrize(("body", "field", "status"), [
    ({"platforms": ["alpha", "nope"]}, "platforms", 422),
    ({"platforms": "alpha,beta"}, "platforms", 400),  # JSON takes a list (a form: a,b)
    ({"platforms": []}, "platforms", 400),
    ({"platforms": ["alpha", "alpha"]}, "platforms", 400),
    ({"platforms": ["alpha"], "platform": "alpha"}, "platforms", 400),
    ({"platform": "alpha", "samples": 0}, "samples", 400),
    ({"platform": "alpha", "samples": 101}, "samples", 400),
    ({"platform": "alpha", "samples": "2"}, "samples", 400),
])
def test_bad_fanout_options_name_the_field(alice, sql, body, field, status):
    r = alice.post("/api/batches", json=body | {"items": [{"prompt": "x"}]})
    assert r.status_code == status, r.text
    if status != 201:
        assert r.json()["error"]["field"] == field
        assert sql("SELECT count(*) AS n FROM jobqueue.batches")[0]["n"] == 0


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(platforms=st.one_of(st.none(), st.text(max_size=20), st.integers(),
                           st.lists(st.one_of(st.text(max_size=8), st.integers(), st.none()),
                                    max_size=4)),
       samples=st.one_of(st.integers(-5, 200), st.text(max_size=5), st.none(),
                         st.floats(allow_nan=False, allow_infinity=False)))
def test_any_fanout_options_give_201_or_4xx(alice, platforms, samples):
    body = {"items": [{"prompt": "x"}], "samples": samples}
    if platforms is not None:
        body["platforms"] = platforms
    r = alice.post("/api/batches", json=body)
    assert r.status_code in (201, 400, 422), r.text
    if r.status_code != 201:
        field = r.json()["error"]["field"]  # "platforms[0]" names the list's item
        assert field.split("[")[0] in ("platform", "platforms", "samples"), r.text


def test_a_batch_can_forbid_the_fallback_model(alice, sql):
    r = alice.post("/api/batches", json={"platform": "alpha", "fallback": False,
                                         "items": [{"prompt": "a"}, {"prompt": "b"}]})
    assert r.status_code == 201, r.text
    payloads = [row["payload"] for row in sql("SELECT payload FROM jobqueue.jobs")]
    assert len(payloads) == 2 and all(p["fallback"] is False for p in payloads)


def test_a_chat_job_without_a_prompt_is_refused_at_enqueue(alice, sql):
    r = alice.post("/api/jobs", json={"queue": "alpha", "kind": "chat",
                                      "payload": {"temperature": 0}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "payload", r.text
    assert "prompt or messages" in r.json()["error"]["message"]
    assert sql("SELECT count(*) AS n FROM jobqueue.jobs") == [{"n": 0}]
    # The same kind on a queue that is no platform is the user's own task: accepted.
    assert alice.post("/api/jobs", json={"queue": "mine", "kind": "chat",
                                         "payload": {}}).status_code == 201
