"""What the client refuses before Postgres or a worker would: each case names the field and
the place inside it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from jobqueue.errors import InvalidJob
from jobqueue.jobs import MAX_JSON_DEPTH, JobSpec, to_json

NOW = datetime.now(UTC)


def nested(depth: int, leaf=1):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def refused(spec: JobSpec) -> str:
    with pytest.raises(InvalidJob) as err:
        spec.validated_row("default", 5, NOW)
    return str(err.value)


class TestPayload:
    @pytest.mark.parametrize(("payload", "message"), [
        ({"to": "a\x00b"}, "payload.to: contains a NUL character"),
        ({"a\x00": 1}, "payload: key 'a\\x00': contains a NUL character"),
        ([1, "\ud800"], "payload[1]: contains a lone surrogate (U+D800)"),
        ({"x": [float("nan")]}, "payload.x[0]: nan is not a JSON number"),
        ({"x": float("-inf")}, "payload.x: -inf is not a JSON number"),
        (nested(MAX_JSON_DEPTH + 1), f"nested deeper than {MAX_JSON_DEPTH} levels"),
        (nested(985), f"nested deeper than {MAX_JSON_DEPTH} levels"),
        (nested(100_000), f"nested deeper than {MAX_JSON_DEPTH} levels"),
        ({"x": object()}, "payload: not JSON-serialisable"),
    ])
    def test_refused_with_the_place_named(self, payload, message):
        """NUL, lone surrogates, NaN/Infinity, too deep, not JSON: InvalidJob saying where."""
        assert message in refused(JobSpec("k", payload))

    def test_the_deepest_allowed_payload_passes(self):
        """Exactly MAX_JSON_DEPTH levels is fine, and a worker can decode it."""
        encoded = to_json(nested(MAX_JSON_DEPTH))
        assert json.loads(encoded) == nested(MAX_JSON_DEPTH)

    def test_look_alikes_are_not_refused(self):
        """A backslash-u-0000 written out, brackets inside strings, big finite floats: fine."""
        payload = {"text": "\\u0000", "brackets": "[" * 500, "big": 1e308, "emoji": "😀"}
        assert json.loads(to_json(payload)) == payload

    def test_metadata_is_checked_the_same_way(self):
        """metadata names itself."""
        assert "metadata.a: contains a NUL" in refused(JobSpec("k", {}, metadata={"a": "\x00"}))


class TestTextFields:
    @pytest.mark.parametrize("field", ["kind", "queue", "idempotency_key", "owner"])
    @pytest.mark.parametrize(("text", "problem"), [
        ("a\x00", "NUL character"), ("\udfff", "lone surrogate (U+DFFF)")])
    def test_text_postgres_cannot_store_is_refused(self, field, text, problem):
        """NUL and lone surrogates in kind, queue, idempotency key or owner."""
        options = {"kind": "k", field: text}
        message = refused(JobSpec(**options))
        assert message.startswith(f"{field}: contains a") and problem in message

    def test_an_empty_idempotency_key_is_refused(self):
        """"" used to mean no key at all, silently; batch files already refused it."""
        assert refused(JobSpec("k", idempotency_key="")).startswith("idempotency_key: ")

    def test_owner_must_be_a_string(self):
        """owner was not checked at all before."""
        assert refused(JobSpec("k", owner=42)) == "owner: must be a string, got int"
