"""Property-based: whatever JSON-ish value a caller passes, the Client either refuses it with
InvalidJob or Postgres gives exactly that value back.

Hostile values mix in what Postgres or the worker cannot take: NUL, lone surrogates, NaN and
infinities, nesting around and beyond MAX_JSON_DEPTH, integers too long to print.

One allowance, jsonb's and not ours: jsonb keeps numbers as decimals, so a float that denotes an
integer (1e308, 1.5e20) comes back as that int. `same` accepts it when float(back) == sent.
"""

from __future__ import annotations

import math
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobqueue.errors import InvalidJob
from jobqueue.jobs import MAX_JSON_DEPTH, JobSpec

# Pieces of text: any code point (surrogates included), and the troublemakers by name: NUL, a
# lone or a paired-up surrogate, a written-out \u0000, a control character.
HOSTILE_PIECES = st.sampled_from(["\x00", "\ud800", "\udbff\udc00", "\udfff", "\\u0000", "\x01"])
ANY_TEXT = st.lists(st.characters(exclude_categories=()) | HOSTILE_PIECES,
                    max_size=8).map("".join)
CLEAN_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                     max_size=12)  # Cs: surrogates


def json_values(text, numbers):
    scalars = st.none() | st.booleans() | numbers | text
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(text, inner, max_size=4), max_leaves=20)


def nest(value, depth: int):
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


HOSTILE_NUMBERS = st.integers() | st.floats()  # unbounded ints; NaN and ±inf included
CLEAN_NUMBERS = st.integers(-(10**30), 10**30) | st.floats(allow_nan=False, allow_infinity=False)
HOSTILE = st.one_of(
    json_values(ANY_TEXT, HOSTILE_NUMBERS),
    st.builds(nest, json_values(ANY_TEXT, HOSTILE_NUMBERS),
              st.integers(MAX_JSON_DEPTH - 5, MAX_JSON_DEPTH + 5) | st.integers(0, 1200)),
)
CLEAN = st.builds(nest, json_values(CLEAN_TEXT, CLEAN_NUMBERS), st.integers(0, MAX_JSON_DEPTH - 5))

PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def same(back, sent) -> bool:
    """Exact equality, types included, except jsonb's decimal numbers (see the docstring)."""
    if isinstance(sent, float):
        return (isinstance(back, float) and back == sent) or (
            type(back) is int and math.isfinite(sent) and float(back) == sent)
    if type(back) is not type(sent):
        return False
    if isinstance(sent, dict):
        return back.keys() == sent.keys() and all(same(back[k], sent[k]) for k in sent)
    if isinstance(sent, list):
        return len(back) == len(sent) and all(map(same, back, sent))
    return back == sent


def waiting(client) -> int:
    return sum(row["waiting"] for row in client.status())


def expected(payload, path: str):
    """What comes back: enqueue(kind, None) means "no payload", {} (documented)."""
    return {} if payload is None and path == "enqueue" else payload


def round_trips_or_refused(client, path: str, payloads: list) -> None:
    before = waiting(client)
    try:
        ids = ENQUEUE[path](client)(payloads)
    except InvalidJob as exc:
        assert "payload" in str(exc) or "metadata" in str(exc), exc
        assert waiting(client) == before  # nothing of a refused call was enqueued
        return
    for job_id, payload in zip(ids, payloads, strict=True):
        back = client.get(job_id).payload
        assert same(back, expected(payload, path)), (back, payload)


@pytest.mark.parametrize("path", ["enqueue", "enqueue_many", "enqueue_payloads", "submit_batch"])
class TestHostileJson:
    @PROPERTY
    @given(payloads=st.lists(HOSTILE, min_size=1, max_size=3))
    def test_refused_or_round_trips_exactly(self, client, path, payloads):
        """Every enqueue path: InvalidJob (and nothing enqueued) or the exact value back."""
        round_trips_or_refused(client, path, payloads[:1] if path == "enqueue" else payloads)

    @PROPERTY
    @given(payloads=st.lists(CLEAN, min_size=1, max_size=3))
    def test_clean_values_always_round_trip(self, client, path, payloads):
        """Valid JSON within the depth limit is never refused, and comes back exactly."""
        payloads = payloads[:1] if path == "enqueue" else payloads
        ids = ENQUEUE[path](client)(payloads)
        for job_id, payload in zip(ids, payloads, strict=True):
            assert same(client.get(job_id).payload, expected(payload, path))


ENQUEUE = {
    "enqueue": lambda c: lambda ps: [c.enqueue("k", p) for p in ps],
    "enqueue_many": lambda c: lambda ps: c.enqueue_many(JobSpec("k", p) for p in ps),
    "enqueue_payloads": lambda c: lambda ps: c.enqueue_payloads("k", ps),
    "submit_batch": lambda c: lambda ps: _batch_ids(c, ps),
}


def _batch_ids(client, payloads) -> list[int]:
    batch_id, _ = client.submit_batch((JobSpec("k", p) for p in payloads), queue="b")
    return [row["id"] for row in client.batch_jobs(batch_id)]


class TestHostileFields:
    @PROPERTY
    @given(kind=ANY_TEXT, queue=ANY_TEXT, key=ANY_TEXT, owner=ANY_TEXT,
           metadata=st.dictionaries(ANY_TEXT, json_values(ANY_TEXT, HOSTILE_NUMBERS),
                                    max_size=3))
    def test_text_fields_and_metadata(self, client, kind, queue, key, owner, metadata):
        """kind, queue, idempotency key, owner and metadata: InvalidJob or stored exactly."""
        key += uuid.uuid4().hex  # a key seen in an earlier example would return that job
        try:
            job_id = client.enqueue(kind or "k", {}, queue=queue or None, idempotency_key=key,
                                    owner=owner, metadata=metadata)
        except InvalidJob as exc:
            assert str(exc).split(":")[0].split(".")[0] in {
                "kind", "queue", "idempotency_key", "owner", "metadata", "job 0"}, exc
            return
        job = client.get(job_id)
        assert (job.kind, job.queue, job.idempotency_key, job.owner) == (
            kind or "k", queue or "default", key, owner)
        assert same(job.metadata, metadata)
