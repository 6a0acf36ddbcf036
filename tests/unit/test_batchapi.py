"""The Batch API's pure parts (jobqueue/llm/batchapi.py): how jobs are cut into input files,
and what each line of an output or error file makes of its job."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue.llm.batchapi import BatchApiError, outcome, request_line, split
from jobqueue.llm.platforms import Platform


@given(sizes=st.lists(st.integers(1, 50), max_size=60), max_requests=st.integers(1, 10),
       max_bytes=st.integers(50, 200))
def test_split_keeps_order_and_both_limits(sizes, max_requests, max_bytes):
    lines = [(i, b"x" * n) for i, n in enumerate(sizes)]
    files = list(split(lines, max_requests, max_bytes))
    assert [i for f in files for i in f] == list(range(len(sizes)))
    for f in files:
        assert 1 <= len(f) <= max_requests
        assert sum(sizes[i] for i in f) <= max_bytes
    # no file could have taken the next file's first line
    for f, nxt in itertools.pairwise(files):
        assert len(f) == max_requests or sum(sizes[i] for i in f) + sizes[nxt[0]] > max_bytes


def test_a_request_larger_than_a_file_is_refused_naming_the_job():
    with pytest.raises(BatchApiError, match="job 7: its request is 11 bytes"):
        list(split([(7, b"x" * 11)], 10, 10))


def test_request_line_is_the_chat_request_a_worker_would_send():
    p = Platform("p", "http://127.0.0.1:1/v1", "m-main", ("K",), max_tokens=33)
    line = json.loads(request_line(5, {"prompt": "hi", "temperature": 0.5, "sample": 2}, p))
    assert line == {"custom_id": "5", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "m-main", "max_tokens": 33, "temperature": 0.5,
                             "messages": [{"role": "user", "content": "hi"}]}}


JOB = {"id": 9, "attempts": 1, "max_attempts": 2, "execution_id": "e", "payload": {},
       "cancel_requested": False}
ANSWER = {"model": "m", "choices": [{"message": {"content": "yes"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def response(status: int, body: dict) -> dict:
    return {"custom_id": "9", "response": {"status_code": status, "body": body}, "error": None}


@pytest.mark.parametrize(("job", "record", "status", "policy", "expected"), [
    (JOB, response(200, ANSWER), "completed", "requeue", ("finish", "succeeded", None)),
    (JOB, response(500, {"error": {"message": "oops"}}), "completed", "requeue",
     ("retry", None, "ProviderError")),
    (JOB | {"attempts": 2}, response(500, {}), "completed", "requeue",
     ("finish", "dead", "ProviderError")),
    (JOB, response(400, {"error": {"message": "bad"}}), "completed", "requeue",
     ("finish", "dead", "Permanent")),
    (JOB, {"custom_id": "9", "response": None, "error": {"code": "batch_expired"}},
     "expired", "requeue", ("retry", None, "BatchExpired")),
    (JOB, {"custom_id": "9", "response": None, "error": {"code": "batch_cancelled"}},
     "cancelled", "dead", ("finish", "dead", "BatchCancelled")),
    (JOB, None, "failed", "requeue", ("retry", None, "BatchNotRun")),
    (JOB | {"cancel_requested": True}, response(200, ANSWER), "completed", "requeue",
     ("finish", "cancelled", "JobCancelled")),
])
def test_outcome_of_each_kind_of_line(job, record, status, policy, expected):
    got = outcome(job, record, status, policy, "batch_1")
    assert (got.action, got.state, got.error and got.error["type"]) == expected
    if got.state == "succeeded":
        assert got.result["usage"]["total_tokens"] == 4
        assert (got.result["via"], got.result["provider_batch"]) == ("batch-api", "batch_1")
    if got.error:
        assert got.error["execution_id"] == "9:e" and got.error["attempt"] == job["attempts"]
