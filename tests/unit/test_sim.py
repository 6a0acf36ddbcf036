"""Tests of the OpenAI simulator against the official SDK (no database needed).

Rate-limit tests drive the simulator's clock by hand, so refills and retry-after values are
exact and nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from jobqueue.sim.server import FakeOpenAI, Limits, format_duration, main, token_cost

MODEL = "gpt-4o-mini"
ROOT = Path(__file__).resolve().parent.parent


class ManualClock:
    """A clock the test moves by hand (starts at a whole second)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_sim(clock: ManualClock) -> Iterator[Callable[..., FakeOpenAI]]:
    """Start simulators with the manual clock; all are stopped at the end of the test."""
    sims: list[FakeOpenAI] = []

    def make(**kwargs: Any) -> FakeOpenAI:
        kwargs.setdefault("clock", clock)
        sim = FakeOpenAI(**kwargs)
        sim.start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        sim.stop()


@pytest.fixture
def clients() -> Iterator[Callable[[FakeOpenAI, str], OpenAI]]:
    """SDK clients without retries, closed at the end of the test."""
    made: list[OpenAI] = []

    def client(sim: FakeOpenAI, key: str) -> OpenAI:
        c = OpenAI(api_key=key, base_url=sim.base_url, max_retries=0)
        made.append(c)
        return c

    yield client
    for c in made:
        c.close()


def ask(client: OpenAI, text: str = "hi", model: str = MODEL, **kw: Any) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


def ask_raw(client: OpenAI, text: str = "hi", model: str = MODEL, **kw: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


def http(
    sim: FakeOpenAI, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """A raw HTTP call to the simulator: (status, headers, parsed JSON)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(sim.url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), json.loads(err.read())


def test_completion_shape_and_ratelimit_headers(make_sim, clients) -> None:
    sim = make_sim(keys={"k1": Limits(rpm=600, tpm=60_000)})
    text = "Please summarise this order from Acme Corp in Berlin."  # 54 chars -> 14 tokens
    raw = ask_raw(clients(sim, "k1"), text, max_tokens=20)
    h = raw.headers
    assert h["x-ratelimit-limit-requests"] == "600"
    assert h["x-ratelimit-limit-tokens"] == "60000"
    assert h["x-ratelimit-remaining-requests"] == "599"
    cost = math.ceil(len(text) / 4) + 20
    assert cost == token_cost([{"content": text}], 20, 16) == 34
    assert h["x-ratelimit-remaining-tokens"] == str(60_000 - cost)
    assert h["x-ratelimit-reset-requests"] == "100ms"  # 600/min refills one every 100 ms
    assert h["x-ratelimit-reset-tokens"] == "34ms"  # 1000 tokens/s
    assert h["x-request-id"].startswith("req_")

    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.system_fingerprint
    choice = completion.choices[0]
    assert choice.index == 0 and choice.finish_reason == "stop" and choice.logprobs is None
    assert choice.message.role == "assistant" and choice.message.refusal is None
    assert "Acme Corp" in choice.message.content
    usage = completion.usage
    assert usage.prompt_tokens == math.ceil(len(text) / 4)
    assert usage.completion_tokens == math.ceil(len(choice.message.content) / 4) <= 20
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    # Deterministic, and max_tokens caps the answer (finish_reason "length" as OpenAI does).
    again = ask(clients(sim, "k1"), text, max_tokens=20)
    assert again.choices[0].message.content == choice.message.content
    short = ask(clients(sim, "k1"), text, max_completion_tokens=2)
    assert short.usage.completion_tokens <= 2
    assert short.choices[0].finish_reason == "length"


def test_models_and_unknown_route(make_sim, clients) -> None:
    sim = make_sim(keys=["k1"], model_limits={"main-model": Limits(rpm=5)})
    ids = [m.id for m in clients(sim, "k1").models.list()]
    assert "main-model" in ids and MODEL in ids
    status, _, body = http(sim, "POST", "/v1/nope", {}, key="k1")
    assert status == 404 and body["error"]["type"] == "invalid_request_error"
    status, _, body = http(sim, "POST", "/v1/chat/completions", {"model": MODEL}, key="k1")
    assert status == 400 and body["error"]["param"] == "messages"


def test_unknown_key_is_401(make_sim, clients) -> None:
    sim = make_sim(keys={"k1": Limits(rpm=10)})
    with pytest.raises(openai.AuthenticationError) as exc:
        ask(clients(sim, "wrong-key-123"))
    assert exc.value.status_code == 401
    assert exc.value.code == "invalid_api_key"
    assert exc.value.type == "invalid_request_error"
    status, headers, body = http(
        sim, "POST", "/v1/chat/completions", {"model": MODEL, "messages": []}
    )
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "x-request-id" in {k.lower() for k in headers}
    assert sim.stats()["totals"]["unauthorized"] == 2


def test_rpm_limit_gives_429_with_retry_after(make_sim, clients, clock) -> None:
    sim = make_sim(keys={"k1": Limits(rpm=2, tpm=100_000)}, refused_spend=False)
    client = clients(sim, "k1")
    ask(client)
    ask(client)
    with pytest.raises(openai.RateLimitError) as exc:
        ask(client)
    err = exc.value
    assert err.status_code == 429
    assert err.code == "rate_limit_exceeded"
    assert err.type == "requests"
    assert "on requests per min (RPM): Limit 2, Used 2, Requested 1" in err.message
    assert "Please try again in 30s" in err.message
    h = err.response.headers
    assert h["retry-after-ms"] == "30000"  # 2 rpm refills one request every 30 s
    assert h["retry-after"] == "30"
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"] == "1m0s"

    clock.advance(29.9)
    with pytest.raises(openai.RateLimitError) as exc:
        ask(client)
    assert exc.value.response.headers["retry-after-ms"] == "100"
    assert exc.value.response.headers["retry-after"] == "1"
    clock.advance(0.1)
    raw = ask_raw(client)  # the rejections consumed nothing
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    stats = sim.stats()["keys"]["k1"]
    assert stats["accepted"] == 3 and stats["rejected_429"] == 2


def test_tpm_limit_enforced(make_sim, clients, clock) -> None:
    sim = make_sim(keys={"k1": Limits(rpm=1000, tpm=120)})
    client = clients(sim, "k1")
    text = "x" * 200  # 50 prompt tokens + 30 max_tokens = 80
    raw = ask_raw(client, text, max_tokens=30)
    assert raw.headers["x-ratelimit-remaining-tokens"] == "40"
    with pytest.raises(openai.RateLimitError) as exc:
        ask(client, text, max_tokens=30)
    err = exc.value
    assert err.code == "rate_limit_exceeded" and err.type == "tokens"
    assert "tokens per min (TPM): Limit 120, Used 80, Requested 80" in err.message
    # 40 tokens missing at 2 tokens/s
    assert err.response.headers["retry-after-ms"] == "20000"
    # The default max_tokens (16) counts when the request sets none: 50 + 16 > 40 left.
    with pytest.raises(openai.RateLimitError):
        ask(client, text)
    ask(client, "x" * 96)  # 24 + 16 = 40 fits exactly
    # A request larger than the whole bucket can never pass.
    clock.advance(120)
    with pytest.raises(openai.RateLimitError) as exc:
        ask(client, "x" * 600, max_tokens=10)
    assert exc.value.message.startswith("Error code: 429 - Request too large")
    assert "retry-after-ms" not in exc.value.response.headers
    clock.advance(20)
    ask(client, text, max_tokens=30)
    stats = sim.stats()["keys"]["k1"]
    assert stats["accepted"] == 3
    assert stats["rejected_429"] == 3
    assert stats["tokens_accepted"] == 80 + 40 + 80


def test_insufficient_quota(make_sim, clients) -> None:
    sim = make_sim(keys={"k1": None, "k2": Limits(rpm=10)}, quota_exhausted_keys=["k2"])
    with pytest.raises(openai.RateLimitError) as exc:
        ask(clients(sim, "k2"))
    assert exc.value.code == "insufficient_quota"
    assert exc.value.type == "insufficient_quota"
    assert "exceeded your current quota" in exc.value.message
    assert exc.value.response.headers["x-ratelimit-remaining-requests"] == "10"  # nothing used
    ask(clients(sim, "k1"))
    sim.configure(quota_exhausted_keys=[])
    ask(clients(sim, "k2"))
    stats = sim.stats()["keys"]
    assert stats["k2"]["insufficient_quota"] == 1 and stats["k2"]["accepted"] == 1


def test_injected_server_errors(make_sim, clients) -> None:
    sim = make_sim(keys={"k1": Limits(rpm=100)}, error_rate=1.0)
    with pytest.raises(openai.InternalServerError) as exc:
        ask(clients(sim, "k1"))
    assert exc.value.status_code == 500
    assert exc.value.type == "server_error"
    # Injected 500s still went through the limiter, so they carry its headers.
    assert exc.value.response.headers["x-ratelimit-remaining-requests"] == "99"
    status, _, body = http(sim, "POST", "/_control/config", {"error_rate": 0.0})
    assert status == 200 and body["error_rate"] == 0.0
    ask(clients(sim, "k1"))
    stats = sim.stats()["keys"]["k1"]
    assert stats["errors_500"] == 1 and stats["ok"] == 1 and stats["accepted"] == 2


def test_limit_cut_mid_run(make_sim, clients) -> None:
    sim = make_sim(keys={"k1": Limits(rpm=10, tpm=10_000), "k2": Limits(rpm=10)},
                   refused_spend=False)
    c1, c2 = clients(sim, "k1"), clients(sim, "k2")
    ask(c1)
    ask(c1)  # 8 requests left in the bucket
    sim.configure(keys={"k1": {"rpm": 3}})  # only rpm changes, tpm stays
    assert sim.config()["keys"]["k1"] == {"rpm": 3, "tpm": 10_000}
    raw = ask_raw(c1)
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"  # clamped to 3, then one used
    ask(c1)
    ask(c1)
    with pytest.raises(openai.RateLimitError):
        ask(c1)
    # The same cut over the control route, on another key.
    ask(c2)
    status, _, _ = http(sim, "POST", "/_control/config", {"keys": {"k2": {"rpm": 1}}})
    assert status == 200
    raw = ask_raw(c2)  # the bucket held 9, clamped to 1
    assert raw.headers["x-ratelimit-limit-requests"] == "1"
    with pytest.raises(openai.RateLimitError) as exc:
        ask(c2)
    assert exc.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    # Raising a limit keeps what was used: 1 used of 1 becomes 1 used of 5.
    sim.configure(keys={"k2": Limits(rpm=5)})
    raw = ask_raw(c2)
    assert raw.headers["x-ratelimit-remaining-requests"] == "3"
    status, _, body = http(sim, "POST", "/_control/config", {"bogus": 1})
    assert status == 400 and "bogus" in body["error"]
    status, _, body = http(
        sim, "POST", "/_control/config", {"latency": 1, "keys": {"k2": {"rpm": 0}}}
    )
    assert status == 400 and sim.config()["latency"] == 0.0  # nothing applied


def test_per_model_limits(make_sim, clients) -> None:
    sim = make_sim(
        keys={"k1": Limits(rpm=100, tpm=100_000)},
        model_limits={"main": Limits(rpm=1, tpm=1_000)},
    )
    client = clients(sim, "k1")
    raw = ask_raw(client, model="main")
    assert raw.headers["x-ratelimit-limit-requests"] == "1"
    with pytest.raises(openai.RateLimitError) as exc:
        ask(client, model="main")
    assert "Rate limit reached for main " in exc.value.message
    for _ in range(5):
        raw = ask_raw(client, model="fallback")
    assert raw.headers["x-ratelimit-limit-requests"] == "100"
    assert raw.headers["x-ratelimit-remaining-requests"] == "95"
    # A second key has its own bucket for the limited model.
    sim.configure(keys={"k2": None})
    ask(clients(sim, "k2"), model="main")
    # Per key and model override beats the model override.
    sim.configure(key_model_limits={"k2": {"main": {"rpm": 50}}})
    ask(clients(sim, "k2"), model="main")
    stats = sim.stats()
    assert stats["models"]["main"]["accepted"] == 3
    assert stats["models"]["main"]["rejected_429"] == 1
    assert stats["models"]["fallback"]["accepted"] == 5
    assert stats["pairs"]["k1"]["main"]["rejected_429"] == 1


def test_json_answers(make_sim, clients) -> None:
    sim = make_sim(keys=["k1"])
    client = clients(sim, "k1")
    text = "I love the new dashboard from Acme Corp. Support in Berlin was great and fast."
    reply = ask(client, text, response_format={"type": "json_object"})
    doc = json.loads(reply.choices[0].message.content)
    assert set(doc) == {"summary", "sentiment", "topics", "entities"}
    assert doc["sentiment"] == "positive"
    assert isinstance(doc["summary"], str) and doc["summary"]
    assert all(isinstance(t, str) for t in doc["topics"])
    assert "Acme Corp" in doc["entities"] and "Berlin" in doc["entities"]

    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    bad = ask(client, "The app crashed again, terrible and slow.", response_format=schema)
    assert json.loads(bad.choices[0].message.content)["sentiment"] == "negative"
    # Tight max_tokens: the JSON shrinks to fit rather than break.
    small = ask(client, text, response_format={"type": "json_object"}, max_tokens=25)
    assert small.usage.completion_tokens <= 25
    assert set(json.loads(small.choices[0].message.content)) == set(doc)

    sim.configure(invalid_json_rate=1.0)
    broken = ask(client, text, response_format={"type": "json_object"})
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.choices[0].message.content)
    ask(client, text)  # plain text answers are not affected


def test_stats_and_reset(make_sim, clients, clock) -> None:
    sim = make_sim(keys={"k1": Limits(rpm=3, tpm=1_000), "k2": Limits(rpm=1)})
    c1, c2 = clients(sim, "k1"), clients(sim, "k2")
    for _ in range(3):
        ask(c1, "abcd", max_tokens=4)  # 1 + 4 = 5 tokens
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            ask(c1, "abcd", max_tokens=4)
    clock.advance(1)
    ask(c2)
    with pytest.raises(openai.RateLimitError):
        ask(c2)

    stats = sim.stats()
    assert stats["keys"]["k1"]["accepted"] == 3 and stats["keys"]["k1"]["rejected_429"] == 2
    assert stats["keys"]["k1"]["tokens_accepted"] == 15
    assert stats["keys"]["k2"]["accepted"] == 1 and stats["keys"]["k2"]["rejected_429"] == 1
    assert stats["models"][MODEL]["accepted"] == 4
    assert stats["totals"]["accepted"] == 4 and stats["totals"]["rejected_429"] == 3
    assert stats["timeline"]["k1"] == [[1_000_000, 3, 15]]
    assert stats["timeline"]["k2"] == [[1_000_001, 1, 17]]
    assert stats["timeline_by_model"]["k1"][MODEL] == [[1_000_000, 3, 15]]
    assert sim.max_window("k1") == (3, 15)
    assert stats["max_in_flight"] >= 1 and stats["in_flight"] == 0

    status, _, over_http = http(sim, "GET", "/_control/stats")
    assert status == 200 and over_http["keys"] == stats["keys"]
    status, _, _ = http(sim, "POST", "/_control/reset", {})
    assert status == 200
    assert sim.stats()["totals"]["accepted"] == 0
    ask(c2)  # buckets are full again


def test_sliding_window(make_sim, clients, clock) -> None:
    sim = make_sim(keys={"k1": Limits(rpm=60)}, refused_spend=False)
    client = clients(sim, "k1")
    accepted = 0
    while accepted < 70:
        try:
            ask(client, "abcd", max_tokens=1)
            accepted += 1
        except openai.RateLimitError:
            clock.advance(1.0)
    # A full bucket plus one refill a second: more than the limit fits in one minute.
    requests, tokens = sim.max_window("k1", seconds=60)
    assert requests == 70 and tokens == 140
    assert sim.max_window("k1", MODEL, seconds=1) == (60, 120)


def test_many_concurrent_requests_with_latency() -> None:
    """Several hundred in-flight requests with latency are served concurrently.

    A raw aiohttp client keeps the client side cheap; the SDK's own overhead would dominate.
    """
    count, latency = 300, 0.4

    async def run(base_url: str) -> tuple[float, set[str]]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> str:
                async with session.post(
                    base_url + "/chat/completions",
                    json={"model": MODEL, "messages": [{"role": "user", "content": f"job {i}"}]},
                    headers={"Authorization": "Bearer k1"},
                ) as resp:
                    assert resp.status == 200
                    return (await resp.json())["choices"][0]["message"]["content"]

            started = time.monotonic()
            contents = await asyncio.gather(*(one(i) for i in range(count)))
            return time.monotonic() - started, set(contents)

    with FakeOpenAI(keys={"k1": Limits(rpm=10_000, tpm=1_000_000)}, latency=latency) as sim:
        elapsed, contents = asyncio.run(run(sim.base_url))
        stats = sim.stats()
    assert len(contents) == count
    assert stats["keys"]["k1"]["ok"] == count
    assert stats["max_in_flight"] >= count // 2
    # Served one after another, 300 answers would take 120 s; concurrently about 0.4 s, and a
    # few seconds on a machine busy with other test processes.
    assert elapsed < latency * 15


def test_async_sdk_client(make_sim) -> None:
    sim = make_sim(keys={"k1": Limits(rpm=5)}, latency=0.05)

    async def run() -> list[str]:
        async with AsyncOpenAI(api_key="k1", base_url=sim.base_url, max_retries=0) as client:
            results = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": f"job {i}"}]
                    )
                    for i in range(7)
                ),
                return_exceptions=True,
            )
        return [type(r).__name__ for r in results]

    kinds = asyncio.run(run())
    assert kinds.count("ChatCompletion") == 5 and kinds.count("RateLimitError") == 2
    assert sim.stats()["max_in_flight"] >= 2


def test_format_duration() -> None:
    assert format_duration(0) == "0s"
    assert format_duration(0.12) == "120ms"
    assert format_duration(1) == "1s"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"
    assert format_duration(3723.4) == "1h2m3.4s"


def test_limits_validation() -> None:
    with pytest.raises(ValueError):
        Limits(rpm=0)
    with pytest.raises(ValueError):
        FakeOpenAI(keys=["k"], error_rate=2)


def test_cli(tmp_path) -> None:
    with pytest.raises(SystemExit):
        main(["--key", "k1:x:1"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobqueue.sim", "--port", "0", "--key", "k1:5:1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        while "listening on" not in line:
            assert line, "the CLI exited before listening"
            line = proc.stdout.readline()
        base_url = line.split("listening on ")[1].strip()
        with OpenAI(api_key="k1", base_url=base_url, max_retries=0) as client:
            raw = ask_raw(client)
        assert raw.headers["x-ratelimit-limit-requests"] == "5"
        assert raw.headers["x-ratelimit-limit-tokens"] == "1000"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()


def test_a_refused_request_still_spends_the_request_budget(make_sim, clients, clock) -> None:
    """As at real providers: knocking while limited keeps the key limited."""
    sim = make_sim(keys={"k1": Limits(rpm=60)})
    client = clients(sim, "k1")
    for _ in range(60):
        ask(client, "abcd", max_tokens=1)
    for _ in range(3):  # three refused requests, each spending one
        with pytest.raises(openai.RateLimitError):
            ask(client, "abcd", max_tokens=1)
    clock.advance(3.0)  # three requests' worth of refill pays the debt, and no more
    with pytest.raises(openai.RateLimitError) as exc:
        ask(client, "abcd", max_tokens=1)
    assert int(exc.value.response.headers["retry-after"]) >= 1
    clock.advance(2.0)  # the fourth refusal's request, then one to spend
    ask(client, "abcd", max_tokens=1)
    assert sim.stats()["totals"]["rejected_429"] == 4


def test_a_key_scoped_provider_counts_every_model_against_the_key(make_sim, clients) -> None:
    sim = make_sim(keys={"k1": Limits(rpm=2)}, limit_scope="key")
    client = clients(sim, "k1")
    client.chat.completions.create(model="gpt-4o-mini", max_tokens=1,
                                   messages=[{"role": "user", "content": "a"}])
    client.chat.completions.create(model="gpt-4o", max_tokens=1,
                                   messages=[{"role": "user", "content": "b"}])
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="gpt-4.1-mini", max_tokens=1,
                                       messages=[{"role": "user", "content": "c"}])
    assert "Rate limit reached in organization" in exc.value.message  # names no model
    per_model = make_sim(keys={"k1": Limits(rpm=2)})  # the default: a budget per model
    c2 = clients(per_model, "k1")
    for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o", "gpt-4o"):
        c2.chat.completions.create(model=model, max_tokens=1,
                                   messages=[{"role": "user", "content": "a"}])
