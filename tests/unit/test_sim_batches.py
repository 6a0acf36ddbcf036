"""The simulator's Files and Batch API through the openai SDK's own methods: the status
steps, the output and error files, injected expiry, failure and 500s, cancellation, the
provider's limits, and auth."""

from __future__ import annotations

import json

import openai
import pytest

from jobqueue.sim.server import FakeOpenAI

TERMINAL = ("completed", "failed", "expired", "cancelled")


@pytest.fixture
def sim():
    with FakeOpenAI(keys=["k"]) as server:
        yield server


@pytest.fixture
def client(sim):
    return openai.OpenAI(api_key="k", base_url=sim.base_url, max_retries=0)


def upload(client, n: int, **line) -> str:
    data = "".join(json.dumps({"custom_id": f"r{i}", "method": "POST",
                               "url": "/v1/chat/completions",
                               "body": {"model": "m", "max_tokens": 8,
                                        "messages": [{"role": "user", "content": f"q{i}"}]}}
                              | line) + "\n" for i in range(n))
    return client.files.create(file=("in.jsonl", data.encode()), purpose="batch").id


def run(client, file_id: str):
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    seen = [batch.status]
    while batch.status not in TERMINAL:
        batch = client.batches.retrieve(batch.id)
        seen.append(batch.status)
    return batch, seen


def lines(client, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_a_batch_steps_to_completed_with_its_answers_and_errors(sim, client):
    sim.configure(batch_error_every=2)
    batch, seen = run(client, upload(client, 4))
    assert seen == ["validating", "in_progress", "finalizing", "completed"]
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    out, err = lines(client, batch.output_file_id), lines(client, batch.error_file_id)
    assert [r["custom_id"] for r in out] == ["r0", "r2"]
    assert out[0]["response"]["status_code"] == 200
    assert out[0]["response"]["body"]["usage"]["total_tokens"] > 0
    assert [(r["custom_id"], r["response"]["status_code"]) for r in err] == [("r1", 500),
                                                                           ("r3", 500)]
    assert client.files.retrieve(batch.input_file_id).purpose == "batch"
    assert sim.stats()["batches"]["requests"] == 4
    assert sim.stats()["totals"]["ok"] == 0  # not the realtime API's


def test_expiry_keeps_the_processed_part(sim, client):
    sim.configure(batch_outcome="expired", batch_processed=1)
    batch, seen = run(client, upload(client, 3))
    assert seen[-1] == "expired" and batch.request_counts.completed == 1
    err = lines(client, batch.error_file_id)
    assert [(r["custom_id"], r["error"]["code"]) for r in err] == [
        ("r1", "batch_expired"), ("r2", "batch_expired")]


def test_cancel_and_injected_failure_and_limits(sim, client):
    batch = client.batches.create(input_file_id=upload(client, 2),
                                  endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.cancel(batch.id).status == "cancelling"
    assert client.batches.retrieve(batch.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)

    sim.configure(batch_max_requests=2)
    failed, _ = run(client, upload(client, 3))
    assert failed.status == "failed" and "more than the maximum of 2" in \
        failed.errors.data[0].message
    sim.configure(batch_max_requests=50_000, batch_outcome="failed")
    assert run(client, upload(client, 1))[0].status == "failed"

    sim.configure(batch_max_file_bytes=10)
    with pytest.raises(openai.BadRequestError, match="too large"):
        upload(client, 1)


def test_bad_input_and_auth(sim, client):
    sim.configure(batch_outcome="completed")
    bad = client.files.create(file=("x.jsonl", b'{"custom_id": "a"}\n'), purpose="batch")
    assert run(client, bad.id)[0].status == "failed"
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    stranger = openai.OpenAI(api_key="wrong", base_url=sim.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.files.create(file=("x.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(ValueError, match="batch_outcome"):
        sim.configure(batch_outcome="later")
