"""Held requests (SSE streams and ?wait= long polls) under Gunicorn with the shipped config:
they hold no request thread, they are capped per token and per process (429 with
Retry-After), and a client that leaves frees its slot at once (issue 10, point 1)."""

from __future__ import annotations

import json
import re
import time

import pytest
import requests

from tests.support.helpers import wait_until
from tests.support.web import Api, Gunicorn, RawStream


@pytest.fixture
def gunicorn(db_url):
    started = []

    def start(**env) -> Gunicorn:
        started.append(Gunicorn(db_url, **env))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def _held(server: Gunicorn) -> int:
    """The held requests the (one) Gunicorn worker reports in /metrics."""
    text = requests.get(server.base + "/metrics", timeout=5).text
    return int(float(re.search(r"^jobqueue_web_held_requests (\S+)$", text, re.M).group(1)))


def _wait_held(server: Gunicorn, count: int) -> None:
    """A long poll's head comes with its answer: /metrics says when it is held (no event)."""
    wait_until(lambda: _held(server) == count, timeout=10, message=f"{count} held requests")


def _waiting_job(api: Api) -> int:
    """A job nobody works (its queue has no worker): it stays waiting while followed."""
    r = api.post("/api/jobs", json={"queue": "nobody-works-this", "kind": "k"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


class TestHeldRequests:
    def test_open_streams_and_long_polls_leave_every_thread_to_other_requests(
            self, gunicorn, make_token):
        """With 40 SSE streams and 10 long polls open on a worker of 4 threads, /healthz and
        POST /api/jobs answer at once, and the long polls still answer when the job ends."""
        server = gunicorn(GUNICORN_THREADS="4")
        token = make_token(rate_limit=100_000)
        api = Api(server.base, token)
        job_id = _waiting_job(api)
        polls = [RawStream(server.base, f"/api/jobs/{job_id}?wait=60", token, read_head=False)
                 for _ in range(10)]
        streams = [RawStream(server.base, f"/api/jobs/{job_id}/events", token, timeout=5)
                   for _ in range(40)]
        try:
            assert all(s.status == 200 for s in streams)
            assert all(s.headers["content-type"].startswith("text/event-stream")
                       for s in streams)
            slowest = 0.0
            for _ in range(20):
                started = time.monotonic()
                assert api.session.get(server.base + "/healthz", timeout=2).status_code == 200
                r = api.session.post(server.base + "/api/jobs", timeout=2,
                                     json={"queue": "other", "kind": "k"})
                assert r.status_code == 201
                slowest = max(slowest, time.monotonic() - started)
            assert slowest < 1.0, slowest
            assert api.post(f"/api/jobs/{job_id}/cancel").json()["outcome"] == "cancelled"
            for poll in polls:
                poll.read_head()
                assert poll.status == 200
                assert json.loads(poll.read_body())["state"] == "cancelled"
        finally:
            for held in polls + streams:
                held.close()

    def test_over_a_cap_is_429_with_retry_after(self, gunicorn, make_token):
        """Per token (SSE and long polls together) and per process, whatever the token."""
        server = gunicorn(JOBQUEUE_STREAMS_PER_TOKEN="3", JOBQUEUE_STREAMS_PER_PROCESS="5",
                          JOBQUEUE_METRICS_PUBLIC="1")
        alice, bob = make_token("alice"), make_token("bob")
        job_a, job_b = _waiting_job(Api(server.base, alice)), _waiting_job(Api(server.base, bob))
        held = [RawStream(server.base, f"/api/jobs/{job_a}/events", alice) for _ in range(2)]
        held.append(RawStream(server.base, f"/api/jobs/{job_a}?wait=30", alice,
                              read_head=False))
        try:
            _wait_held(server, 3)
            over = RawStream(server.base, f"/api/jobs/{job_a}/events", alice)
            assert over.status == 429 and int(over.headers["retry-after"]) >= 1
            assert json.loads(over.read_body())["error"]["code"] == "too_many_streams"
            over.close()
            over = Api(server.base, alice).get(f"/api/jobs/{job_a}?wait=5")
            assert over.status_code == 429 and "token" in over.json()["error"]["message"]
            held += [RawStream(server.base, f"/api/jobs/{job_b}/events", bob) for _ in range(2)]
            assert [s.status for s in held[3:]] == [200, 200]
            over = Api(server.base, bob).get(f"/api/jobs/{job_b}/events")
            assert over.status_code == 429 and over.headers["Retry-After"]
            assert "process" in over.json()["error"]["message"]
            # Ordinary requests are not capped.
            assert Api(server.base, bob).get(f"/api/jobs/{job_b}").status_code == 200
        finally:
            for s in held:
                s.close()

    @pytest.mark.parametrize("kind", ["events", "wait"])
    def test_a_client_that_leaves_frees_its_slot_within_a_second(self, gunicorn, make_token,
                                                                 kind):
        server = gunicorn(JOBQUEUE_STREAMS_PER_TOKEN="2", JOBQUEUE_METRICS_PUBLIC="1")
        token = make_token()
        job_id = _waiting_job(Api(server.base, token))
        path = f"/api/jobs/{job_id}/events" if kind == "events" else f"/api/jobs/{job_id}?wait=60"
        held = [RawStream(server.base, f"/api/jobs/{job_id}/events", token),
                RawStream(server.base, path, token, read_head=kind == "events")]
        try:
            _wait_held(server, 2)
            probe = RawStream(server.base, f"/api/jobs/{job_id}/events", token)
            probe.close()
            assert probe.status == 429
            held.pop().close()
            left = time.monotonic()
            while True:
                probe = RawStream(server.base, f"/api/jobs/{job_id}/events", token)
                if probe.status == 200:
                    break
                probe.close()
                assert time.monotonic() - left < 1.0, "the slot was not freed within 1 s"
                time.sleep(0.02)
            held.append(probe)
            assert _held(server) == 2
        finally:
            for s in held:
                s.close()

    def test_head_requests_give_their_slot_back(self, gunicorn, make_token):
        """A HEAD never reads the stream's body: its slot must come back all the same."""
        server = gunicorn(JOBQUEUE_STREAMS_PER_TOKEN="1", JOBQUEUE_METRICS_PUBLIC="1")
        token = make_token()
        api = Api(server.base, token)
        job_id = _waiting_job(api)
        for _ in range(3):
            assert api.head(f"/api/jobs/{job_id}/events").status_code == 200
        _wait_held(server, 0)
        stream = RawStream(server.base, f"/api/jobs/{job_id}/events", token)
        try:
            assert stream.status == 200
        finally:
            stream.close()
