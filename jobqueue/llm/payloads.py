"""What the built-in LLM kinds accept as payload (`chat`, `analyze`, `embed`), checked twice: at
enqueue, where a bad payload is refused with a message naming the field and nothing is
enqueued (CLI, HTTP API), and again on the worker, where it ends the job dead (Permanent).

This module imports neither openai nor the database, so the CLI and the web app can use it.
"""

from __future__ import annotations

from typing import Any

from jobqueue.llm.platforms import Platform
from jobqueue.tasks import Permanent

API_PARAMS = ("max_tokens", "temperature", "top_p", "seed", "response_format", "stop",
              "presence_penalty", "frequency_penalty")
# `fallback: false` forbids the platform's fallback model for this job (a batch sets it on
# every row): the job waits for the main model however long the provider limits it.
# `sample` numbers the answers of a fan-out with --samples N (jobqueue/batches/specs.py); the
# call ignores it.
CHAT_FIELDS = {"prompt", "messages", "model", "cache", "metadata", "fallback", "sample",
               *API_PARAMS}
ANALYZE_FIELDS = {"text", "model", "max_tokens", "cache", "metadata", "fallback"}
SENTIMENTS = ("positive", "neutral", "negative")

ANALYZE_INSTRUCTIONS = (
    "Analyse the user's text. Answer with one JSON object and nothing else, with exactly these "
    "keys: summary (string, at most three sentences), sentiment (one of positive, neutral, "
    "negative), topics (list of short strings), entities (list of names of people, "
    "organisations, places or products).")


def chat_request(payload: Any, platform: Platform) -> dict:
    """The API request for a chat job's payload; Permanent if the payload is unusable."""
    if not isinstance(payload, dict):
        raise Permanent("payload: must be an object with prompt or messages")
    unknown = set(payload) - CHAT_FIELDS
    if unknown:
        raise Permanent(f"payload: unknown field(s) {', '.join(sorted(unknown))}")
    if ("prompt" in payload) == ("messages" in payload):
        raise Permanent("payload: give exactly one of prompt or messages")
    if "prompt" in payload:
        if not isinstance(payload["prompt"], str) or not payload["prompt"].strip():
            raise Permanent("payload.prompt: must be a non-empty string")
        messages = [{"role": "user", "content": payload["prompt"]}]
    else:
        messages = payload["messages"]
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and "role" in m for m in messages):
            raise Permanent("payload.messages: must be a non-empty list of {role, content}")
    if payload.get("fallback") not in (None, True, False):
        raise Permanent("payload.fallback: must be true or false")
    request = {"model": payload.get("model") or platform.model, "messages": messages,
               "max_tokens": payload.get("max_tokens") or platform.max_tokens}
    for name in API_PARAMS:
        if payload.get(name) is not None and name != "max_tokens":
            request[name] = payload[name]
    return request


def check_analyze(payload: Any) -> None:
    """Permanent, naming the field, if an analyze payload is unusable."""
    if not isinstance(payload, dict) or set(payload) - ANALYZE_FIELDS:
        raise Permanent(f"payload: expected fields {', '.join(sorted(ANALYZE_FIELDS))}")
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        raise Permanent("payload.text: must be a non-empty string")
    if payload.get("fallback") not in (None, True, False):
        raise Permanent("payload.fallback: must be true or false")


EMBED_FIELDS = {"input", "model", "dimensions", "metadata"}
MAX_EMBED_INPUTS = 100_000


def embed_tokens(text: str) -> int:
    """What providers count for one embedding input: characters / 4, rounded up."""
    return -(-len(text) // 4)


def check_embed(payload: Any, platform: Platform) -> tuple[list[str], str, int | None]:
    """(inputs, model, dimensions) of an embed payload; Permanent naming the field if not."""
    if not isinstance(payload, dict) or set(payload) - EMBED_FIELDS:
        raise Permanent(f"payload: expected fields {', '.join(sorted(EMBED_FIELDS))}")
    inputs = payload.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise Permanent("payload.input: required, a string or a non-empty list of strings")
    if len(inputs) > MAX_EMBED_INPUTS:
        raise Permanent(f"payload.input: {len(inputs):,} inputs, over the limit of "
                        f"{MAX_EMBED_INPUTS:,} per job")
    for i, text in enumerate(inputs):
        if not isinstance(text, str) or not text.strip():
            raise Permanent(f"payload.input[{i}]: must be a non-empty string")
    model = payload.get("model") or platform.embedding_model
    if not isinstance(model, str):
        raise Permanent("payload.model: must be a string")
    dimensions = payload.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(
            dimensions, int) or not 1 <= dimensions <= 3072):
        raise Permanent("payload.dimensions: must be an integer from 1 to 3072")
    return inputs, model, dimensions


def embed_groups(inputs: list[str], per_call: int, max_tokens: int) -> list[list[str]]:
    """The inputs cut into calls of at most `per_call` inputs and `max_tokens` tokens (a
    single input bigger than that goes alone)."""
    groups: list[list[str]] = []
    current: list[str] = []
    tokens = 0
    for text in inputs:
        cost = embed_tokens(text)
        if current and (len(current) >= per_call or tokens + cost > max_tokens):
            groups.append(current)
            current, tokens = [], 0
        current.append(text)
        tokens += cost
    if current:
        groups.append(current)
    return groups


CHECKED_KINDS = ("chat", "analyze", "embed")


def check(kind: str, payload: Any, platform: Platform) -> None:
    """Permanent if `payload` cannot make a call of this built-in kind; other kinds (the
    user's own tasks on a platform's queue, `document`) are not checked here."""
    if kind == "chat":
        chat_request(payload, platform)
    elif kind == "analyze":
        check_analyze(payload)
    elif kind == "embed":
        check_embed(payload, platform)
