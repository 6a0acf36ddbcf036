"""The simulator's Files and Batch API (`/v1/files`, `/v1/batches`), as the openai SDK's
`client.files` and `client.batches` methods call them.

Only the chat endpoint can be batched. A batch's status moves one step each time it is
retrieved (validating -> in_progress -> finalizing -> completed): a test drives it by polling,
with no clock. What goes wrong is injected through FakeOpenAI.configure():

- batch_outcome: "completed" (default), "expired" or "failed" (the input is refused whole);
- batch_processed: how many requests (in file order) an expired or cancelled batch got through
  before it ended (default 0);
- batch_error_every: every Nth request (1-based, in file order) answers a 500 in the error file;
- batch_max_requests (default 50,000) and batch_max_file_bytes (default 200 MB): the provider's
  limits; a larger file is refused at upload (400), more requests fail the batch at validation;
- batch_download_seconds: how long a file's content takes to send (a large output file over
  a slow link; default 0); stats()["downloading"] counts the downloads under way.

Answers are the simulator's usual deterministic ones; batch requests do not draw from the
per-minute buckets (the provider gives batches their own pool) and are counted apart in
stats()["batches"].
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from typing import Any

from aiohttp import web

MAX_REQUESTS = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024
STEPS = ("validating", "in_progress", "finalizing", "completed")
OUTCOMES = ("completed", "expired", "failed")
ENDPOINT = "/v1/chat/completions"

SETTINGS: dict[str, type] = {
    "batch_outcome": str,
    "batch_processed": int,
    "batch_error_every": int,
    "batch_max_requests": int,
    "batch_max_file_bytes": int,
    "batch_download_seconds": float,
}


class BatchApi:
    """Files and batches held in memory; `answer(body)` makes one chat completion body."""

    def __init__(self, answer) -> None:
        self._answer = answer
        self._lock = threading.Lock()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.settings: dict[str, Any] = {
            "batch_outcome": "completed", "batch_processed": 0, "batch_error_every": 0,
            "batch_max_requests": MAX_REQUESTS, "batch_max_file_bytes": MAX_FILE_BYTES,
            "batch_download_seconds": 0.0}
        self.counts = {"files": 0, "created": 0, "requests": 0, "ok": 0, "errors": 0,
                       "expired": 0, "cancelled": 0, "downloading": 0}

    # -- configuration --------------------------------------------------------------------

    def check(self, changes: dict[str, Any]) -> dict[str, Any]:
        """The batch_* settings of a configure() call, checked (ValueError naming one)."""
        out = {}
        for name, kind in SETTINGS.items():
            if name not in changes:
                continue
            value = changes[name]
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)
                                or value < 0):
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
            if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 <= value <= 3600):
                raise ValueError(f"{name} must be a number of seconds from 0 to 3600, "
                                 f"got {value!r}")
            if name == "batch_outcome" and value not in OUTCOMES:
                raise ValueError(f"batch_outcome must be one of {', '.join(OUTCOMES)}")
            out[name] = value
        return out

    def apply(self, checked: dict[str, Any]) -> None:
        with self._lock:
            self.settings.update(checked)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    # -- routes ---------------------------------------------------------------------------

    def add_routes(self, app: web.Application, auth) -> None:
        """Mount the routes; `auth(request, headers)` is the simulator's key check."""
        self._auth = auth
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}", self._file)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches/{id}", self._retrieve)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)

    @staticmethod
    def _error(status: int, message: str, code: str | None = None,
               param: str | None = None) -> web.Response:
        return web.json_response({"error": {"message": message, "type": "invalid_request_error",
                                            "param": param, "code": code}}, status=status)

    def _authorized(self, request: web.Request) -> web.Response | None:
        found = self._auth(request, {})
        return found if isinstance(found, web.Response) else None

    async def _upload(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        if not request.content_type.startswith("multipart/"):
            return self._error(400, "Expected multipart/form-data with file and purpose.")
        purpose, name, data = None, "upload", b""
        limit = self.settings["batch_max_file_bytes"]
        reader = await request.multipart()
        async for part in reader:
            if part.name == "purpose":
                purpose = (await part.text()).strip()
            elif part.name == "file":
                name = part.filename or name
                data = await part.read()
                if len(data) > limit:
                    return self._error(400, f"File is too large: {len(data)} bytes, the maximum "
                                            f"is {limit} bytes.", "file_too_large", "file")
        if purpose not in ("batch", "batch_output", "assistants", "fine-tune"):
            return self._error(400, f"Invalid purpose: {purpose!r}.", param="purpose")
        file = self._store(name, purpose, data)
        return web.json_response(_public_file(file))

    def _store(self, name: str, purpose: str, data: bytes) -> dict[str, Any]:
        file = {"id": f"file-{uuid.uuid4().hex[:24]}", "filename": name, "purpose": purpose,
                "bytes": len(data), "created_at": int(time.time()), "data": data}
        with self._lock:
            self.files[file["id"]] = file
            self.counts["files"] += 1
        return file

    async def _file(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        file = self.files.get(request.match_info["id"])
        if file is None:
            return self._error(404, "No such File object.", param="id")
        return web.json_response(_public_file(file))

    async def _content(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        file = self.files.get(request.match_info["id"])
        if file is None:
            return self._error(404, "No such File object.", param="id")
        delay = self.settings["batch_download_seconds"]
        if delay:
            with self._lock:
                self.counts["downloading"] += 1
            try:
                await asyncio.sleep(delay)
            finally:
                with self._lock:
                    self.counts["downloading"] -= 1
        return web.Response(body=file["data"], content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return self._error(400, "The request body must be a JSON object.")
        file = self.files.get(body.get("input_file_id"))
        if file is None:
            return self._error(400, "The input file does not exist.", param="input_file_id")
        if body.get("endpoint") != ENDPOINT:
            return self._error(400, f"Only {ENDPOINT} can be batched here.", param="endpoint")
        if body.get("completion_window") != "24h":
            return self._error(400, "completion_window must be 24h.",
                               param="completion_window")
        now = int(time.time())
        batch = {
            "id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": ENDPOINT,
            "errors": None, "input_file_id": file["id"], "completion_window": "24h",
            "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": now, "in_progress_at": None, "expires_at": now + 86400,
            "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        with self._lock:
            self.batches[batch["id"]] = batch
            self.counts["created"] += 1
            batch["_settings"] = dict(self.settings)  # what was injected when it was made
        return web.json_response(_public_batch(batch))

    def _with_batch(self, request: web.Request, act) -> web.Response:
        """`act(batch)` on the batch the path names, under the lock: 401 without a key the
        simulator knows, 404 for a batch it does not."""
        if (denied := self._authorized(request)) is not None:
            return denied
        with self._lock:
            batch = self.batches.get(request.match_info["id"])
            if batch is None:
                return self._error(404, "No such Batch object.", param="id")
            return act(batch)

    async def _retrieve(self, request: web.Request) -> web.Response:
        def retrieve(batch: dict[str, Any]) -> web.Response:
            self._step(batch)
            return web.json_response(_public_batch(batch))

        return self._with_batch(request, retrieve)

    async def _cancel(self, request: web.Request) -> web.Response:
        return self._with_batch(request, self._cancelled)

    def _cancelled(self, batch: dict[str, Any]) -> web.Response:
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return self._error(409, f"Cannot cancel a batch that is {batch['status']}.")
        batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
        return web.json_response(_public_batch(batch))

    # -- the batch's life -----------------------------------------------------------------

    def _step(self, batch: dict[str, Any]) -> None:
        """Advance one status (lock held): validating -> in_progress (or failed) ->
        finalizing (or expired) -> completed; cancelling -> cancelled."""
        now = int(time.time())
        status, cfg = batch["status"], batch["_settings"]
        if status == "validating":
            lines, problem = self._parse(batch, cfg)
            if problem is not None or cfg["batch_outcome"] == "failed":
                batch["status"], batch["failed_at"] = "failed", now
                batch["errors"] = {"object": "list", "data": [
                    {"code": "invalid_request", "message": problem or "injected failure",
                     "param": None, "line": None}]}
                return
            batch["_lines"] = lines
            batch["request_counts"]["total"] = len(lines)
            batch["status"], batch["in_progress_at"] = "in_progress", now
        elif status == "in_progress":
            if cfg["batch_outcome"] == "expired":
                self._finish(batch, cfg["batch_processed"], "batch_expired")
                batch["status"], batch["expired_at"] = "expired", now
                self.counts["expired"] += 1
            else:
                batch["status"], batch["finalizing_at"] = "finalizing", now
        elif status == "finalizing":
            self._finish(batch, len(batch["_lines"]), None)
            batch["status"], batch["completed_at"] = "completed", now
        elif status == "cancelling":
            self._finish(batch, cfg["batch_processed"] if batch.get("_lines") else 0,
                         "batch_cancelled")
            batch["status"], batch["cancelled_at"] = "cancelled", now
            self.counts["cancelled"] += 1

    def _parse(self, batch, cfg) -> tuple[list[dict], str | None]:
        data = self.files[batch["input_file_id"]]["data"]
        lines: list[dict] = []
        seen: set[str] = set()
        for number, raw in enumerate(data.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                return [], f"line {number}: not valid JSON"
            if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
                return [], f"line {number}: custom_id is required"
            if line["custom_id"] in seen:
                return [], f"line {number}: duplicate custom_id {line['custom_id']!r}"
            if line.get("method") != "POST" or line.get("url") != ENDPOINT:
                return [], f"line {number}: method must be POST and url {ENDPOINT}"
            if not isinstance(line.get("body"), dict):
                return [], f"line {number}: body must be an object"
            seen.add(line["custom_id"])
            lines.append(line)
        if not lines:
            return [], "the input file has no requests"
        if len(lines) > cfg["batch_max_requests"]:
            return [], (f"the input file has {len(lines)} requests, more than the maximum of "
                        f"{cfg['batch_max_requests']}")
        return lines, None

    def _finish(self, batch: dict[str, Any], processed: int, unprocessed_code: str | None):
        """Answer the first `processed` requests, write the output and error files; the rest
        (an expired or cancelled batch's) get `unprocessed_code` in the error file."""
        lines = batch.get("_lines") or []
        every = batch["_settings"]["batch_error_every"]
        out, err = [], []
        for index, line in enumerate(lines, 1):
            record = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line["custom_id"],
                      "response": None, "error": None}
            if index > processed:
                record["error"] = {"code": unprocessed_code, "message": (
                    "This request could not be executed before the completion window expired."
                    if unprocessed_code == "batch_expired" else
                    "This request was not executed because the batch was cancelled.")}
                err.append(record)
                continue
            self.counts["requests"] += 1
            if every and index % every == 0:
                record["response"] = {"status_code": 500, "request_id": f"req_{index}",
                                      "body": {"error": {
                                          "message": "The server had an error while processing "
                                                     "your request.",
                                          "type": "server_error", "param": None,
                                          "code": None}}}
                err.append(record)
                self.counts["errors"] += 1
                continue
            status, body = self._answer(line["body"])
            record["response"] = {"status_code": status, "request_id": f"req_{index}",
                                  "body": body}
            (out if status == 200 else err).append(record)
            self.counts["ok" if status == 200 else "errors"] += 1
        counts = batch["request_counts"]
        counts["completed"] = len(out)
        counts["failed"] = sum(1 for r in err if r["response"] is not None)
        for records, key in ((out, "output_file_id"), (err, "error_file_id")):
            if records:
                text = "".join(json.dumps(r) + "\n" for r in records).encode()
                batch[key] = self._store_locked(f"{batch['id']}_{key}.jsonl", text)

    def _store_locked(self, name: str, data: bytes) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = {"id": file_id, "filename": name, "purpose": "batch_output",
                               "bytes": len(data), "created_at": int(time.time()), "data": data}
        return file_id


def _public_file(file: dict[str, Any]) -> dict[str, Any]:
    return {"id": file["id"], "object": "file", "bytes": file["bytes"],
            "created_at": file["created_at"], "filename": file["filename"],
            "purpose": file["purpose"], "status": "processed", "status_details": None}


def _public_batch(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def chat_answer(body: dict[str, Any], answer, prompt_chars, default_max_tokens: int,
                models: list[str] | None) -> tuple[int, dict[str, Any]]:
    """(status, body) of one batched chat request, as /v1/chat/completions would answer it."""
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        return 400, {"error": {"message": "you must provide a model parameter",
                               "type": "invalid_request_error", "param": "model", "code": None}}
    if models is not None and model not in models:
        return 404, {"error": {"message": f"The model `{model}` does not exist or you do not "
                                          "have access to it.",
                               "type": "invalid_request_error", "param": None,
                               "code": "model_not_found"}}
    if not isinstance(messages, list) or not messages:
        return 400, {"error": {"message": "Missing required parameter: 'messages'.",
                               "type": "invalid_request_error", "param": "messages",
                               "code": "missing_required_parameter"}}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or default_max_tokens
    fmt = body.get("response_format")
    json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
    content, finish = answer(messages, json_mode, max_tokens)
    prompt_tokens = math.ceil(prompt_chars(messages) / 4)
    completion_tokens = math.ceil(len(content) / 4)
    return 200, {
        "id": f"chatcmpl-{uuid.uuid4().hex[:29]}", "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content,
                                             "refusal": None},
                     "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "service_tier": "batch",
    }
